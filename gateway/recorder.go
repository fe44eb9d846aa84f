package gateway

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
)

// Recorder writes statement audit events off the relay path: sessions append events to a
// bounded buffer (a mutex and a slice, so recording a statement wakes no goroutine), and one
// goroutine takes the buffer one flush interval after the first statement it holds came in
// (a timer that statement sets, so an idle recorder does not wake), or as soon as it holds a
// batch, merges each session's statements into one session.statements event, and appends
// those to the audit chain (one transaction per batch). The chain covers every statement; a
// batch costs one row per session rather than one per statement.
//
// The flush interval trades CPU for how soon statements reach the store. Each transaction
// rewrites the pages every batch touches (the tables' and indexes' last pages, the chain's
// head), which on SQLite cost as much as the statements themselves: under pgbench -S at 12,000
// statements a second, recording cost the gateway about 5 µs of CPU per statement when
// flushing every 20ms, about 2 µs every 100ms. A session's statements are always written
// before its end is (Sync), so the interval only bounds what a crash of the server can leave
// unrecorded.
//
// A flush is a burst of CPU in the gateway's process (on SQLite about 0.35 ms in a benchmark
// for the 1,000 statements that 10,000 queries a second leave, more in the server). Where
// the relay shares its CPUs with clients and the database, a query whose client, backend or
// loop thread is woken onto the CPU the flush runs on waits behind it: on 2 cores under
// pgbench -S -c1 that puts the 99.9th percentile at about 0.7 ms against PgBouncer's 0.5,
// adds under 1 µs to the mean latency and leaves the median alone. Running the flush at a
// lower priority (nice, SCHED_BATCH), in smaller or rarer batches, on a thread of its own or
// with a short scheduler slice did not change that; SCHED_IDLE helped a little but would
// starve the flush, and with it every session, on a busy host (bench/README.md). Only a
// cheaper write shortens it.
//
// When the store falls behind or fails, the buffer fills and sessions wait (back pressure)
// rather than run statements that are not recorded; the relay holds such a session rather
// than its thread (TryRecord), so the session still ends on time. Events that cannot be
// written by the time the recorder closes are counted as lost, logged, exported as a metric
// and, if the store takes it, recorded as one session.statements_lost audit event.
type Recorder struct {
	eng   AuditWriter
	log   *slog.Logger
	max   int
	batch int
	every time.Duration

	mu      sync.Mutex
	notFull *sync.Cond
	buf     []pending
	// spare is the buffer the last flush emptied: the two take turns, so recording a
	// statement does not grow a fresh slice after every flush.
	spare []pending
	// queued counts statements ever buffered and settled those written or counted lost; Sync
	// waits on written for settled to catch up.
	queued, settled int64
	written         *sync.Cond
	closed          bool
	kick            chan struct{}
	// due fires one flush interval after the first statement the buffer took since the
	// last flush (record sets it).
	due *time.Timer
	// merged is the array the last batch's events carried their statements in, reused by the
	// next batch (only the recorder's goroutine touches it).
	merged []jitgate.Statement
	done   chan struct{}

	recorded, lost, blocked, batches atomic.Int64
	// wakes counts the recorder goroutine's wake-ups (tests).
	wakes atomic.Int64
}

// AuditWriter appends events to the audit chain (the engine's GatewayService does).
type AuditWriter interface {
	// RecordAudit appends events in one transaction. It must not keep the events' Statements
	// once it returns: the recorder reuses their array for its next batch.
	RecordAudit(ctx context.Context, events []*jitgate.AuditEvent) error
}

// Recorder defaults: see NewRecorder.
const (
	DefaultRecorderBuffer = 65536
	DefaultRecorderBatch  = 8192
	DefaultRecorderFlush  = 100 * time.Millisecond
)

// NewRecorder starts a recorder that buffers up to buffer events and writes batches of up to
// batch events at least every flush. Zero values take the defaults (DefaultRecorderBuffer,
// DefaultRecorderBatch, DefaultRecorderFlush).
func NewRecorder(eng AuditWriter, log *slog.Logger, buffer, batch int, flush time.Duration) *Recorder {
	if buffer <= 0 {
		buffer = DefaultRecorderBuffer
	}
	if batch <= 0 {
		batch = DefaultRecorderBatch
	}
	if flush <= 0 {
		flush = DefaultRecorderFlush
	}
	r := &Recorder{eng: eng, log: log, max: buffer, batch: min(batch, buffer), every: flush,
		kick: make(chan struct{}, 1), done: make(chan struct{}), due: time.NewTimer(flush)}
	r.due.Stop()
	r.notFull = sync.NewCond(&r.mu)
	r.written = sync.NewCond(&r.mu)
	go r.loop()
	return r
}

// pending is one buffered statement of the session whose event head is head.
type pending struct {
	head *jitgate.AuditEvent
	st   jitgate.Statement
}

// Record buffers statement st of the session whose session.statements events look like head
// (actor, request, grant, session; head is shared, never modified), waiting while the buffer
// is full. Recording a statement allocates nothing of its own.
func (r *Recorder) Record(head *jitgate.AuditEvent, st jitgate.Statement) {
	r.record(head, st, true)
}

// TryRecord is Record without the wait: false means the buffer is full and st was not
// taken. The relay uses it, holding the session instead of its thread (see the PostgreSQL gateway's session.emit).
func (r *Recorder) TryRecord(head *jitgate.AuditEvent, st jitgate.Statement) bool {
	return r.record(head, st, false)
}

// Waited counts a session's wait for room in the buffer (the back-pressure metric): a relay
// calls it when TryRecord first refuses one of its statements.
func (r *Recorder) Waited() { r.blocked.Add(1) }

