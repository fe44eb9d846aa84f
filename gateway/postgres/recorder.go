package postgres

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

// Recorder writes statement audit events off the relay path: sessions hand events to a bounded
// queue, and one goroutine appends them to the audit chain in batches (one transaction per
// batch). When the store falls behind or fails, the queue fills and sessions wait (back
// pressure) rather than run statements that are not recorded. Events still queued when the
// recorder closes and cannot be written are counted as lost, logged, and exported as a metric.
type Recorder struct {
	eng   Engine
	log   *slog.Logger
	ch    chan *jitgate.AuditEvent
	batch int
	every time.Duration

	mu     sync.RWMutex
	closed bool
	done   chan struct{}

	recorded, lost, blocked, batches atomic.Int64
}

// NewRecorder starts a recorder with a queue of buffer events, writing batches of up to batch
// events at least every flush. Zero values take defaults (65536, 1000, 20ms).
func NewRecorder(eng Engine, log *slog.Logger, buffer, batch int, flush time.Duration) *Recorder {
	if buffer <= 0 {
		buffer = 65536
	}
	if batch <= 0 {
		batch = 1000
	}
	if flush <= 0 {
		flush = 20 * time.Millisecond
	}
	r := &Recorder{eng: eng, log: log, ch: make(chan *jitgate.AuditEvent, buffer), batch: batch, every: flush, done: make(chan struct{})}
	go r.loop()
	return r
}

// Record queues e, waiting while the queue is full.
func (r *Recorder) Record(e *jitgate.AuditEvent) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.lost.Add(1)
		r.log.Error("gateway: statement recorded after the recorder closed; counted as lost", "session", e.SessionID)
		return
	}
	select {
	case r.ch <- e:
	default:
		r.blocked.Add(1)
		r.ch <- e
	}
}

// Stats reports events written, lost, how often a session had to wait for room in the queue,
// how many batches were written, and how many events are queued now.
func (r *Recorder) Stats() (recorded, lost, blocked, batches int64, queued int) {
	return r.recorded.Load(), r.lost.Load(), r.blocked.Load(), r.batches.Load(), len(r.ch)
}

func (r *Recorder) loop() {
	defer close(r.done)
	batch := make([]*jitgate.AuditEvent, 0, r.batch)
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	open := true
	for open {
		select {
		case e, ok := <-r.ch:
			if !ok {
				open = false
				break
			}
			batch = append(batch, e)
			// Take whatever else is queued, up to a batch.
			for len(batch) < r.batch {
				select {
				case e, ok := <-r.ch:
					if !ok {
						open = false
					} else {
						batch = append(batch, e)
						continue
					}
				default:
				}
				break
			}
			if len(batch) >= r.batch || !open {
				batch = r.flush(batch, open)
			}
		case <-tick.C:
			batch = r.flush(batch, true)
		}
	}
	r.flush(batch, false)
}

// flush writes batch, retrying with backoff while the recorder is open (sessions wait
// meanwhile, as the queue fills). Once closing, it gives up after 10s and counts the batch
// as lost.
func (r *Recorder) flush(batch []*jitgate.AuditEvent, open bool) []*jitgate.AuditEvent {
	if len(batch) == 0 {
		return batch
	}
	deadline := time.Now().Add(10 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(wait*2, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := r.eng.RecordAudit(ctx, batch)
		cancel()
		if err == nil {
			r.recorded.Add(int64(len(batch)))
			r.batches.Add(1)
			return batch[:0]
		}
		if !open && time.Now().After(deadline) {
			r.lost.Add(int64(len(batch)))
			r.log.Error("gateway: statements could not be recorded and are lost", "count", len(batch), "err", err)
			r.recordLoss(batch)
			return batch[:0]
		}
		r.log.Error("gateway: recording statements failed; sessions wait until it works", "count", len(batch), "err", err)
		time.Sleep(wait)
	}
}

// Close writes what is queued and stops. It returns once everything is written or counted as
// lost.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.ch)
	}
	r.mu.Unlock()
	<-r.done
	return nil
}

// recordLoss makes one last attempt to put the loss itself in the audit log: a single
// session.statements_lost event with the count and the sessions affected.
func (r *Recorder) recordLoss(batch []*jitgate.AuditEvent) {
	sessions := map[int64]bool{}
	var ids []string
	for _, e := range batch {
		if !sessions[e.SessionID] {
			sessions[e.SessionID] = true
			ids = append(ids, strconv.FormatInt(e.SessionID, 10))
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
