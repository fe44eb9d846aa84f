// Package access is jitgate's lifecycle engine: it files requests, records reviews, activates,
// extends, expires and revokes grants, drives provisioners, and writes an audit event in the
// same transaction as every state change. Its scheduler is driven by the store, so it survives
// restarts and catches up with everything overdue at once when it starts.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/policy"
)

// SystemActor is the actor of changes jitgate makes by itself (time-outs, expiry, automatic
// approval): jitgate.SystemActor.
const SystemActor = jitgate.SystemActor

// MaxCommentLen caps a review comment (and a revoke's reason), in characters (Unicode code
// points).
const MaxCommentLen = 2000

// Options configures an Engine. Store, Policies and Directory are required.
type Options struct {
	Store     jitgate.Store
	Policies  *policy.Set
	Directory jitgate.Directory
	// Clock defaults to the system clock.
	Clock jitgate.Clock
	// Provisioners maps a resource name to the provisioner that switches its grants on and
	// off. Resources without one are enforced by the gateway alone.
	Provisioners map[string]jitgate.Provisioner
	// Backoff returns the wait before provisioning attempt n+1 after n failures; defaults to
	// DefaultBackoff.
	Backoff func(failures int) time.Duration
	// ProvisionTimeout bounds one provisioner call; defaults to 30s.
	ProvisionTimeout time.Duration
	// ProvisionConcurrency is how many provisioner calls one scheduler pass runs at once, so
	// that many grants ending together are all revoked quickly; defaults to 8.
	ProvisionConcurrency int
	// SeparateTransactions gives every write a transaction of its own, rather than letting
	// writes made at the same time share one (group commit; for comparisons).
	SeparateTransactions bool
	// ReconcileInterval is how often Run looks for drift (jitgate-managed accounts that no live
	// grant explains); it also does so at start-up. Defaults to one minute.
	ReconcileInterval time.Duration
	// Checkpoints, when set, is where VerifyAudit finds the latest signed checkpoint to check
	// the end of the chain against.
	Checkpoints audit.CheckpointSource
	Logger      *slog.Logger
}

// DefaultBackoff doubles from 1s up to 5 minutes.
func DefaultBackoff(failures int) time.Duration {
	if failures < 1 {
		failures = 1
	}
	if failures > 9 {
		return 5 * time.Minute
	}
	return min(time.Second<<(failures-1), 5*time.Minute)
}

// Engine implements jitgate.AccessService and runs the scheduler.
type Engine struct {
	store   jitgate.Store
	pol     *policy.Set
	dir     jitgate.Directory
	clock   jitgate.Clock
	provs   map[string]jitgate.Provisioner
	backoff func(int) time.Duration
	provTO  time.Duration
	provPar int
	recon   time.Duration
	cps     audit.CheckpointSource
	log     *slog.Logger
	// instance is this process as a server instance (registered by Run).
	instance jitgate.Instance
	// am is how far this instance has verified the audit chain (AuditCheck).
	am auditMark
	// effects, if set, turns events into outbox items in their change's transaction.
	effects Effects
	// installID is the store's installation id, read once (under mu).
	installID string
	// listenReady is closed once the engine first receives other instances' change notices.
	listenReady chan struct{}
	listenOnce  sync.Once

	wake chan struct{}
	// provWake wakes Run's provisioning loop.
	provWake chan struct{}
	// nextWake is when Run's scheduler will next look at the store by itself (Unix
	// nanoseconds on the engine's clock); math.MaxInt64 while it runs a pass or before it
	// starts, so that every change wakes it then.
	nextWake atomic.Int64
	// groups makes concurrent writes share transactions (group.go); grouped holds them.
	groups  bool
	grouped writeGroup

	mu     sync.RWMutex
	subs   map[int]func(jitgate.Event)
	nextID int
}

var _ jitgate.AccessService = (*Engine)(nil)

