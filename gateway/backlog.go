package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
)

// Backlog is where a session's finished statements wait when the recorder has no room. A
// relay must not wait for the recorder (an event loop serves other sessions, and a kill must
// get through): the statement waits here instead, and the relay holds the session (reads
// nothing more from either side) while Held, so no further statement runs unrecorded.
// Set Rec and Head before the first Record; the zero Backlog is otherwise ready.
type Backlog struct {
	// Rec is the gateway's recorder; Head the head of the session's statement events (see
	// Recorder.Record).
	Rec  *Recorder
	Head *jitgate.AuditEvent

	held atomic.Bool
	mu   sync.Mutex
	sts  []jitgate.Statement // oldest first
}

// Record hands st to the recorder, or keeps it when the recorder is full (or others wait
// before it), holding the session.
func (b *Backlog) Record(st jitgate.Statement) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sts) == 0 && b.Rec.TryRecord(b.Head, st) {
		return
	}
	if len(b.sts) == 0 {
		b.Rec.Waited()
		b.held.Store(true)
	}
	b.sts = append(b.sts, st)
}

// Held reports whether statements wait: the relay must read neither side meanwhile.
func (b *Backlog) Held() bool { return b.held.Load() }

// Drain hands the recorder what it has room for; true once nothing waits (and the session is
// no longer held).
func (b *Backlog) Drain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for n < len(b.sts) && b.Rec.TryRecord(b.Head, b.sts[n]) {
		n++
	}
	b.sts = b.sts[:copy(b.sts, b.sts[n:])]
	if len(b.sts) > 0 {
		return false
	}
	b.sts = nil
	b.held.Store(false)
	return true
}

// Wait holds a goroutine relay while statements wait, offering them to the recorder every
// HeldRetry; it gives up once stop reports true (the session was killed).
func (b *Backlog) Wait(stop func() bool) {
	for b.Held() && !b.Drain() && !stop() {
		time.Sleep(HeldRetry)
	}
}

// Flush records what waits, waiting for room: a session calls it once its relay is over,
// before recording its end.
func (b *Backlog) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, st := range b.sts {
		b.Rec.Record(b.Head, st)
	}
	b.sts = nil
	b.held.Store(false)
}
