package access_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

// A page view's check reads only the events written since the last one, and still reports a
// chain broken after the point it verified.
func TestAuditCheckIsIncremental(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	carol := env.As(t, "carol")
	for _, u := range []string{"alice", "oscar"} {
		must(env.Engine.Submit(env.As(t, u), read(time.Hour)))(t)
	}
	check := func() *audit.Result {
		t.Helper()
		res, pending, err := env.Engine.AuditCheck(carol)
		if err != nil || pending {
			t.Fatalf("check: %v, pending %v", err, pending)
		}
		return res
	}
	first := check()
	if !first.OK || first.Events != first.HeadSeq || first.Events == 0 {
		t.Fatalf("first check: %+v", first)
	}
	if again := check(); !again.OK || again.Events != 0 {
		t.Fatalf("nothing new: %+v", again)
	}
	must(env.Engine.Submit(env.As(t, "bob"), read(time.Hour)))(t)
	next := check()
	if !next.OK || next.Events == 0 || next.Events != next.HeadSeq-first.HeadSeq {
		t.Fatalf("after one more request: %+v (first up to %d)", next, first.HeadSeq)
	}
	must(env.Engine.Submit(env.As(t, "alice"), jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "x"}))(t)
	if _, err := env.Store.SQL().Exec(`UPDATE audit_events SET actor = 'mallory' WHERE seq = (SELECT MAX(seq) FROM audit_events)`); err != nil {
		t.Fatal(err)
	}
	if bad := check(); bad.OK || bad.Problem != audit.ProblemEdited {
		t.Fatalf("an edited new event: %+v", bad)
	}
	if _, _, err := env.Engine.AuditCheck(t.Context()); err == nil {
		t.Fatal("a check without a caller")
	}
}
