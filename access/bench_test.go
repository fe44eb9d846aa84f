package access_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

// BenchmarkCycle measures one submit + approve (activating the grant) + revoke cycle, every
// step a committed transaction with its audit events, on each store.
func BenchmarkCycle(b *testing.B) {
	for _, backend := range []func(testing.TB) testdb.Backend{testdb.SQLite, testdb.Postgres} {
		bk := backend(b)
		b.Run(bk.Name, func(b *testing.B) {
			env := testenv.New(b, bk)
			alice, bob := env.As(b, "alice"), env.As(b, "bob")
			nr := jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "bench"}
			b.ReportAllocs()
			for b.Loop() {
				r, err := env.Engine.Submit(alice, nr)
				if err != nil {
					b.Fatal(err)
				}
				if r, err = env.Engine.Review(bob, r.ID, jitgate.Approve, ""); err != nil || r.State != jitgate.RequestApproved {
					b.Fatal(r.State, err)
				}
				if _, err := env.Engine.Revoke(alice, r.GrantID, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCommit is the direct path BenchmarkCycle is measured against: one transaction that
// appends one audit event and commits, on the same store. A cycle makes three user-facing
// changes (submit, approve, revoke), so about three of these is its floor.
func BenchmarkCommit(b *testing.B) {
	for _, backend := range []func(testing.TB) testdb.Backend{testdb.SQLite, testdb.Postgres} {
		bk := backend(b)
		b.Run(bk.Name, func(b *testing.B) {
			env := testenv.New(b, bk)
			ctx := env.As(b, "alice")
			b.ReportAllocs()
			for b.Loop() {
				if err := env.Store.Tx(ctx, func(tx jitgate.Tx) error {
					return tx.AppendAudit(&jitgate.AuditEvent{Time: testenv.T0, Actor: "alice", Action: "bench"})
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
