package access

import (
	"context"
	"fmt"
	"sync"

	"github.com/jitgate/jitgate/audit"
)

// auditMark is how far this instance has verified the audit chain.
type auditMark struct {
	mu      sync.Mutex
	mark    audit.Mark
	ok      bool // mark holds a verified point
	running bool // the first, whole-chain pass runs (see Run)
}

// AuditCheck verifies the audit log for a page view without walking it all each time: the
// events written since this instance last verified the chain, linked from the point it
// verified (the whole chain the first time, which Run starts in the background at start-up).
// pending is true, with no result, while that first pass runs. A chain found broken stays
// reported broken. The full check, against the signed checkpoints too, is VerifyAudit.
func (e *Engine) AuditCheck(ctx context.Context) (res *audit.Result, pending bool, err error) {
	if _, err := e.caller(ctx); err != nil {
		return nil, false, err
	}
	e.am.mu.Lock()
	from, ok, running := e.am.mark, e.am.ok, e.am.running
	e.am.mu.Unlock()
	if !ok && running {
		return nil, true, nil
	}
	res, err = e.verifyFrom(ctx, from)
	return res, false, err
}

// verifyFrom verifies the chain after from and moves the mark on success.
func (e *Engine) verifyFrom(ctx context.Context, from audit.Mark) (*audit.Result, error) {
	res, err := audit.VerifyFrom(ctx, e.store, from)
	if err != nil {
		return nil, err
	}
	if res.OK {
		last := res.Last()
		e.am.mu.Lock()
		if !e.am.ok || last.Seq > e.am.mark.Seq {
			e.am.mark, e.am.ok = last, true
		}
		e.am.mu.Unlock()
		res.Message = fmt.Sprintf("events 1 to %d verified, %d of them now (jitgate audit --verify checks the whole chain and its signed checkpoints)", last.Seq, res.Events)
	}
	return res, nil
}

// checkAuditAtStart verifies the whole chain once, in the background, so that page views then
// verify only what is new.
func (e *Engine) checkAuditAtStart(ctx context.Context) {
	e.am.mu.Lock()
	if e.am.ok || e.am.running {
		e.am.mu.Unlock()
		return
	}
	e.am.running = true
	e.am.mu.Unlock()
	defer func() {
		e.am.mu.Lock()
		e.am.running = false
		e.am.mu.Unlock()
	}()
	res, err := e.verifyFrom(ctx, audit.Mark{})
	switch {
	case err != nil && ctx.Err() == nil:
		e.log.Warn("audit log: the start-up verification failed; page views verify it instead", "err", err)
	case err == nil && !res.OK:
		e.log.Error("audit log: the chain is broken", "first_bad", res.FirstBad, "problem", res.Problem, "message", res.Message)
	}
}
