package access

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jitgate/jitgate"
)

const (
	// dueBatch is how many items of each kind one pass handles.
	dueBatch = 500
	// maxSleep bounds the scheduler's sleep so it notices work another server instance
	// scheduled on a shared PostgreSQL database.
	maxSleep = 15 * time.Second
	// provisionLease is how long a claimed provisioning attempt is hidden from other
	// scheduler instances.
	provisionLease = time.Minute
)

// Run runs the scheduler until ctx ends: it catches up with everything overdue at once, then
// sleeps until the next due time (or until a change wakes it) and does it again. Beside it, the
// drift reconciler runs at start-up and every ReconcileInterval, and the other instances'
// change notices are received (see Listening).
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); e.provisionLoop(ctx) }()
	go func() { defer wg.Done(); e.checkAuditAtStart(ctx) }()
	go func() { defer wg.Done(); e.reconcileLoop(ctx) }()
	go func() { defer wg.Done(); e.runInstance(ctx) }()
	go func() { defer wg.Done(); e.followAnnouncements(ctx) }()
	defer wg.Wait()
	for {
		// Changes committed from here on wake the scheduler (it may not see them in this
		// pass); once it knows its next due time, only changes due before that do.
		e.nextWake.Store(math.MaxInt64)
		next, err := e.tick(ctx, false)
		wait := maxSleep
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			e.log.Error("scheduler pass failed; retrying", "err", err)
			wait = time.Second
		} else if !next.IsZero() {
			wait = min(max(next.Sub(e.now()), 0), maxSleep)
		}
		e.nextWake.Store(e.now().Add(wait).UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-e.clock.After(wait):
		}
	}
}

// Tick does everything due now: times out pending requests, activates scheduled grants,
// expires ended grants and runs due provisioning. It returns the next due time (zero if
// nothing is scheduled). Tick is safe to run from several engines on one store: every
// transition is made under a row lock and re-checked there, so it happens once.
func (e *Engine) Tick(ctx context.Context) (time.Time, error) { return e.tick(ctx, true) }

