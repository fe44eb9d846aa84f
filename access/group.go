package access

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jitgate/jitgate"
)

// Group commit. Every write appends to the one audit chain, whose head row serializes writes
// until they commit; a commit and the head's read and update cost as much as the rest of a
// typical write. So writes that arrive while another batch runs wait for it and then share one
// transaction: each runs within a savepoint of its own (its failure undoes only its part), in
// the order they came, each seeing the ones before it as if they had committed; their audit
// events are appended together, and one commit makes them durable. A write that fails in the
// batch for a reason other than its own checks (a lost race, a row another instance holds),
// and every write of a batch that fails as a whole (a lost connection, the commit), is run
// again in a transaction of its own, on its caller's goroutine, so each caller gets the
// result it would have had alone and the batches never wait long on other instances.

// maxGroup caps the writes that share a transaction.
const maxGroup = 32

// groupLockWait is how long a write in a shared transaction may wait for a row lock.
const groupLockWait = 100 * time.Millisecond

// writeGroup queues writes for the combiner.
type writeGroup struct {
	mu      sync.Mutex
	pending []*groupedWrite
	running bool // a combiner goroutine runs
}

type groupedWrite struct {
	ctx  context.Context
	fn   func(o *op) error
	done chan error
}

// writeGrouped queues fn for the combiner and waits for its result. It waits even if ctx ends
// meanwhile: a write that has started is finished and reported, never abandoned half-known;
// one whose ctx ended before it started is not run.
func (e *Engine) writeGrouped(ctx context.Context, fn func(o *op) error) error {
	w := &groupedWrite{ctx: ctx, fn: fn, done: make(chan error, 1)}
	g := &e.grouped
	g.mu.Lock()
	g.pending = append(g.pending, w)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go e.combine()
	}
	if err := <-w.done; err != errRunAlone {
		return err
	}
	// On the caller's goroutine, so that a write waiting on another instance's row holds up
	// no other write.
	return e.writeAlone(ctx, fn)
}

// refusal reports whether err is the engine's own refusal of a write (not found, forbidden,
// invalid...), which stands; anything else (a lost race, a store error) is for the write run
// alone, with the store's classification and retries.
func refusal(err error) bool {
	var je *jitgate.Error
	return errors.As(err, &je) && !errors.Is(err, jitgate.ErrStale)
}

// errRunAlone tells a write's caller to run it in a transaction of its own.
var errRunAlone = errors.New("run alone")

// combine runs the queued writes, a batch per transaction, until none is left.
func (e *Engine) combine() {
	g := &e.grouped
	for {
		g.mu.Lock()
		n := min(len(g.pending), maxGroup)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		batch := slices.Clone(g.pending[:n])
		g.pending = slices.Delete(g.pending, 0, n)
		g.mu.Unlock()
		e.runGroup(batch)
	}
}

// groupResult is what became of one write of a batch.
type groupResult int

const (
	groupDone    groupResult = iota // committed with the batch
	groupFailed                     // failed its own checks; its error stands
	groupAlone                      // to be run again in a transaction of its own
	groupSkipped                    // its ctx ended before it started
)

// runGroup runs batch in one transaction and reports to each write.
func (e *Engine) runGroup(batch []*groupedWrite) {
	if len(batch) == 1 {
		e.runOne(batch[0])
		return
	}
	results := make([]groupResult, len(batch))
	errs := make([]error, len(batch))
	ops := make([]*op, len(batch))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.store.Tx(ctx, func(tx jitgate.Tx) error {
		// A batch holds the rows of every write so far while the next one runs: waiting on a
		// row another instance's batch holds could close a cycle that PostgreSQL breaks only
		// after its deadlock timeout (a second). A write that would wait longer than this
		// leaves the batch instead (its savepoint is rolled back) and runs alone afterwards.
		if err := tx.LimitLockWaits(groupLockWait); err != nil {
			return err
		}
		var audits []*jitgate.AuditEvent
		for i, w := range batch {
			ops[i], errs[i] = nil, nil
			if err := w.ctx.Err(); err != nil {
				results[i], errs[i] = groupSkipped, err
				continue
			}
			if err := tx.Savepoint(); err != nil {
				return err
			}
			o := &op{now: e.now(), tx: tx}
			if err := e.run(o, w.fn); err != nil {
				if rerr := tx.RollbackToSavepoint(); rerr != nil {
					return rerr
				}
				if rerr := tx.ReleaseSavepoint(); rerr != nil { // rolled back to, it stays until released
					return rerr
				}
				// The engine's own refusals (not found, forbidden, invalid...) stand; anything
				// else (a lost race, a store error) gets a transaction of its own, with the
				// store's classification and retries.
				if refusal(err) {
					results[i], errs[i] = groupFailed, err
				} else {
					results[i] = groupAlone
				}
				continue
			}
			if err := tx.ReleaseSavepoint(); err != nil {
				return err
			}
			results[i], ops[i] = groupDone, o
			audits = append(audits, o.audits...)
		}
		// Every writer takes the audit head last and holds it only to commit: waiting for it
		// closes no cycle.
		if err := tx.LimitLockWaits(0); err != nil {
			return err
		}
		return tx.AppendAudit(audits...)
	})
	for i, w := range batch {
		switch {
		case results[i] == groupSkipped:
			w.done <- errs[i]
		case err != nil || results[i] == groupAlone:
			// The batch did not commit (then even a refusal may have rested on a write that
			// never happened), or this write could not run in it.
			w.done <- errRunAlone
		case results[i] == groupFailed:
			w.done <- errs[i]
		default:
			e.committed(ops[i])
			w.done <- nil
		}
	}
}

// runOne runs a batch of one write: in a transaction of its own, without the savepoint that
// keeps the writes of a shared transaction apart (its failure rolls the whole transaction
// back), but with the same limit on lock waits, so that a write waiting on another
// instance's row holds up the writes queued behind it no longer than a batch would. A write
// it cannot settle (a lost race, a store error, a wait too long) is run again by its caller,
// whose retries classify it.
func (e *Engine) runOne(w *groupedWrite) {
	if err := w.ctx.Err(); err != nil {
		w.done <- err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := &op{now: e.now()}
	var refused error
	err := e.store.Tx(ctx, func(tx jitgate.Tx) error {
		o.tx = tx
		if err := tx.LimitLockWaits(groupLockWait); err != nil {
			return err
		}
		if err := e.run(o, w.fn); err != nil {
			if refusal(err) {
				refused = err
			}
			return err
		}
		if err := tx.LimitLockWaits(0); err != nil { // as in runGroup: the audit head waits
			return err
		}
		return tx.AppendAudit(o.audits...)
	})
	switch {
	case err == nil:
		e.committed(o)
		w.done <- nil
	case refused != nil:
		w.done <- refused
	default:
		w.done <- errRunAlone
	}
}