// New returns an Engine.
func New(o Options) *Engine {
	e := &Engine{
		store: o.Store, pol: o.Policies, dir: o.Directory, clock: o.Clock, provs: o.Provisioners,
		backoff: o.Backoff, provTO: o.ProvisionTimeout, provPar: o.ProvisionConcurrency, groups: !o.SeparateTransactions,
		recon: o.ReconcileInterval, cps: o.Checkpoints, log: o.Logger,
		wake: make(chan struct{}, 1), provWake: make(chan struct{}, 1), subs: map[int]func(jitgate.Event){},
		instance:    jitgate.Instance{ID: newInstanceID(), Host: hostname(), PID: os.Getpid(), StartedAt: time.Now().UTC()},
		listenReady: make(chan struct{}),
	}
	e.nextWake.Store(math.MaxInt64)
	if e.clock == nil {
		e.clock = jitgate.SystemClock{}
	}
	if e.backoff == nil {
		e.backoff = DefaultBackoff
	}
	if e.provTO == 0 {
		e.provTO = 30 * time.Second
	}
	if e.provPar <= 0 {
		e.provPar = 8
	}
	if e.recon <= 0 {
		e.recon = time.Minute
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.provs == nil {
		e.provs = map[string]jitgate.Provisioner{}
	}
	return e
}

// Policies returns the engine's compiled policy set.
func (e *Engine) Policies() *policy.Set { return e.pol }

// Subscribe registers fn to be called, in commit order, with every event after its change
// commits. fn runs on the goroutine that made the change and must not block. The returned
// function unsubscribes.
func (e *Engine) Subscribe(fn func(jitgate.Event)) (unsubscribe func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.nextID
	e.nextID++
	e.subs[id] = fn
	return func() {
		e.mu.Lock()
		delete(e.subs, id)
		e.mu.Unlock()
	}
}

func (e *Engine) publish(evs []jitgate.Event) {
	if len(evs) == 0 {
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, ev := range evs {
		for _, fn := range e.subs {
			fn(ev)
		}
	}
}

// kick wakes the scheduler and the provisioning loop so they look at the store again now.
func (e *Engine) kick() {
	e.wakeScheduler()
	e.wakeProvisioning()
}

// wakeScheduler wakes Run's scheduler now.
func (e *Engine) wakeScheduler() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// wakeProvisioning wakes Run's provisioning loop now.
func (e *Engine) wakeProvisioning() {
	select {
	case e.provWake <- struct{}{}:
	default:
	}
}

func (e *Engine) now() time.Time { return e.clock.Now().UTC() }

// Now returns the engine clock's time.
func (e *Engine) Now() time.Time { return e.now() }

// op is the state of one write: the audit events to append before it commits and the events
// to publish once it has.
type op struct {
	tx     jitgate.Tx
	now    time.Time
	audits []*jitgate.AuditEvent
	events []jitgate.Event
	// exts, when not nil, holds the pending extension requests of the grants the op ends,
	// read for all of them at once (expireDue); end reads a grant's otherwise.
	exts map[int64][]*jitgate.Request
	// ended, when not nil, collects the grants end changed instead of updating each at once;
	// the caller writes them with UpdateGrants (expireDue).
	ended *[]*jitgate.Grant
	// provDue is set when the op makes a provisioning attempt due now: write then wakes the
	// provisioning loop.
	provDue bool
	// due is the earliest time the op made something due for the scheduler (a pending
	// request's timeout, a grant's start or end); write wakes the scheduler if that is before
	// it would wake anyway.
	due time.Time
}

// dueAt records that the op made work due at t (see op.due).
func (o *op) dueAt(t time.Time) {
	if o.due.IsZero() || t.Before(o.due) {
		o.due = t
	}
}

func (o *op) emit(ev jitgate.Event) { o.events = append(o.events, ev) }

// audit queues an audit event; write appends the queue in the same transaction, in one
// statement. It returns nil so call sites read like the writes they record.
func (o *op) audit(actor, action string, reqID, grantID int64, details map[string]string) error {
	o.audits = append(o.audits, &jitgate.AuditEvent{
		Time: o.now, Actor: actor, Action: action, RequestID: reqID, GrantID: grantID, Details: details,
	})
	return nil
}

// write runs fn in a store transaction, retrying when it lost a race (jitgate.ErrStale), and
// publishes its events after it commits. Writes made at the same time share a transaction
// (see group.go).
func (e *Engine) write(ctx context.Context, fn func(o *op) error) error {
	if e.groups {
		return e.writeGrouped(ctx, fn)
	}
	return e.writeAlone(ctx, fn)
}

// writeAlone runs fn in a store transaction of its own.
func (e *Engine) writeAlone(ctx context.Context, fn func(o *op) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		o := &op{now: e.now()}
		err = e.store.Tx(ctx, func(tx jitgate.Tx) error {
			o.tx = tx
			if err := e.run(o, fn); err != nil {
				return err
			}
			return tx.AppendAudit(o.audits...)
		})
		if err == nil {
			e.committed(o)
			return nil
		}
		if !errors.Is(err, jitgate.ErrStale) {
			return err
		}
	}
	return err
}

// run runs fn on o and adds its change notices and effects to the transaction.
func (e *Engine) run(o *op, fn func(o *op) error) error {
	if err := fn(o); err != nil {
		return err
	}
	if err := e.announce(o); err != nil {
		return err
	}
	return e.enqueueEffects(o)
}

// committed does what follows o's commit: wake the scheduler or the provisioning loop if o
// made work due, and publish o's events.
func (e *Engine) committed(o *op) {
	if o.provDue {
		e.wakeProvisioning()
	}
	if !o.due.IsZero() && o.due.UnixNano() < e.nextWake.Load() {
		e.wakeScheduler()
	}
	e.publish(o.events)
}

func (e *Engine) caller(ctx context.Context) (*jitgate.User, error) {
	u := jitgate.UserFromContext(ctx)
	if u == nil || u.Name == "" {
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "not signed in")
	}
	return u, nil
}

