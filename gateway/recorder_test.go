package gateway_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

// flakyStore fails RecordAudit while down is set.
type flakyStore struct {
	down   atomic.Bool
	mu     sync.Mutex
	events []*jitgate.AuditEvent
}

func (f *flakyStore) RecordAudit(_ context.Context, evs []*jitgate.AuditEvent) error {
	if f.down.Load() {
		return errors.New("store down")
	}
	f.mu.Lock()
	for _, e := range evs {
		// The recorder reuses the statements' array once RecordAudit returns.
		c := *e
		c.Statements = slices.Clone(e.Statements)
		f.events = append(f.events, &c)
	}
	f.mu.Unlock()
	return nil
}

func (f *flakyStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

// While the store is down, sessions wait once the queue is full (back pressure); nothing is
// dropped, and everything is written once the store is back.
func TestRecorderBackPressure(t *testing.T) {
	st := &flakyStore{}
	st.down.Store(true)
	rec := gateway.NewRecorder(st, slog.New(slog.DiscardHandler), 4, 2, time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			rec.Record(&jitgate.AuditEvent{Action: jitgate.ActionSessionStatements, SessionID: int64(i)},
				jitgate.Statement{N: 1, SQL: "SELECT 1"})
		}
	}()
	select {
	case <-done:
		t.Fatal("20 statements queued into a queue of 4 while the store was down")
	case <-time.After(200 * time.Millisecond):
	}
	if _, _, waits, _, _ := rec.Stats(); waits == 0 {
		t.Fatal("no back-pressure wait counted")
	}
	st.down.Store(false)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("sessions still blocked after the store came back")
	}
	rec.Close()
	recorded, lost, _, _, _ := rec.Stats()
	if recorded != 20 || lost != 0 || st.count() != 20 {
		t.Fatalf("recorded %d, lost %d, stored %d", recorded, lost, st.count())
	}
}

// A batch holds one session.statements event per session, with that session's statements in
// order, whatever the interleaving.
func TestRecorderMergesSessions(t *testing.T) {
	st := &flakyStore{}
	rec := gateway.NewRecorder(st, slog.New(slog.DiscardHandler), 100, 100, time.Hour)
	heads := []*jitgate.AuditEvent{
		{Action: jitgate.ActionSessionStatements, SessionID: 1},
		{Action: jitgate.ActionSessionStatements, SessionID: 2},
	}
	for i := range 6 {
		rec.Record(heads[i%2], jitgate.Statement{N: int64(1 + i/2), SQL: "SELECT " + strconv.Itoa(i)})
	}
	rec.Close()
	if recorded, lost, _, batches, _ := rec.Stats(); recorded != 6 || lost != 0 || batches != 1 {
		t.Fatalf("recorded %d, lost %d, batches %d", recorded, lost, batches)
	}
	if len(st.events) != 2 {
		t.Fatalf("%d events, want one per session", len(st.events))
	}
	for k, e := range st.events {
		if e.SessionID != int64(k+1) || len(e.Statements) != 3 || e.Details["count"] != "3" {
			t.Fatalf("event %d: %+v", k, e)
		}
		for j, s := range e.Statements {
			if s.N != int64(j+1) || s.SQL != "SELECT "+strconv.Itoa(2*j+k) {
				t.Fatalf("event %d statement %d: %+v", k, j, s)
			}
		}
	}
}

// A statement is written one flush interval after it is recorded, without a Sync; a recorder
// with nothing to write does not wake (it used to tick every interval, idle or not).
func TestRecorderFlushesOnTimeAndSleepsWhenIdle(t *testing.T) {
	st := &flakyStore{}
	rec := gateway.NewRecorder(st, slog.New(slog.DiscardHandler), 100, 100, 5*time.Millisecond)
	defer rec.Close()
	idle := func(what string) int64 {
		t.Helper()
		before := gateway.RecorderWakes(rec)
		time.Sleep(50 * time.Millisecond) // ten intervals
		if got := gateway.RecorderWakes(rec); got != before {
			t.Fatalf("%s: the recorder woke %d times with nothing to write", what, got-before)
		}
		return before
	}
	if woke := idle("before any statement"); woke != 0 {
		t.Fatalf("the recorder woke %d times before any statement", woke)
	}
	for round := range 2 {
		for i := range 3 {
			rec.Record(&jitgate.AuditEvent{Action: jitgate.ActionSessionStatements, SessionID: 1}, jitgate.Statement{N: int64(3*round + i + 1), SQL: "SELECT 1"})
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if recorded, _, _, _, _ := rec.Stats(); recorded == int64(3*(round+1)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: statements not written 5s after they were recorded", round)
			}
		}
		idle("after a flush")
	}
}
