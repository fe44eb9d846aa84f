package gateway_test

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

// gatedStore takes events only when open is closed.
type gatedStore struct{ open chan struct{} }

func (g gatedStore) RecordAudit(ctx context.Context, _ []*jitgate.AuditEvent) error {
	<-g.open
	return nil
}

// A full recorder holds the session: statements wait in the backlog, in order, and none is
// lost; once the recorder has room, Drain hands them over and the session goes on.
func TestBacklogHoldsWhileTheRecorderIsFull(t *testing.T) {
	store := gatedStore{open: make(chan struct{})}
	rec := gateway.NewRecorder(store, slog.New(slog.DiscardHandler), 2, 1, time.Millisecond)
	b := &gateway.Backlog{Rec: rec, Head: &jitgate.AuditEvent{Actor: "alice", Action: jitgate.ActionSessionStatements, SessionID: 1}}
	for i := int64(1); i <= 6; i++ {
		b.Record(jitgate.Statement{N: i, SQL: "SELECT 1"})
	}
	if !b.Held() {
		t.Fatal("six statements into a recorder with room for two (and one being written) did not hold the session")
	}
	if b.Drain() {
		t.Fatal("drained while the store takes nothing")
	}
	close(store.open)
	deadline := time.Now().Add(5 * time.Second)
	for !b.Drain() {
		if time.Now().After(deadline) {
			t.Fatal("backlog never drained")
		}
		time.Sleep(gateway.HeldRetry)
	}
	if b.Held() {
		t.Fatal("still held after draining")
	}
	b.Flush()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if recorded, lost, waits, _, _ := rec.Stats(); recorded != 6 || lost != 0 || waits < 1 {
		t.Fatalf("recorded %d, lost %d, waits %d", recorded, lost, waits)
	}
}

// LoopCount: a gateway's `loops` sets the number of event loops; zero means one per two
// CPUs, at least one, at most 8.
func TestLoopCount(t *testing.T) {
	if got, want := gateway.LoopCount(0), max(1, min(runtime.NumCPU()/2, 8)); got != want {
		t.Errorf("LoopCount(0) = %d, want %d", got, want)
	}
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 16: 8, 64: 8} {
		if got := gateway.DefaultLoops(cpus); got != want {
			t.Errorf("DefaultLoops(%d) = %d, want %d", cpus, got, want)
		}
	}
	if got := gateway.LoopCount(3); got != 3 {
		t.Errorf("LoopCount(3) = %d", got)
	}
}
