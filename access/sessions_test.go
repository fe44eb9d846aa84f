package access_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
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
