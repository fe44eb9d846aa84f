package access_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

// Writes made at the same time share transactions, yet each gets the result it would have
// had alone: of ten identical requests exactly one is filed and the others are told it is
// pending, refused writes leave nothing behind, and the audit chain holds exactly the writes
// that succeeded, in a chain that verifies.
func TestConcurrentWritesEachGetTheirOwnResult(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		eng := env.Engine
		alice, oscar, bob := env.As(t, "alice"), env.As(t, "oscar"), env.As(t, "bob")
		// A grant for bob to review requests against, and one of oscar's to revoke.
		g, err := eng.Submit(oscar, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
		if err != nil || g.GrantID == 0 {
			t.Fatalf("oscar's grant: %+v, %v", g, err)
		}
		const same = 10
		var (
			wg                      sync.WaitGroup
			mu                      sync.Mutex
			filed, pending, refused int
			revoked, alreadyEnded   int
		)
		for range same {
			wg.Go(func() {
				_, err := eng.Submit(alice, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "same"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					filed++
				case jitgate.ErrorCode(err) == jitgate.ECONFLICT:
					pending++
				default:
					t.Errorf("duplicate request: %v", err)
				}
			})
		}
		for range 5 {
			wg.Go(func() {
				// No policy lets bob (sre) request anything: refused by the engine's own checks.
				_, err := eng.Submit(bob, jitgate.NewRequest{Resource: "app-db", Role: "admin", Duration: time.Hour, Reason: "no"})
				mu.Lock()
				defer mu.Unlock()
				if jitgate.ErrorCode(err) == jitgate.EFORBIDDEN {
					refused++
				} else {
					t.Errorf("bob's request: %v", err)
				}
			})
		}
		for range 3 {
			wg.Go(func() {
				_, err := eng.Revoke(oscar, g.GrantID, "done")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					revoked++
				case jitgate.ErrorCode(err) == jitgate.ECONFLICT:
					alreadyEnded++
				default:
					t.Errorf("revoke: %v", err)
				}
			})
		}
		wg.Wait()
		if filed != 1 || pending != same-1 || refused != 5 || revoked != 1 || alreadyEnded != 2 {
			t.Fatalf("filed %d, pending %d, refused %d, revoked %d, already ended %d", filed, pending, refused, revoked, alreadyEnded)
		}
		admin := env.As(t, "carol")
		evs, err := eng.AuditEvents(admin, jitgate.AuditFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, e := range evs {
			count[e.Action]++
		}
		// oscar's auto-approved request and alice's one; one revoke.
		if count[jitgate.ActionRequestCreated] != 2 || count[jitgate.ActionGrantRevoked] != 1 {
			t.Fatalf("audit actions: %v", count)
		}
		res, err := eng.VerifyAudit(admin)
		if err != nil || !res.OK {
			t.Fatalf("audit chain: %+v, %v", res, err)
		}
		if n := len(env.EventsOf(jitgate.EventRequestCreated)); n != 2 {
			t.Fatalf("%d request.created events published, want 2", n)
		}
	})
}

// In a shared transaction a write that fails after writing leaves nothing behind (its
// savepoint is rolled back) and does not undo the others; a write that fails with a store
// error there is run again alone. Nothing is stored twice.
func TestFailedWriteInAGroupLeavesNothing(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		ctx := context.Background()
		token := func(name string) *jitgate.Token {
			return &jitgate.Token{User: "alice", Hash: "hash-" + name, Description: name, CreatedBy: "test",
				CreatedAt: testenv.T0, ExpiresAt: testenv.T0.Add(time.Hour)}
		}
		var wg sync.WaitGroup
		errs := make([]error, 30)
		failed := make([]atomic.Bool, len(errs))
		for i := range errs {
			wg.Go(func() {
				errs[i] = access.Write(env.Engine, ctx, func(tx jitgate.Tx) error {
					if err := tx.InsertToken(token(fmt.Sprint(i))); err != nil {
						return err
					}
					switch {
					case i%3 == 1:
						return jitgate.Errorf(jitgate.EINVALID, "write %d refused after writing", i)
					case i%3 == 2 && !failed[i].Swap(true):
						return errors.New("a store error") // run again alone: that run succeeds
					}
					return nil
				})
			})
		}
		wg.Wait()
		var tokens []*jitgate.Token
		if err := env.Store.View(ctx, func(tx jitgate.Tx) (err error) { tokens, err = tx.ListTokens("alice"); return err }); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, tk := range tokens {
			if have[tk.Description] {
				t.Fatalf("token %s stored twice", tk.Description)
			}
			have[tk.Description] = true
		}
		for i, err := range errs {
			// i%3 == 2 failed once with a store error: run again alone in a shared
			// transaction (then it succeeds), or failed for good if it was alone already.
			refused := i%3 == 1 || (i%3 == 2 && err != nil && err.Error() == "store: a store error")
			if refused == (err == nil) || (i%3 == 1 && jitgate.ErrorCode(err) != jitgate.EINVALID) {
				t.Errorf("write %d: %v", i, err)
			}
			if have[fmt.Sprint(i)] == refused {
				t.Errorf("write %d: stored %v, failed %v", i, have[fmt.Sprint(i)], err)
			}
		}
	})
}

// A write that needs a row another transaction (another instance) holds leaves the shared
// transaction after a short wait and waits alone: the other writes go on meanwhile.
func TestWriteWaitingOnALockHoldsUpNoOther(t *testing.T) {
	env := testenv.New(t, testdb.Postgres(t))
	ctx := context.Background()
	r, err := env.Engine.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
	if err != nil || r.GrantID == 0 {
		t.Fatalf("oscar's grant: %+v, %v", r, err)
	}
	held, release, holderDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		holderDone <- env.Store.Tx(ctx, func(tx jitgate.Tx) error {
			if _, err := tx.GetGrant(r.GrantID, true); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	blocked := make(chan error, 1)
	go func() {
		blocked <- access.Write(env.Engine, ctx, func(tx jitgate.Tx) error { _, err := tx.GetGrant(r.GrantID, true); return err })
	}()
	time.Sleep(20 * time.Millisecond) // the blocked write first in the queue
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			err := access.Write(env.Engine, ctx, func(tx jitgate.Tx) error {
				return tx.InsertToken(&jitgate.Token{User: "alice", Hash: fmt.Sprint("h", i), Description: "x", CreatedBy: "t",
					CreatedAt: testenv.T0, ExpiresAt: testenv.T0.Add(time.Hour)})
			})
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	others := make(chan struct{})
	go func() { wg.Wait(); close(others) }()
	select {
	case <-others:
	case <-time.After(10 * time.Second):
		t.Fatal("the other writes waited for the row another transaction holds")
	}
	select {
	case err := <-blocked:
		t.Fatalf("the write on the held row finished while it was held: %v", err)
	default:
	}
	close(release)
	if err := <-holderDone; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("the write on the released row: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write on the released row never finished")
	}
}
