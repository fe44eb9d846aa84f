package audit_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/signing"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/store"
)

func keys(t *testing.T) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	privPEM, pubPEM, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := audit.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// rehashTail rewrites event seq's actor and recomputes its hash and the head, as someone with
// write access to the store could: the chain alone still verifies.
func rehashTail(t *testing.T, s *store.DB, seq int64) {
	t.Helper()
	var evs []*jitgate.AuditEvent
	if err := s.View(context.Background(), func(tx jitgate.Tx) (err error) {
		evs, err = tx.ListAudit(jitgate.AuditFilter{AfterSeq: seq - 1, Limit: 1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	ev.Actor = "mallory"
	ev.Hash = ev.ComputeHash()
	// (Literals rather than placeholders: the same text runs on SQLite and PostgreSQL.)
	exec(t, s, fmt.Sprintf(`UPDATE audit_events SET actor = 'mallory', hash = '%s' WHERE seq = %d`, ev.Hash, seq))
	exec(t, s, fmt.Sprintf(`UPDATE audit_head SET hash = '%s' WHERE id = 1`, ev.Hash))
}

// cutTail deletes the events after seq and moves the head back to seq.
func cutTail(t *testing.T, s *store.DB, seq int64) {
	t.Helper()
	var hash string
	if err := s.SQL().QueryRow(fmt.Sprintf(`SELECT hash FROM audit_events WHERE seq = %d`, seq)).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	exec(t, s, fmt.Sprintf(`DELETE FROM audit_events WHERE seq > %d`, seq))
	exec(t, s, fmt.Sprintf(`UPDATE audit_head SET seq = %d, hash = '%s' WHERE id = 1`, seq, hash))
}

// Both attacks on the end of the log pass the chain alone and are caught with a checkpoint.
func TestCheckpointCatchesTailAttacks(t *testing.T) {
	for _, c := range []struct {
		name     string
		tamper   func(*testing.T, *store.DB)
		firstBad int64
		problem  string
		msg      string
	}{
		{"intact", func(*testing.T, *store.DB) {}, 0, "", ""},
		{"tail cut, head moved back", func(t *testing.T, s *store.DB) { cutTail(t, s, 3) }, 4, audit.ProblemCut, "events 4 to 5 were deleted"},
		{"last event rewritten, hashes recomputed", func(t *testing.T, s *store.DB) { rehashTail(t, s, 5) }, 5, audit.ProblemRewritten, "event 5's hash is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			testdb.All(t, func(t *testing.T, b testdb.Backend) {
				s := chain(t, b)
				priv, pub := keys(t)
				path := filepath.Join(t.TempDir(), "checkpoints.jsonl")
				cpr := &audit.Checkpointer{Store: s, Key: priv, Witnesses: []audit.Witness{&audit.FileWitness{Path: path}}}
				cp, err := cpr.Checkpoint(context.Background())
				if err != nil || cp == nil || cp.Seq != 5 {
					t.Fatalf("checkpoint: %+v %v", cp, err)
				}
				// Events written after the checkpoint do not count against it.
				if err := s.Tx(context.Background(), func(tx jitgate.Tx) error {
					return tx.AppendAudit(&jitgate.AuditEvent{Time: t0.Add(time.Minute), Actor: "bob", Action: "request.created"})
				}); err != nil {
					t.Fatal(err)
				}
				if c.problem != "" {
					cutTail(t, s, 5) // the event after the checkpoint goes first, unseen
				}
				c.tamper(t, s)
				if plain := verify(t, s); !plain.OK {
					t.Fatalf("the chain alone should not see this attack: %+v", plain)
				}
				got, _, err := audit.ReadCheckpointFile(path, pub)
				if err != nil || got == nil {
					t.Fatalf("read checkpoints: %v %v", got, err)
				}
				res, err := audit.VerifyCheckpoint(context.Background(), s, got, pub)
				if err != nil {
					t.Fatal(err)
				}
				if res.OK != (c.problem == "") || res.Problem != c.problem || res.FirstBad != c.firstBad || !strings.Contains(res.Message, c.msg) {
					t.Fatalf("got %+v, want first bad %d (%s)", res, c.firstBad, c.problem)
				}
				if res.Checkpoint == nil || res.Checkpoint.Seq != 5 {
					t.Fatalf("result names no checkpoint: %+v", res)
				}
			})
		})
	}
}

// A checkpoint edited to cover less, or signed by another key, is not trusted; the file reader
// skips such lines and a torn last line.
func TestCheckpointSignature(t *testing.T) {
	s := chain(t, testdb.SQLite(t))
	priv, pub := keys(t)
	other, _ := keys(t)
	path := filepath.Join(t.TempDir(), "cp.jsonl")
	w := &audit.FileWitness{Path: path}
	clk := clocktest.New(t0)
	cp, err := (&audit.Checkpointer{Store: s, Key: priv, Witnesses: []audit.Witness{w}, Clock: clk}).Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	forged := *cp
	forged.Seq = 3 // someone who cut the log wants the checkpoint to agree
	if _, err := audit.VerifyCheckpoint(context.Background(), s, &forged, pub); err == nil || !strings.Contains(err.Error(), "invalid signature") {
		t.Fatalf("forged checkpoint: %v", err)
	}
	foreign := *cp
	foreign.Seq = 9
	foreign.Sign(other)
	w.Witness(context.Background(), &forged)
	w.Witness(context.Background(), &foreign)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"installation":"x","seq":`) // torn by a crash
	f.Close()
	got, skipped, err := audit.ReadCheckpointFile(path, pub)
	if err != nil || got == nil || got.Seq != 5 || skipped != 3 {
		t.Fatalf("read: %+v, skipped %d, %v", got, skipped, err)
	}
}

// The webhook witness posts each checkpoint signed; the checkpointer skips a head it already
// witnessed and retries what a witness refused.
func TestWebhookWitness(t *testing.T) {
	s := chain(t, testdb.SQLite(t))
	priv, pub := keys(t)
	secret := []byte("witness-secret")
	var (
		mu   sync.Mutex
		got  []audit.Checkpoint
		fail = true
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !signing.Verify(secret, r.Header.Get(signing.HeaderTimestamp), r.Header.Get(signing.HeaderSignature), body) {
			http.Error(w, "bad signature", 401)
			return
		}
		if fail {
			fail = false
			http.Error(w, "busy", 503)
			return
		}
		var cp audit.Checkpoint
		json.Unmarshal(body, &cp)
		got = append(got, cp)
	}))
	defer srv.Close()
	cpr := &audit.Checkpointer{Store: s, Key: priv, Witnesses: []audit.Witness{&audit.WebhookWitness{URL: srv.URL, Secret: secret}}}
	ctx := context.Background()
	if _, err := cpr.Checkpoint(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("first checkpoint: %v, want the witness's refusal", err)
	}
	for range 2 {
		if _, err := cpr.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Seq != 5 || got[0].CheckSignature(pub) != nil {
		t.Fatalf("witnessed %+v", got)
	}
}
