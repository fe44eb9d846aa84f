package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
)

// TestMerge: one event per session in the order of their first statements, each carrying its
// statements in order, also when the array is reused for the next batch.
func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	heads := []*jitgate.AuditEvent{{SessionID: 1, Actor: "a"}, {SessionID: 2, Actor: "b"}, {SessionID: 3, Actor: "c"}}
	var into []jitgate.Statement
	for round, pattern := range [][]int{{1, 0, 1, 2, 0, 0, 1}, {2, 2}, {0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 2}} {
		var batch []pending
		for i, h := range pattern {
			batch = append(batch, pending{head: heads[h], st: jitgate.Statement{N: int64(i), Start: t0.Add(time.Duration(i) * time.Second), SQL: fmt.Sprint(round, i)}})
		}
		var events []*jitgate.AuditEvent
		events, into = merge(batch, into)
		var order []int
		seen := map[int]bool{}
		for _, h := range pattern {
			if !seen[h] {
				seen[h] = true
				order = append(order, h)
			}
		}
		if len(events) != len(order) {
			t.Fatalf("round %d: %d events for %d sessions", round, len(events), len(order))
		}
		for k, h := range order {
			ev := events[k]
			var want []jitgate.Statement
			for _, p := range batch {
				if p.head == heads[h] {
					want = append(want, p.st)
				}
			}
			if ev.SessionID != heads[h].SessionID || ev.Actor != heads[h].Actor || !ev.Time.Equal(want[0].Start) ||
				ev.Details["count"] != fmt.Sprint(len(want)) || fmt.Sprint(ev.Statements) != fmt.Sprint(want) {
				t.Fatalf("round %d, session %d: got %+v, want statements %+v", round, h+1, ev, want)
			}
		}
		if heads[0].Statements != nil || !heads[0].Time.IsZero() {
			t.Fatal("merge changed a session's head")
		}
	}
}