func (r *Recorder) record(head *jitgate.AuditEvent, st jitgate.Statement, wait bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.lost.Add(1)
		r.log.Error("gateway: statement recorded after the recorder closed; counted as lost", "session", head.SessionID)
		return true
	}
	if len(r.buf) >= r.max {
		if !wait {
			return false
		}
		r.blocked.Add(1)
		for len(r.buf) >= r.max && !r.closed {
			r.notFull.Wait()
		}
		if r.closed {
			r.lost.Add(1)
			r.log.Error("gateway: recorder closed while a statement waited for room; counted as lost", "session", head.SessionID)
			return true
		}
	}
	if len(r.buf) == 0 {
		r.due.Reset(r.every)
	}
	r.buf = append(r.buf, pending{head: head, st: st})
	r.queued++
	if len(r.buf) == r.batch {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// Sync returns once every event recorded before it was called is written (or counted as
// lost): a session calls it before recording its end, so the chain holds its statements
// before its session.ended event.
func (r *Recorder) Sync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	target := r.queued
	if r.settled >= target {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
	for r.settled < target {
		r.written.Wait()
	}
}

// Stats reports events written, lost, how often a session had to wait for room in the buffer,
// how many batches were written, and how many events are buffered now.
func (r *Recorder) Stats() (recorded, lost, blocked, batches int64, queued int) {
	r.mu.Lock()
	queued = len(r.buf)
	r.mu.Unlock()
	return r.recorded.Load(), r.lost.Load(), r.blocked.Load(), r.batches.Load(), queued
}

func (r *Recorder) loop() {
	defer close(r.done)
	defer r.due.Stop()
	for {
		select {
		case <-r.kick:
		case <-r.due.C:
		}
		r.wakes.Add(1)
		r.mu.Lock()
		all, closed := r.buf, r.closed
		r.buf, r.spare = r.spare[:0], nil
		r.notFull.Broadcast()
		r.mu.Unlock()
		for take := all; len(take) > 0; {
			n := min(len(take), r.batch)
			r.flush(take[:n], !closed)
			take = take[n:]
			r.mu.Lock()
			r.settled += int64(n)
			r.written.Broadcast()
			r.mu.Unlock()
		}
		clear(all) // drop the session heads it points to
		r.mu.Lock()
		r.spare = all[:0]
		r.mu.Unlock()
		if closed {
			return
		}
	}
}

// flush writes batch, retrying with backoff while the recorder is open (sessions wait
// meanwhile, as the queue fills). Once closing, it gives up after 10s and counts the batch
// as lost.
func (r *Recorder) flush(batch []pending, open bool) {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(wait*2, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var events []*jitgate.AuditEvent
		events, r.merged = merge(batch, r.merged)
		err := r.eng.RecordAudit(ctx, events)
		cancel()
		clear(r.merged) // drop the statements' text
		if err == nil {
			r.recorded.Add(int64(len(batch)))
			r.batches.Add(1)
			return
		}
		if !open && time.Now().After(deadline) {
			r.lost.Add(int64(len(batch)))
			r.log.Error("gateway: statements could not be recorded and are lost", "count", len(batch), "err", err)
			r.recordLoss(batch)
			return
		}
		r.log.Error("gateway: recording statements failed; sessions wait until it works", "count", len(batch), "err", err)
		time.Sleep(wait)
	}
}

// merge turns a batch of statements into one session.statements event per session, carrying
// that session's statements in order; sessions keep the order of their first statement, and
// an event's time is its first statement's start. The events' statements share one array,
// into's if it is large enough, which merge returns for the next batch: the events must be
// done with before it is reused.
func merge(batch []pending, into []jitgate.Statement) ([]*jitgate.AuditEvent, []jitgate.Statement) {
	type group struct {
		ev *jitgate.AuditEvent
		n  int
	}
	var order []*group
	groups := make(map[*jitgate.AuditEvent]*group, 8)
	for _, p := range batch {
		g := groups[p.head]
		if g == nil {
			head := *p.head
			head.Time = p.st.Start
			g = &group{ev: &head}
			groups[p.head] = g
			order = append(order, g)
		}
		g.n++
	}
	if cap(into) < len(batch) {
		into = make([]jitgate.Statement, len(batch))
	}
	into = into[:len(batch)]
	out := make([]*jitgate.AuditEvent, len(order))
	at := 0
	for i, g := range order {
		// Each session's statements get their own part of the array, appended to in order.
		g.ev.Statements = into[at : at : at+g.n]
		g.ev.Details = map[string]string{"count": strconv.Itoa(g.n)}
		out[i] = g.ev
		at += g.n
	}
	for _, p := range batch {
		g := groups[p.head]
		g.ev.Statements = append(g.ev.Statements, p.st)
	}
	return out, into
}

// Close writes what is buffered and stops. It returns once everything is written or counted
// as lost.
func (r *Recorder) Close() error {
	r.mu.Lock()
	r.closed = true
	r.notFull.Broadcast()
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	<-r.done
	return nil
}

// recordLoss makes one last attempt to put the loss itself in the audit log: a single
// session.statements_lost event with the count and the sessions affected.
func (r *Recorder) recordLoss(batch []pending) {
	sessions := map[int64]bool{}
	var ids []string
	for _, p := range batch {
		if id := p.head.SessionID; !sessions[id] {
			sessions[id] = true
			ids = append(ids, strconv.FormatInt(id, 10))
		}
	}
	ev := &jitgate.AuditEvent{Time: time.Now(), Actor: "jitgate", Action: jitgate.ActionStatementsLost,
		Details: map[string]string{"count": strconv.Itoa(len(batch)), "sessions": strings.Join(ids, ",")}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.eng.RecordAudit(ctx, []*jitgate.AuditEvent{ev}); err != nil {
		r.log.Error("gateway: could not record the loss either", "count", len(batch), "err", err)
	}
}
