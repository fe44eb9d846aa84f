package access_test

import (
	"fmt"
	"strconv"
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

// BenchmarkRecordStatements measures what the gateway's recorder costs the store: one
// RecordAudit of a typical batch, one session.statements event per session, reported per
// statement. Two shapes: 8x50 is 8 sessions with 50 pgbench-like statements each; 1x1000 is
// what one busy session leaves in a flush interval (pgbench -S -c1 through the gateway: about
// 10,000 statements a second, flushed every 100 ms). Its direct path is BenchmarkCommit: one
// transaction appending one plain event.
func BenchmarkRecordStatements(b *testing.B) {
	for _, backend := range []func(testing.TB) testdb.Backend{testdb.SQLite, testdb.Postgres} {
		bk := backend(b)
		for _, shape := range []struct{ sessions, each int }{{8, 50}, {1, 1000}} {
			b.Run(fmt.Sprintf("%s/%dx%d", bk.Name, shape.sessions, shape.each), func(b *testing.B) {
				env := testenv.New(b, bk)
				ctx := env.As(b, "alice")
				// The same batch each time: appending it rewrites only its sequence and hashes.
				events := make([]*jitgate.AuditEvent, shape.sessions)
				n := int64(0)
				for s := range events {
					ev := &jitgate.AuditEvent{Time: testenv.T0, Actor: "alice", Action: jitgate.ActionSessionStatements,
						GrantID: 1, SessionID: int64(s + 1), Details: map[string]string{"count": strconv.Itoa(shape.each)}}
					for range shape.each {
						n++
						ev.Statements = append(ev.Statements, jitgate.Statement{N: n, Start: testenv.T0.Add(time.Duration(n*97) * time.Microsecond),
							DurationUS: 41 + n%13, SQL: fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 1+n*7919%1000000), Tag: "SELECT 1"})
					}
					events[s] = ev
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := env.Engine.GatewayService().RecordAudit(ctx, events); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*shape.sessions*shape.each), "ns/statement")
			})
		}
	}
}
