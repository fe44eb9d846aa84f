package postgres

import (
	"fmt"
	"testing"
)

// TestPendingQueue: statements come off in order, and a queue that never empties (a client
// that always has statements in flight) does not grow its array without end.
func TestPendingQueue(t *testing.T) {
	s := &session{}
	next, want := 0, 0
	pop := func() {
		t.Helper()
		if got := s.pop(); got.sql != fmt.Sprint(want) {
			t.Fatalf("popped %q, want %d", got.sql, want)
		}
		want++
	}
	for round := range 10000 {
		for range 1 + round%3 {
			s.push(fmt.Sprint(next), false)
			next++
		}
		for len(s.pending)-s.phead > 3 {
			pop() // three stay in flight
		}
	}
	if c := cap(s.pending); c > 64 {
		t.Errorf("the queue's array grew to %d for at most 6 statements in flight", c)
	}
	for s.phead < len(s.pending) {
		pop()
	}
	if want != next {
		t.Fatalf("popped %d of %d", want, next)
	}
}