// tick is Tick, with the provisioning attempts or without them (Run's provisioning loop runs
// those, so that calls to remote systems never hold up the grants' ends).
func (e *Engine) tick(ctx context.Context, provision bool) (time.Time, error) {
	for {
		now := e.now()
		var due *jitgate.DueWork
		err := e.store.View(ctx, func(tx jitgate.Tx) error {
			var err error
			due, err = tx.Due(now, dueBatch)
			return err
		})
		if err != nil {
			return time.Time{}, err
		}
		if !provision {
			due.Provision = nil
		}
		if due.Empty() {
			return due.Next, nil
		}
		var errs []error
		for _, id := range due.TimedOut {
			errs = append(errs, e.timeOut(ctx, id))
		}
		for _, id := range due.Activate {
			errs = append(errs, e.activateDue(ctx, id))
		}
		// Grants ending together end in batches: one transaction (one commit, one audit
		// append) per batch rather than per grant. Ids are locked in ascending order, and rows
		// another transaction holds are skipped (another instance expiring them, or a revoke;
		// the next pass sees them again), so two instances expiring the same grants take
		// different batches and never deadlock.
		slices.Sort(due.Expire)
		skipped := 0
		for ids := range slices.Chunk(due.Expire, expireBatch) {
			n, err := e.expireDue(ctx, ids)
			skipped += n
			errs = append(errs, err)
		}
		errs = append(errs, e.provisionAll(ctx, due.Provision))
		if err := errors.Join(errs...); err != nil {
			return time.Time{}, err
		}
		if skipped > 0 && skipped == len(due.Expire) && len(due.TimedOut)+len(due.Activate)+len(due.Provision) == 0 {
			// Everything due is in another instance's hands: wait for its commit (real time,
			// whatever the engine's clock) rather than ask again at once.
			select {
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// provisionLoop runs the due provisioning attempts beside Run's scheduler, until ctx ends.
func (e *Engine) provisionLoop(ctx context.Context) {
	for {
		var (
			ids  []int64
			next time.Time
		)
		err := e.store.View(ctx, func(tx jitgate.Tx) (err error) {
			ids, next, err = tx.DueProvisioning(e.now(), dueBatch)
			return err
		})
		wait := maxSleep
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			e.log.Error("provisioning pass failed; retrying", "err", err)
			wait = time.Second
		case len(ids) > 0:
			if err := e.provisionAll(ctx, ids); err != nil && ctx.Err() == nil {
				e.log.Error("provisioning pass failed; retrying", "err", err)
				wait = time.Second
				break
			}
			continue
		case !next.IsZero():
			wait = min(max(next.Sub(e.now()), 0), maxSleep)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.provWake:
		case <-e.clock.After(wait):
		}
	}
}

func (e *Engine) timeOut(ctx context.Context, id int64) error {
	return e.write(ctx, func(o *op) error {
		r, err := o.tx.GetRequest(id, true)
		if err != nil {
			return err
		}
		if r.State != jitgate.RequestPending || o.now.Before(r.ExpiresAt) {
			return nil // another instance or a reviewer got there first
		}
		return e.finish(o, r, jitgate.RequestTimedOut, SystemActor, "no decision within the pending TTL")
	})
}

func (e *Engine) activateDue(ctx context.Context, id int64) error {
	return e.write(ctx, func(o *op) error {
		g, err := o.tx.GetGrant(id, true)
		if err != nil {
			return err
		}
		if g.State != jitgate.GrantScheduled || o.now.Before(g.StartsAt) {
			return nil
		}
		if !o.now.Before(g.EndsAt) {
			// jitgate was down for the whole window: never switch it on.
			return e.end(o, g, jitgate.GrantExpired, SystemActor, "window passed before activation")
		}
		e.activate(o, g)
		if err := o.tx.UpdateGrant(g); err != nil {
			return err
		}
		if err := o.audit(SystemActor, jitgate.ActionGrantActivated, g.RequestID, g.ID, map[string]string{
			"user": g.User, "resource": g.Resource, "role": g.Role, "starts_at": stamp(g.StartsAt), "ends_at": stamp(g.EndsAt)}); err != nil {
			return err
		}
		o.emit(jitgate.Event{Kind: jitgate.EventGrantStarted, Grant: g, Notify: g.Holders()})
		return nil
	})
}

// expireBatch is how many grants one transaction expires.
const expireBatch = 200

// expireDue expires the grants ids whose end has come, in one transaction: their rows are
// locked and read in one statement, and each is re-checked under its lock (another instance,
// or a revoke, may have ended it first). Rows another transaction holds are skipped, not waited
// for, so that two instances expiring the same grants work on different batches; it returns
// how many were skipped (Tick comes back for them).
func (e *Engine) expireDue(ctx context.Context, ids []int64) (skipped int, err error) {
	err = e.write(ctx, func(o *op) error {
		gs, err := o.tx.LockGrants(ids, true)
		if err != nil {
			return err
		}
		skipped = len(ids) - len(gs)
		var due []*jitgate.Grant
		var dueIDs []int64
		for _, g := range gs {
			if g.State == jitgate.GrantActive && !o.now.Before(g.EndsAt) {
				due, dueIDs = append(due, g), append(dueIDs, g.ID)
			}
		}
		if len(due) == 0 {
			return nil
		}
		exts, err := o.tx.ListRequests(jitgate.RequestFilter{State: jitgate.RequestPending, ExtendsGrants: dueIDs, Limit: 10 * len(dueIDs)})
		if err != nil {
			return err
		}
		o.exts = make(map[int64][]*jitgate.Request, len(exts))
		for _, r := range exts {
			o.exts[r.ExtendsGrant] = append(o.exts[r.ExtendsGrant], r)
		}
		ended := make([]*jitgate.Grant, 0, len(due))
		o.ended = &ended
		for _, g := range due {
			if err := e.end(o, g, jitgate.GrantExpired, SystemActor, "expired"); err != nil {
				return err
			}
		}
		return o.tx.UpdateGrants(ended)
	})
	return skipped, err
}

// provisionAll runs the due provisioning attempts ids, up to provPar at once: the calls wait on
// remote systems, and a revoke should not queue behind a hundred others.
func (e *Engine) provisionAll(ctx context.Context, ids []int64) error {
	errs := make([]error, len(ids))
	sem := make(chan struct{}, e.provPar)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = e.provision(ctx, id)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// provision runs one due provisioning attempt for grant id. It first claims the attempt by
// pushing its due time out by a lease, so that a second scheduler instance skips it; then it
// calls the provisioner outside any transaction; then it records the outcome, unless the grant
// moved on meanwhile (e.g. it was revoked while being granted: the revoke is then due next).
func (e *Engine) provision(ctx context.Context, id int64) error {
	var claimed *jitgate.Grant
	err := e.write(ctx, func(o *op) error {
		claimed = nil
		// Another instance holding the row is claiming it: leave it to that one.
		gs, err := o.tx.LockGrants([]int64{id}, true)
		if err != nil || len(gs) == 0 {
			return err
		}
		g := gs[0]
		if g.Provision.NextAt.IsZero() || o.now.Before(g.Provision.NextAt) {
			return nil
		}
		g.Provision.NextAt = o.now.Add(provisionLease)
		g.Provision.ClaimedBy = e.instance.ID
		if err := o.tx.UpdateGrant(g); err != nil {
			return err
		}
		claimed = g
		return nil
	})
	if err != nil || claimed == nil {
		return err
	}
	want := claimed.Provision.State
	var (
		callErr  error
		receipt  string
		verified bool
	)
	p, ok := e.provs[claimed.Resource]
	switch {
	case !ok:
		callErr = fmt.Errorf("no provisioner is configured for resource %s", claimed.Resource)
	case want == jitgate.ProvisionStateGranting, want == jitgate.ProvisionStateGranted:
		// Granted with work due is a refresh: an extension moved the end.
		cctx, cancel := context.WithTimeout(ctx, e.provTO)
		callErr = p.Grant(cctx, claimed)
		cancel()
	case want == jitgate.ProvisionStateRevoking:
		cctx, cancel := context.WithTimeout(ctx, e.provTO)
		callErr = p.Revoke(cctx, claimed)
		if v, ok := p.(jitgate.RevocationVerifier); ok && callErr == nil {
			// Trust, but verify: re-read the target. A revoke that left the access in place
			// is an alert and is retried like any failure.
			receipt, callErr = v.VerifyRevoked(cctx, claimed)
			verified = callErr == nil
			if callErr != nil {
				callErr = &unverified{callErr}
			}
		}
		cancel()
	default:
		return nil
	}
	var uv *unverified
	switch {
	case errors.As(callErr, &uv):
		e.log.Error("ALERT: access still present after revoke; will retry", "grant", claimed.ID, "resource", claimed.Resource, "err", uv.err)
	case callErr != nil:
		e.log.Warn("provisioner failed; will retry", "grant", claimed.ID, "resource", claimed.Resource, "op", want, "err", callErr)
	}
	err = e.write(ctx, func(o *op) error {
		g, err := o.tx.GetGrant(id, true)
		if err != nil {
			return err
		}
		if g.Provision.State != want {
			return nil // revoked while granting: the revoke attempt is already due
		}
		if callErr != nil {
			g.Provision.Attempts++
			g.Provision.LastError = truncate(callErr.Error(), 500)
			g.Provision.NextAt, g.Provision.ClaimedBy = o.now.Add(e.backoff(g.Provision.Attempts)), ""
			if err := o.tx.UpdateGrant(g); err != nil {
				return err
			}
			action := jitgate.ActionProvisionFailed
			if uv != nil {
				action = jitgate.ActionRevocationUnverified
				o.emit(jitgate.Event{Kind: jitgate.EventRevocationUnverified, Grant: g})
			}
			return o.audit(SystemActor, action, g.RequestID, g.ID, map[string]string{
				"op": string(want), "attempt": fmt.Sprint(g.Provision.Attempts), "error": g.Provision.LastError,
				"next_at": stamp(g.Provision.NextAt)})
		}
		action := jitgate.ActionGrantProvisioned
		g.Provision.State = jitgate.ProvisionStateGranted
		attempts := g.Provision.Attempts + 1
		details := map[string]string{"attempts": fmt.Sprint(attempts)}
		if want == jitgate.ProvisionStateGranted {
			details["refresh"] = "new end " + stamp(g.EndsAt)
		}
		if want == jitgate.ProvisionStateRevoking {
			action = jitgate.ActionGrantDeprovisioned
			g.Provision.State = jitgate.ProvisionStateRevoked
			if verified {
				action = jitgate.ActionRevocationVerified
				g.Provision.VerifiedAt, g.Provision.Receipt = o.now, truncate(receipt, 500)
				details["receipt"] = g.Provision.Receipt
				details["verified_at"] = stamp(o.now)
				details["time_to_revoke"] = g.TimeToRevoke().String()
			}
		}
		g.Provision.LastError, g.Provision.NextAt, g.Provision.ClaimedBy = "", time.Time{}, ""
		g.Provision.Attempts = attempts
		if err := o.tx.UpdateGrant(g); err != nil {
			return err
		}
		if want == jitgate.ProvisionStateRevoking {
			o.emit(jitgate.Event{Kind: jitgate.EventGrantDeprovisioned, Grant: g})
		}
		return o.audit(SystemActor, action, g.RequestID, g.ID, details)
	})
	return err
}

// unverified marks a revoke whose verification found the access still in place.
type unverified struct{ err error }

func (u *unverified) Error() string { return "revocation not verified: " + u.err.Error() }
func (u *unverified) Unwrap() error { return u.err }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
