package access_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

// Sessions that end together (a grant's end cuts them all) are each recorded, with their
// counts and one session.ended event each, though they share transactions.
func TestConcurrentSessionEnds(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		gs := env.Engine.GatewayService()
		ctx := context.Background()
		const n = 300 // more than one batch
		r, err := env.Engine.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
		if err != nil || r.GrantID == 0 {
			t.Fatalf("auto-approved request: %+v, %v", r, err)
		}
		sessions := make([]*jitgate.Session, n)
		for i := range sessions {
			s := &jitgate.Session{GrantID: r.GrantID, User: "oscar", Resource: "app-db", Role: "read", ClientAddr: "127.0.0.1:1"}
			if err := gs.StartSession(ctx, s); err != nil {
				t.Fatal(err)
			}
			sessions[i] = s
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, s := range sessions {
			wg.Go(func() {
				s.EndReason, s.Statements, s.BytesIn = "grant 1 expired", int64(i), int64(10*i)
				errs[i] = gs.EndSession(ctx, s)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
		}
		admin := env.As(t, "carol")
		if live, err := env.Engine.ListSessions(admin, jitgate.SessionFilter{Live: true}); err != nil || len(live) != 0 {
			t.Fatalf("%d sessions still live (%v)", len(live), err)
		}
		ended, err := env.Engine.ListSessions(admin, jitgate.SessionFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ended {
			i := s.ID - sessions[0].ID
			if s.EndReason != "grant 1 expired" || s.Statements != i || s.BytesIn != 10*i || s.EndedAt.IsZero() {
				t.Fatalf("session %d recorded as %+v", s.ID, s)
			}
		}
		evs, err := env.Engine.AuditEvents(admin, jitgate.AuditFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		count := map[int64]int{}
		for _, e := range evs {
			if e.Action == jitgate.ActionSessionEnded {
				count[e.SessionID]++
			}
		}
		if len(count) != n {
			t.Fatalf("%d session.ended events for %d sessions", len(count), n)
		}
		for id, c := range count {
			if c != 1 {
				t.Fatalf("session %d: %d session.ended events", id, c)
			}
		}
	})
}

// proof is what a MySQL client sends for caching_sha2_password, made from secret:
// SHA256(secret) XOR SHA256(SHA256(SHA256(secret)) + nonce).
func proof(secret string, nonce []byte) []byte {
	h1 := sha256.Sum256([]byte(secret))
	h2 := sha256.Sum256(h1[:])
	x := sha256.Sum256(append(h2[:], nonce...))
	for i := range x {
		x[i] ^= h1[i]
	}
	return x[:]
}

// matcher checks a proof against a stored verifier as the MySQL gateway does.
func matcher(nonce, p []byte) func([]byte) bool {
	return func(v []byte) bool {
		x := sha256.Sum256(append(append([]byte(nil), v...), nonce...))
		for i := range x {
			x[i] ^= p[i]
		}
		h := sha256.Sum256(x[:])
		return bytes.Equal(h[:], v)
	}
}

// A session credential is stored double-hashed, so a client can prove it holds one without
// sending it (AuthenticateProof), and reading the store is not enough to make such a proof.
// Credentials stored single-hashed (before store migration 11) still log in with the secret.
func TestCredentialProof(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		gs := env.Engine.GatewayService()
		ctx := context.Background()
		r, err := env.Engine.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
		if err != nil || r.GrantID == 0 {
			t.Fatalf("auto-approved request: %+v, %v", r, err)
		}
		in, err := env.Engine.IssueLogin(env.As(t, "oscar"), r.GrantID, jitgate.KindPostgres)
		if err != nil || in.Via != access.ViaGateway {
			t.Fatalf("IssueLogin = %+v, %v", in, err)
		}
		nonce := []byte("0123456789abcdefghij")
		g, err := gs.AuthenticateProof(ctx, "oscar", "app-db", matcher(nonce, proof(in.Password, nonce)))
		if err != nil || g.ID != r.GrantID {
			t.Fatalf("proof: %+v, %v", g, err)
		}
		if g, err := gs.AuthenticateSession(ctx, "oscar", "app-db", in.Password); err != nil || g.ID != r.GrantID {
			t.Fatalf("secret: %+v, %v", g, err)
		}
		unknown := func(what string, err error) {
			t.Helper()
			var af *jitgate.AuthFailure
			if !errors.As(err, &af) || af.Reason != jitgate.AuthUnknownCredential {
				t.Fatalf("%s: %v", what, err)
			}
		}
		// A wrong secret, another user, another resource.
		_, err = gs.AuthenticateProof(ctx, "oscar", "app-db", matcher(nonce, proof(in.Password+"x", nonce)))
		unknown("wrong secret", err)
		_, err = gs.AuthenticateProof(ctx, "carol", "app-db", matcher(nonce, proof(in.Password, nonce)))
		unknown("other user", err)
		_, err = gs.AuthenticateProof(ctx, "oscar", "other-db", matcher(nonce, proof(in.Password, nonce)))
		unknown("other resource", err)
		// What the store keeps is neither the secret nor what a proof is made from.
		var stored string
		if err := env.Store.View(ctx, func(tx jitgate.Tx) error {
			cs, err := tx.ActiveCredentials("oscar", "app-db")
			if len(cs) == 1 {
				stored = cs[0].Hash
			}
			return err
		}); err != nil || stored != jitgate.HashCredential(in.Password) {
			t.Fatalf("stored %q, %v", stored, err)
		}
		raw, _ := hex.DecodeString(stored)
		forged := proof(string(raw), nonce) // as if the stored hash were the secret
		h2 := sha256.Sum256(raw)            // or SHA256(secret)
		x := sha256.Sum256(append(h2[:], nonce...))
		for i := range x {
			x[i] ^= raw[i]
		}
		for i, p := range [][]byte{forged, x[:]} {
			_, err = gs.AuthenticateProof(ctx, "oscar", "app-db", matcher(nonce, p))
			unknown(fmt.Sprintf("forged from the store %d", i), err)
		}
		if _, err := gs.AuthenticateSession(ctx, "oscar", "app-db", stored); err == nil {
			t.Fatal("the stored hash logged in as the secret")
		}
		// A credential stored the old way logs in with its secret, not with a proof.
		legacy := jitgate.CredentialPrefix + "legacy-credential-minted-before-double-hashing"
		if err := env.Store.Tx(ctx, func(tx jitgate.Tx) error {
			return tx.InsertCredential(&jitgate.SessionCredential{GrantID: r.GrantID, User: "oscar", Hash: jitgate.HashToken(legacy),
				CreatedAt: env.Clock.Now(), ExpiresAt: g.EndsAt})
		}); err != nil {
			t.Fatal(err)
		}
		if g, err := gs.AuthenticateSession(ctx, "oscar", "app-db", legacy); err != nil || g.ID != r.GrantID {
			t.Fatalf("legacy secret: %+v, %v", g, err)
		}
		_, err = gs.AuthenticateProof(ctx, "oscar", "app-db", matcher(nonce, proof(legacy, nonce)))
		unknown("legacy proof", err)
		// An ended grant's credential: a proof finds nothing (the caller then asks for the
		// secret), the secret says why.
		if _, err := env.Engine.Revoke(env.As(t, "carol"), r.GrantID, "done"); err != nil {
			t.Fatal(err)
		}
		_, err = gs.AuthenticateProof(ctx, "oscar", "app-db", matcher(nonce, proof(in.Password, nonce)))
		unknown("revoked", err)
		if _, err := gs.AuthenticateSession(ctx, "oscar", "app-db", in.Password); !strings.Contains(fmt.Sprint(err), "revoked") {
			t.Fatalf("revoked secret: %v", err)
		}
	})
}
