package access

import (
	"context"
	"math"
	"time"

	"github.com/jitgate/jitgate"
)

// Test hooks into the scheduler's wake-ups.

// SchedulerWoken reports (and consumes) a pending wake-up of e's scheduler.
func SchedulerWoken(e *Engine) bool {
	select {
	case <-e.wake:
		return true
	default:
		return false
	}
}

// SchedulerInPass makes e behave as while its scheduler runs a pass.
func SchedulerInPass(e *Engine) { e.nextWake.Store(math.MaxInt64) }

// SchedulerSleepsUntil makes e behave as while its scheduler sleeps until t.
func SchedulerSleepsUntil(e *Engine, t time.Time) { e.nextWake.Store(t.UnixNano()) }

// Write runs fn as one of e's writes (grouped with others made at the same time).
func Write(e *Engine, ctx context.Context, fn func(tx jitgate.Tx) error) error {
	return e.write(ctx, func(o *op) error { return fn(o.tx) })
}