// approvers resolves the users of the directory who may approve at step of pol (requester
// excluded; owner is the requester's owner when an agent asked); for notifications.
func (e *Engine) approvers(ctx context.Context, pol *policy.Policy, step int, requester, owner string) []string {
	users, err := e.dir.Users(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, u := range users {
		if u.Name == requester {
			continue
		}
		if (step < 0 && pol.IsApproverFor(u, owner)) || (step >= 0 && pol.CanApprove(u, requester, owner, step)) {
			out = append(out, u.Name)
		}
	}
	return out
}

func dur(d time.Duration) string { return jitgate.FormatDuration(d) }

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Submit files a request as the caller; see jitgate.AccessService.
func (e *Engine) Submit(ctx context.Context, nr jitgate.NewRequest) (*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	pol, err := e.pol.Match(u, nr.Resource, nr.Role)
	if err != nil {
		return nil, err
	}
	if nr.BreakGlass && u.IsAgent() {
		return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "agents never break glass: %s must ask and wait for a decision", u.Name)
	}
	nr.Reason = strings.TrimSpace(nr.Reason)
	in := policy.Input{
		Requester: u, Resource: nr.Resource, Role: nr.Role, Duration: nr.Duration, Reason: nr.Reason,
		Start: nr.StartAt, BreakGlass: nr.BreakGlass, Now: e.now(),
	}
	if err := pol.Check(in); err != nil {
		return nil, err
	}
	auto := false
	if !nr.BreakGlass {
		if auto, err = pol.AutoApproved(in); err != nil {
			e.log.Warn("auto-approve condition failed; the request waits for approvers", "policy", pol.Name, "err", err)
		}
	}
	// Who is told, read before the write: it needs the directory (a store read of its own),
	// and writes run one batch at a time, so a read inside one holds up the writes behind it.
	var notify []string
	switch {
	case nr.BreakGlass:
		notify = e.approvers(ctx, pol, -1, u.Name, u.Owner)
	case !auto:
		notify = e.approvers(ctx, pol, 0, u.Name, u.Owner)
	}
	var r *jitgate.Request
	err = e.write(ctx, func(o *op) error {
		pending, err := o.tx.ListRequests(jitgate.RequestFilter{State: jitgate.RequestPending, Requester: u.Name, Resource: nr.Resource})
		if err != nil {
			return err
		}
		for _, p := range pending {
			if p.Role == nr.Role && p.ExtendsGrant == 0 {
				return jitgate.Errorf(jitgate.ECONFLICT, "you already have pending request %d for %s/%s", p.ID, nr.Resource, nr.Role)
			}
		}
		live, err := o.tx.ListGrants(jitgate.GrantFilter{Live: true, User: u.Name, Resource: nr.Resource, Role: nr.Role})
		if err != nil {
			return err
		}
		if len(live) > 0 {
			g := live[0]
			return jitgate.Errorf(jitgate.ECONFLICT, "you already hold grant %d for %s/%s until %s; extend it instead",
				g.ID, nr.Resource, nr.Role, g.EndsAt.Format(time.RFC3339))
		}
		r = &jitgate.Request{
			Requester: u.Name, RequesterOwner: u.Owner, Resource: nr.Resource, Role: nr.Role, Duration: nr.Duration, Reason: nr.Reason,
			StartAt: nr.StartAt.UTC(), BreakGlass: nr.BreakGlass, State: jitgate.RequestPending,
			Policy: pol.Name, Steps: len(pol.Steps), CreatedAt: o.now, ExpiresAt: o.now.Add(pol.PendingTTL),
		}
		if nr.StartAt.IsZero() {
			r.StartAt = time.Time{}
		}
		if err := o.tx.InsertRequest(r); err != nil {
			return err
		}
		o.dueAt(r.ExpiresAt)
		details := map[string]string{"resource": r.Resource, "role": r.Role, "duration": dur(r.Duration),
			"reason": r.Reason, "policy": pol.Name}
		if !r.StartAt.IsZero() {
			details["start_at"] = stamp(r.StartAt)
		}
		if u.IsAgent() {
			details["owner"] = u.Owner
		}
		if err := o.audit(u.Name, jitgate.ActionRequestCreated, r.ID, 0, details); err != nil {
			return err
		}
		o.emit(jitgate.Event{Kind: jitgate.EventRequestCreated, Request: r})
		switch {
		case nr.BreakGlass:
			r.PostReviewOpen = true
			if err := o.audit(u.Name, jitgate.ActionBreakGlass, r.ID, 0, map[string]string{"reason": r.Reason}); err != nil {
				return err
			}
			if err := e.approve(o, pol, r, u.Name, "break-glass: activated without prior approval; review pending"); err != nil {
				return err
			}
			o.emit(jitgate.Event{Kind: jitgate.EventBreakGlass, Request: r, Notify: notify})
		case auto:
			return e.approve(o, pol, r, SystemActor, "auto-approved by policy "+pol.Name)
		default:
			o.emit(jitgate.Event{Kind: jitgate.EventRequestPending, Request: r, Notify: notify})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// approve moves r to approved and creates (or, for an extension, moves) its grant.
func (e *Engine) approve(o *op, pol *policy.Policy, r *jitgate.Request, actor, note string) error {
	var g *jitgate.Grant
	if r.ExtendsGrant != 0 {
		var err error
		if g, err = o.tx.GetGrant(r.ExtendsGrant, true); err != nil {
			return err
		}
		if !g.State.Live() {
			return jitgate.Errorf(jitgate.ECONFLICT, "grant %d has already ended (%s)", g.ID, g.State)
		}
		if err := capExtension(pol, g, r.Duration); err != nil {
			return err
		}
		g.EndsAt = g.EndsAt.Add(r.Duration)
		g.Extensions++
		if g.Provision.State == jitgate.ProvisionStateGranted {
			// Grant again, idempotently, so the target learns the new end (a database user's
			// VALID UNTIL, a webhook receiver's expiry). The grant stays granted meanwhile.
			g.Provision.NextAt = o.now
		}
		if err := o.tx.UpdateGrant(g); err != nil {
			return err
		}
		if err := o.audit(actor, jitgate.ActionGrantExtended, r.ID, g.ID, map[string]string{
			"by": dur(r.Duration), "ends_at": stamp(g.EndsAt)}); err != nil {
			return err
		}
		o.emit(jitgate.Event{Kind: jitgate.EventGrantExtended, Grant: g, Request: r, Notify: g.Holders()})
	} else {
		// The clock starts at activation: approval, or the requested start if that is later.
		start := o.now
		if r.StartAt.After(o.now) {
			start = r.StartAt
		}
		g = &jitgate.Grant{
			RequestID: r.ID, User: r.Requester, Owner: r.RequesterOwner, Resource: r.Resource, Role: r.Role, Policy: r.Policy,
			State: jitgate.GrantScheduled, BreakGlass: r.BreakGlass, StartsAt: start, EndsAt: start.Add(r.Duration),
			Provision: jitgate.ProvisionStatus{State: jitgate.ProvisionStateNone},
		}
		if !start.After(o.now) {
			e.activate(o, g)
		}
		if err := o.tx.InsertGrant(g); err != nil {
			return err
		}
		if g.State == jitgate.GrantActive {
			o.dueAt(g.EndsAt)
		} else {
			o.dueAt(g.StartsAt)
		}
		action := jitgate.ActionGrantScheduled
		if g.State == jitgate.GrantActive {
			action = jitgate.ActionGrantActivated
			o.emit(jitgate.Event{Kind: jitgate.EventGrantStarted, Grant: g, Request: r, Notify: g.Holders()})
		}
		if err := o.audit(actor, action, r.ID, g.ID, map[string]string{
			"user": g.User, "resource": g.Resource, "role": g.Role, "starts_at": stamp(g.StartsAt), "ends_at": stamp(g.EndsAt)}); err != nil {
			return err
		}
	}
	r.State = jitgate.RequestApproved
	r.DecidedAt, r.DecidedBy, r.DecisionNote, r.GrantID = o.now, actor, note, g.ID
	if err := o.tx.UpdateRequest(r); err != nil {
		return err
	}
	if err := o.audit(actor, jitgate.ActionRequestApproved, r.ID, g.ID, map[string]string{"note": note}); err != nil {
		return err
	}
	o.emit(jitgate.Event{Kind: jitgate.EventRequestDecided, Request: r, Grant: g, Notify: r.Answerable()})
	return nil
}

// capExtension refuses an extension by d that would make g last longer than the policy's
// maximum, counted from activation (or the scheduled start).
func capExtension(pol *policy.Policy, g *jitgate.Grant, d time.Duration) error {
	base := g.StartsAt
	if !g.ActivatedAt.IsZero() {
		base = g.ActivatedAt
	}
	total := g.EndsAt.Add(d).Sub(base)
	if total > pol.MaxDuration {
		return jitgate.Errorf(jitgate.EINVALID, "extending grant %d by %s would make it last %s; policy %s allows at most %s",
			g.ID, dur(d), dur(total.Round(time.Second)), pol.Name, dur(pol.MaxDuration))
	}
	return nil
}

// activate switches g on at o.now (the caller writes it).
func (e *Engine) activate(o *op, g *jitgate.Grant) {
	g.State = jitgate.GrantActive
	g.ActivatedAt = o.now
	if p, ok := e.provs[g.Resource]; ok && p.Manages(g.Role) {
		g.Provision = jitgate.ProvisionStatus{State: jitgate.ProvisionStateGranting, NextAt: o.now}
		o.provDue = true
	}
}

// end moves a live grant to expired or revoked, queues its deprovisioning, cancels its pending
// extensions and tells subscribers.
func (e *Engine) end(o *op, g *jitgate.Grant, state jitgate.GrantState, actor, reason string) error {
	if !g.State.CanTransition(state) {
		return jitgate.Errorf(jitgate.ECONFLICT, "grant %d is already %s", g.ID, g.State)
	}
	g.State, g.EndedAt, g.EndedBy, g.EndReason = state, o.now, actor, reason
	switch g.Provision.State {
	case jitgate.ProvisionStateGranting, jitgate.ProvisionStateGranted:
		// Revoke even if granting never succeeded: provisioners' Revoke is idempotent, and a
		// grant call may have half-succeeded.
		g.Provision = jitgate.ProvisionStatus{State: jitgate.ProvisionStateRevoking, NextAt: o.now}
		o.provDue = true
	}
	if o.ended != nil {
		*o.ended = append(*o.ended, g)
	} else if err := o.tx.UpdateGrant(g); err != nil {
		return err
	}
	action := jitgate.ActionGrantExpired
	if state == jitgate.GrantRevoked {
		action = jitgate.ActionGrantRevoked
	}
	if err := o.audit(actor, action, g.RequestID, g.ID, map[string]string{"reason": reason, "ended_at": stamp(o.now)}); err != nil {
		return err
	}
	exts := o.exts[g.ID]
	if o.exts == nil {
		var err error
		if exts, err = o.tx.ListRequests(jitgate.RequestFilter{State: jitgate.RequestPending, ExtendsGrant: g.ID}); err != nil {
			return err
		}
	}
	for _, r := range exts {
		if err := e.finish(o, r, jitgate.RequestCancelled, SystemActor, fmt.Sprintf("grant %d ended", g.ID)); err != nil {
			return err
		}
	}
	o.emit(jitgate.Event{Kind: jitgate.EventGrantEnded, Grant: g, Notify: g.Holders()})
	return nil
}

// finish ends a pending request as denied, cancelled or timed out.
func (e *Engine) finish(o *op, r *jitgate.Request, state jitgate.RequestState, actor, note string) error {
	if !r.State.CanTransition(state) {
		return jitgate.Errorf(jitgate.ECONFLICT, "request %d is already %s", r.ID, r.State)
	}
	r.State, r.DecidedAt, r.DecidedBy, r.DecisionNote = state, o.now, actor, note
	if err := o.tx.UpdateRequest(r); err != nil {
		return err
	}
	action := map[jitgate.RequestState]string{
		jitgate.RequestDenied: jitgate.ActionRequestDenied, jitgate.RequestCancelled: jitgate.ActionRequestCancelled,
		jitgate.RequestTimedOut: jitgate.ActionRequestTimedOut,
	}[state]
	if err := o.audit(actor, action, r.ID, 0, map[string]string{"note": note}); err != nil {
		return err
	}
	o.emit(jitgate.Event{Kind: jitgate.EventRequestDecided, Request: r, Notify: []string{r.Requester}})
	return nil
}

// errAfterCommit lets a write commit what it did (e.g. a time-out it noticed) and still report
// an error to the caller.
type errAfterCommit struct{ err error }

// Review records the caller's decision; see jitgate.AccessService.
func (e *Engine) Review(ctx context.Context, id int64, d jitgate.Decision, comment string) (*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	if d != jitgate.Approve && d != jitgate.Deny {
		return nil, jitgate.Errorf(jitgate.EINVALID, "decision must be %q or %q", jitgate.Approve, jitgate.Deny)
	}
	if u.IsAgent() {
		// Whatever its groups and whatever a policy says: an agent asks, people decide.
		return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "%s is an agent; agents never approve or deny", u.Name)
	}
	comment = strings.TrimSpace(comment)
	if d == jitgate.Deny && comment == "" {
		return nil, jitgate.Errorf(jitgate.EINVALID, "a deny needs a comment saying why")
	}
	if n := utf8.RuneCountInString(comment); n > MaxCommentLen {
		return nil, jitgate.Errorf(jitgate.EINVALID, "comment is %d characters long; the limit is %d", n, MaxCommentLen)
	}
	var (
		r     *jitgate.Request
		after errAfterCommit
	)
	err = e.write(ctx, func(o *op) error {
		after = errAfterCommit{}
		if r, err = o.tx.GetRequest(id, true); err != nil {
			return err
		}
		pol := e.pol.Policy(r.Policy)
		if pol == nil {
			return jitgate.Errorf(jitgate.ECONFLICT, "policy %s of request %d is no longer configured", r.Policy, id)
		}
		if u.Name == r.Requester {
			return jitgate.Errorf(jitgate.EFORBIDDEN, "you cannot review your own request")
		}
		// Reviewing is an explicit act on a known id: say plainly that the caller may not,
		// rather than pretending the request does not exist.
		if !pol.IsApproverFor(u, r.RequesterOwner) {
			return jitgate.Errorf(jitgate.EFORBIDDEN, "%s is not an approver of policy %s", u.Name, pol.Name)
		}
		switch {
		case r.State == jitgate.RequestPending:
			if !o.now.Before(r.ExpiresAt) {
				// The scheduler has not got to it yet; time it out now, the same way.
				after.err = jitgate.Errorf(jitgate.ECONFLICT, "request %d timed out at %s", id, r.ExpiresAt.Format(time.RFC3339))
				return e.finish(o, r, jitgate.RequestTimedOut, SystemActor, "no decision within the pending TTL")
			}
			return e.review(ctx, o, pol, u, r, d, comment)
		case r.State == jitgate.RequestApproved && r.PostReviewOpen:
			return e.postReview(o, pol, u, r, d, comment)
		default:
			return jitgate.Errorf(jitgate.ECONFLICT, "request %d is already %s", id, r.State)
		}
	})
	if err != nil {
		return nil, err
	}
	if after.err != nil {
		return nil, after.err
	}
	return r, nil
}

func (e *Engine) review(ctx context.Context, o *op, pol *policy.Policy, u *jitgate.User, r *jitgate.Request, d jitgate.Decision, comment string) error {
	if !pol.CanApprove(u, r.Requester, r.RequesterOwner, r.Step) {
		return jitgate.Errorf(jitgate.EFORBIDDEN, "%s is not an approver at step %d of policy %s (needs %s)",
			u.Name, r.Step+1, pol.Name, pol.Steps[r.Step].String())
	}
	approvals := map[string]bool{}
	for _, rv := range r.Reviews {
		if rv.PostHoc || rv.Reviewer != u.Name {
			if !rv.PostHoc && rv.Step == r.Step && rv.Decision == jitgate.Approve {
				approvals[rv.Reviewer] = true
			}
			continue
		}
		if rv.Step == r.Step {
			return jitgate.Errorf(jitgate.ECONFLICT, "you already reviewed request %d at step %d", r.ID, r.Step+1)
		}
		// Separation of duties: one person approves at most one step of a request.
		return jitgate.Errorf(jitgate.EFORBIDDEN, "you approved step %d of request %d; step %d needs another approver", rv.Step+1, r.ID, r.Step+1)
	}
	rv := &jitgate.Review{RequestID: r.ID, Reviewer: u.Name, Step: r.Step, Decision: d, Comment: comment, CreatedAt: o.now}
	if err := o.tx.InsertReview(rv); err != nil {
		return err
	}
	r.Reviews = append(r.Reviews, rv)
	if err := o.audit(u.Name, jitgate.ActionRequestReviewed, r.ID, 0, map[string]string{
		"decision": string(d), "step": fmt.Sprint(r.Step + 1), "comment": comment}); err != nil {
		return err
	}
	if d == jitgate.Deny {
		return e.finish(o, r, jitgate.RequestDenied, u.Name, comment)
	}
	// Count people, not reviews or group memberships: each approver once per step.
	approvals[u.Name] = true
	if len(approvals) < pol.Steps[r.Step].Min {
		// Bump the version even though nothing else changed, so two approvers racing without
		// row locks still serialize on this row.
		return o.tx.UpdateRequest(r)
	}
	if r.Step+1 < len(pol.Steps) {
		r.Step++
		if err := o.tx.UpdateRequest(r); err != nil {
			return err
		}
		if err := o.audit(u.Name, jitgate.ActionRequestStepPassed, r.ID, 0, map[string]string{"step": fmt.Sprint(r.Step)}); err != nil {
			return err
		}
		o.emit(jitgate.Event{Kind: jitgate.EventRequestPending, Request: r, Notify: e.approvers(ctx, pol, r.Step, r.Requester, r.RequesterOwner)})
		return nil
	}
	return e.approve(o, pol, r, u.Name, fmt.Sprintf("approved by %s", strings.Join(slices.Sorted(mapKeys(approvals)), ", ")))
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// postReview records the after-the-fact review of a break-glass request by an approver of its
// policy (Review checked that). A deny revokes the grant at once if it is still live.
func (e *Engine) postReview(o *op, pol *policy.Policy, u *jitgate.User, r *jitgate.Request, d jitgate.Decision, comment string) error {
	rv := &jitgate.Review{RequestID: r.ID, Reviewer: u.Name, Step: 0, Decision: d, Comment: comment, CreatedAt: o.now, PostHoc: true}
	if err := o.tx.InsertReview(rv); err != nil {
		return err
	}
	r.Reviews = append(r.Reviews, rv)
	r.PostReviewOpen = false
	if err := o.tx.UpdateRequest(r); err != nil {
		return err
	}
	if err := o.audit(u.Name, jitgate.ActionPostReview, r.ID, r.GrantID, map[string]string{"decision": string(d), "comment": comment}); err != nil {
		return err
	}
	if d == jitgate.Deny && r.GrantID != 0 {
		g, err := o.tx.GetGrant(r.GrantID, true)
		if err != nil {
			return err
		}
		if g.State.Live() {
			return e.end(o, g, jitgate.GrantRevoked, u.Name, "break-glass rejected in review: "+comment)
		}
	}
	return nil
}

// Cancel withdraws a pending request; see jitgate.AccessService.
func (e *Engine) Cancel(ctx context.Context, id int64) (*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	var r *jitgate.Request
	err = e.write(ctx, func(o *op) error {
		if r, err = o.tx.GetRequest(id, true); err != nil {
			return err
		}
		if !e.canSee(u, r.Requester, r.RequesterOwner, e.pol.Policy(r.Policy)) {
			return jitgate.Errorf(jitgate.ENOTFOUND, "request %d not found", id)
		}
		if u.Name != r.Requester && (r.RequesterOwner == "" || u.Name != r.RequesterOwner) && !e.pol.IsAdmin(u.Name) {
			return jitgate.Errorf(jitgate.EFORBIDDEN, "only %s or an admin may cancel request %d", r.Requester, id)
		}
		return e.finish(o, r, jitgate.RequestCancelled, u.Name, "cancelled by "+u.Name)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Extend asks to move a grant's end; see jitgate.AccessService.
func (e *Engine) Extend(ctx context.Context, grantID int64, d time.Duration, reason string) (*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	reason = strings.TrimSpace(reason)
	var r *jitgate.Request
	err = e.write(ctx, func(o *op) error {
		g, err := o.tx.GetGrant(grantID, true)
		if err != nil {
			return err
		}
		if g.User != u.Name {
			if !e.canSee(u, g.User, g.Owner, e.pol.Policy(g.Policy)) {
				return jitgate.Errorf(jitgate.ENOTFOUND, "grant %d not found", grantID)
			}
			return jitgate.Errorf(jitgate.EFORBIDDEN, "only %s may extend grant %d", g.User, grantID)
		}
		if !g.State.Live() {
			return jitgate.Errorf(jitgate.ECONFLICT, "grant %d has already ended (%s)", grantID, g.State)
		}
		pol, err := e.pol.Match(u, g.Resource, g.Role)
		if err != nil {
			return err
		}
		in := policy.Input{Requester: u, Resource: g.Resource, Role: g.Role, Duration: d, Reason: reason, Extension: true, Now: o.now}
		if err := pol.Check(in); err != nil {
			return err
		}
		if err := capExtension(pol, g, d); err != nil {
			return err
		}
		pending, err := o.tx.ListRequests(jitgate.RequestFilter{State: jitgate.RequestPending, ExtendsGrant: g.ID})
		if err != nil {
			return err
		}
		if len(pending) > 0 {
			return jitgate.Errorf(jitgate.ECONFLICT, "extension request %d for grant %d is already pending", pending[0].ID, g.ID)
		}
		r = &jitgate.Request{
			Requester: u.Name, RequesterOwner: u.Owner, Resource: g.Resource, Role: g.Role, Duration: d, Reason: reason,
			ExtendsGrant: g.ID, State: jitgate.RequestPending, Policy: pol.Name, Steps: len(pol.Steps),
			CreatedAt: o.now, ExpiresAt: o.now.Add(pol.PendingTTL),
		}
		// A pending extension must not outlive the grant it extends.
		if g.EndsAt.Before(r.ExpiresAt) {
			r.ExpiresAt = g.EndsAt
		}
		if err := o.tx.InsertRequest(r); err != nil {
			return err
		}
		o.dueAt(r.ExpiresAt)
		if err := o.audit(u.Name, jitgate.ActionRequestCreated, r.ID, g.ID, map[string]string{
			"resource": r.Resource, "role": r.Role, "extends_grant": fmt.Sprint(g.ID), "duration": dur(d),
			"reason": reason, "policy": pol.Name}); err != nil {
			return err
		}
		o.emit(jitgate.Event{Kind: jitgate.EventRequestCreated, Request: r})
		auto, aerr := pol.AutoApproved(in)
		if aerr != nil {
			e.log.Warn("auto-approve condition failed; the extension waits for approvers", "policy", pol.Name, "err", aerr)
		}
		if auto {
			return e.approve(o, pol, r, SystemActor, "auto-approved by policy "+pol.Name)
		}
		o.emit(jitgate.Event{Kind: jitgate.EventRequestPending, Request: r, Notify: e.approvers(ctx, pol, 0, u.Name, u.Owner)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Revoke ends a live grant now; see jitgate.AccessService.
func (e *Engine) Revoke(ctx context.Context, grantID int64, reason string) (*jitgate.Grant, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "revoked by " + u.Name
	}
	if n := utf8.RuneCountInString(reason); n > MaxCommentLen {
		return nil, jitgate.Errorf(jitgate.EINVALID, "reason is %d characters long; the limit is %d", n, MaxCommentLen)
	}
	var g *jitgate.Grant
	err = e.write(ctx, func(o *op) error {
		if g, err = o.tx.GetGrant(grantID, true); err != nil {
			return err
		}
		pol := e.pol.Policy(g.Policy)
		if !e.canSee(u, g.User, g.Owner, pol) {
			return jitgate.Errorf(jitgate.ENOTFOUND, "grant %d not found", grantID)
		}
		if !g.State.Live() {
			return jitgate.Errorf(jitgate.ECONFLICT, "grant %d has already ended (%s at %s)", grantID, g.State, g.EndedAt.Format(time.RFC3339))
		}
		return e.end(o, g, jitgate.GrantRevoked, u.Name, reason)
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// canSee reports whether u may see (and so act on) a request or grant of owner under pol:
// the owner, the person who answers for an agent owner (agentOwner), an admin, or an approver
// of the policy. Approvers may also revoke. An agent sees only its own.
func (e *Engine) canSee(u *jitgate.User, owner, agentOwner string, pol *policy.Policy) bool {
	return u.Name == owner || (agentOwner != "" && u.Name == agentOwner) || e.isAdmin(u) ||
		(pol != nil && pol.IsApproverFor(u, agentOwner))
}
