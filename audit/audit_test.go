package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/store"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// chain opens a store with five events.
func chain(t *testing.T, b testdb.Backend) *store.DB {
	t.Helper()
	s, err := store.Open(context.Background(), b.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := range 5 {
		if err := s.Tx(context.Background(), func(tx jitgate.Tx) error {
			return tx.AppendAudit(&jitgate.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Actor: "alice",
				Action: "request.created", RequestID: int64(i + 1), Details: map[string]string{"reason": "debug"}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func verify(t *testing.T, s *store.DB) *audit.Result {
	t.Helper()
	res, err := audit.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func exec(t *testing.T, s *store.DB, q string) {
	t.Helper()
	if _, err := s.SQL().Exec(q); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	cases := []struct {
		name     string
		tamper   string
		firstBad int64
		problem  string
	}{
		{"intact", "", 0, ""},
		{"edited detail", `UPDATE audit_events SET details = '{"reason":"routine"}' WHERE seq = 3`, 3, audit.ProblemEdited},
		{"edited actor", `UPDATE audit_events SET actor = 'mallory' WHERE seq = 2`, 2, audit.ProblemEdited},
		{"deleted row", `DELETE FROM audit_events WHERE seq = 2`, 2, audit.ProblemMissing},
		{"deleted tail", `DELETE FROM audit_events WHERE seq = 5`, 5, audit.ProblemTruncated},
		{"reordered", `UPDATE audit_events SET seq = seq + 100 WHERE seq IN (2, 3);
			UPDATE audit_events SET seq = 3 WHERE seq = 102; UPDATE audit_events SET seq = 2 WHERE seq = 103`, 2, audit.ProblemBadLink},
		{"rehashed edit", `UPDATE audit_events SET actor = 'mallory', hash = 'x' WHERE seq = 4`, 4, audit.ProblemEdited},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testdb.All(t, func(t *testing.T, b testdb.Backend) {
				s := chain(t, b)
				if c.tamper != "" {
					for _, q := range strings.Split(c.tamper, ";") {
						exec(t, s, q)
					}
				}
				res := verify(t, s)
				if res.OK != (c.problem == "") || res.FirstBad != c.firstBad || res.Problem != c.problem {
					t.Fatalf("got %+v, want first bad %d (%s)", res, c.firstBad, c.problem)
				}
				if c.problem == "" && res.Events != 5 {
					t.Fatalf("checked %d events", res.Events)
				}
			})
		})
	}
}

func TestExport(t *testing.T) {
	s := chain(t, testdb.SQLite(t))
	var buf bytes.Buffer
	last, err := audit.Export(context.Background(), s, 2, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if last != 5 || strings.Count(buf.String(), "\n") != 3 || !strings.Contains(buf.String(), `"seq":3`) {
		t.Fatalf("export: last %d\n%s", last, buf.String())
	}
}

// TestVerifyAcrossStatementForms: a session.statements row written before the store's compact
// statement form (with the statements as the API's JSON) still verifies after an upgrade, and
// an edited statement is caught in either form.
func TestVerifyAcrossStatementForms(t *testing.T) {
	sts := []jitgate.Statement{
		{N: 1, Start: t0.Add(time.Millisecond), DurationUS: 120, SQL: "SELECT 'it''s', 'ünï ✓'", Tag: "SELECT 1"},
		{N: 2, Start: t0.Add(2 * time.Millisecond), DurationUS: 7, SQL: "DELETE FROM t", SQLState: "42501", Protocol: "extended"},
		{N: 3, Start: t0.Add(3 * time.Millisecond), DurationUS: 5, SQL: "SELECT 1", Tag: "SELECT 1"},
	}
	oldForm := func(sts []jitgate.Statement) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // as the store wrote it
		if err := enc.Encode(sts); err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(strings.TrimSpace(b.String()), "'", "''")
	}
	edited := slices.Clone(sts)
	edited[2].SQL = "SELECT 2"
	for _, c := range []struct {
		name, tamper, problem string
	}{
		{"old form", `UPDATE audit_events SET statements = '` + oldForm(sts) + `' WHERE seq = 6`, ""},
		{"old form edited", `UPDATE audit_events SET statements = '` + oldForm(edited) + `' WHERE seq = 6`, audit.ProblemEdited},
		{"new form edited", `UPDATE audit_events SET statements = replace(statements, '"SELECT 1",', '"SELECT 2",') WHERE seq = 6`, audit.ProblemEdited},
	} {
		t.Run(c.name, func(t *testing.T) {
			testdb.All(t, func(t *testing.T, b testdb.Backend) {
				s := chain(t, b)
				if err := s.Tx(context.Background(), func(tx jitgate.Tx) error {
					return tx.AppendAudit(&jitgate.AuditEvent{Time: t0.Add(time.Minute), Actor: "alice", Action: jitgate.ActionSessionStatements,
						GrantID: 1, SessionID: 2, Details: map[string]string{"count": "3"}, Statements: sts})
				}); err != nil {
					t.Fatal(err)
				}
				var before string
				if err := s.SQL().QueryRow(`SELECT statements FROM audit_events WHERE seq = 6`).Scan(&before); err != nil {
					t.Fatal(err)
				}
				exec(t, s, c.tamper)
				var after string
				if err := s.SQL().QueryRow(`SELECT statements FROM audit_events WHERE seq = 6`).Scan(&after); err != nil || after == before {
					t.Fatalf("the row was not rewritten (%v): %s", err, after)
				}
				res := verify(t, s)
				if c.problem == "" && (!res.OK || res.Events != 6) {
					t.Fatalf("got %+v, want all 6 events to verify (row: %s)", res, after)
				}
				if c.problem != "" && (res.OK || res.FirstBad != 6 || res.Problem != c.problem) {
					t.Fatalf("got %+v, want event 6 %s", res, c.problem)
				}
			})
		})
	}
}

// VerifyFrom checks only what came after a verified mark, and still catches a new event that
// was edited, a broken link to the mark, and a log cut below the mark.
func TestVerifyFrom(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		ctx := context.Background()
		s := chain(t, b)
		full := verify(t, s)
		mark := full.Last()
		if !full.OK || mark.Seq != 5 || mark.Hash != full.HeadHash {
			t.Fatalf("full: %+v, mark %+v", full, mark)
		}
		res, err := audit.VerifyFrom(ctx, s, mark)
		if err != nil || !res.OK || res.Events != 0 || res.Last() != mark {
			t.Fatalf("nothing new: %+v, %v", res, err)
		}
		for i := range 3 {
			if err := s.Tx(ctx, func(tx jitgate.Tx) error {
				return tx.AppendAudit(&jitgate.AuditEvent{Time: t0, Actor: "bob", Action: "request.created", RequestID: int64(10 + i)})
			}); err != nil {
				t.Fatal(err)
			}
		}
		res, err = audit.VerifyFrom(ctx, s, mark)
		if err != nil || !res.OK || res.Events != 3 || res.Last().Seq != 8 {
			t.Fatalf("three new: %+v, %v", res, err)
		}
		exec(t, s, `UPDATE audit_events SET actor = 'mallory' WHERE seq = 7`)
		if res, _ := audit.VerifyFrom(ctx, s, mark); res.OK || res.FirstBad != 7 || res.Problem != audit.ProblemEdited {
			t.Fatalf("edited new event: %+v", res)
		}
		// A mark whose hash is not the stored event's: the next event does not link to it.
		if res, _ := audit.VerifyFrom(ctx, s, audit.Mark{Seq: 5, Hash: "forged"}); res.OK || res.Problem != audit.ProblemBadLink {
			t.Fatalf("wrong mark: %+v", res)
		}
		exec(t, s, `DELETE FROM audit_events WHERE seq > 3`)
		exec(t, s, `UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3)`)
		if res, _ := audit.VerifyFrom(ctx, s, mark); res.OK || res.Problem != audit.ProblemTruncated {
			t.Fatalf("cut below the mark: %+v", res)
		}
	})
}
