package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jitgate/jitgate"
)

// Killer is a protocol's live session as the Registry sees it.
type Killer interface {
	// Kill ends the session for reason: stop what runs upstream, tell the client why where
	// the protocol can, close both sides. Only the first call counts. It must not block: it
	// runs inside the engine's event delivery (a revoke's API call waits for it).
	Kill(reason string)
}

// GrantReader reads a grant's current state (the engine's GatewayService.GrantByID).
type GrantReader func(ctx context.Context, id int64) (*jitgate.Grant, error)

// Parked is what the registry needs of a gateway's pool of kept upstream connections: which
// grants it holds connections of (closing those past their time), and dropping a grant's.
type Parked interface {
	Expire(now time.Time) []int64
	Drop(grant int64)
}

// RegistryOptions configures a Registry.
type RegistryOptions struct {
	// Grants re-reads a grant for the sweep.
	Grants GrantReader
	// Parked, if set, has its grants swept too and dropped when they end.
	Parked Parked
	// SweepEvery is how often live sessions' grants are re-read from the store, so that a
	// revoke or extension made by another server instance on the same store takes effect
	// (default 1s). Events from this instance act at once (OnEvent).
	SweepEvery time.Duration
	Clock      jitgate.Clock
	Logger     *slog.Logger
}

// Registry keeps a gateway's live sessions and ends each no later than its grant: at the
// grant's end to the clock's second, at once on this instance's revoke or expiry events
// (OnEvent), and within SweepEvery of a change made on another instance (the sweep). An
// extension moves the deadline of the grant's sessions.
type Registry struct {
	o     RegistryOptions
	mu    sync.Mutex
	live  map[*Tracked]struct{}
	shut  bool
	stop  chan struct{}
	swept chan struct{}
}

// Tracked is one session in a Registry.
type Tracked struct {
	r     *Registry
	s     Killer
	grant int64

	mu       sync.Mutex
	deadline time.Time
	reset    chan struct{}
	done     chan struct{}
	removed  bool
}

// NewRegistry returns a Registry and starts its sweep.
func NewRegistry(o RegistryOptions) *Registry {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Second
	}
	r := &Registry{o: o, live: map[*Tracked]struct{}{}, stop: make(chan struct{}), swept: make(chan struct{})}
	go r.sweep()
	return r
}

// Add tracks session s of grant g, ending it at g's end, and reports false once the registry
// is shutting down (the protocol then refuses the session).
func (r *Registry) Add(s Killer, g *jitgate.Grant) (*Tracked, bool) {
	t := &Tracked{r: r, s: s, grant: g.ID, deadline: g.EndsAt, reset: make(chan struct{}, 1), done: make(chan struct{})}
	r.mu.Lock()
	if r.shut {
		r.mu.Unlock()
		return nil, false
	}
	r.live[t] = struct{}{}
	r.mu.Unlock()
	go t.watch()
	return t, true
}

// Remove stops tracking the session (its relay is over); calling it again does nothing.
func (t *Tracked) Remove() {
	t.mu.Lock()
	if t.removed {
		t.mu.Unlock()
		return
	}
	t.removed = true
	close(t.done)
	t.mu.Unlock()
	t.r.mu.Lock()
	delete(t.r.live, t)
	t.r.mu.Unlock()
}

// Deadline returns the session's end: its grant's, as last known.
func (t *Tracked) Deadline() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deadline
}

// setDeadline moves the session's end (an extension).
func (t *Tracked) setDeadline(d time.Time) {
	t.mu.Lock()
	same := t.deadline.Equal(d)
	t.deadline = d
	t.mu.Unlock()
	if same {
		return
	}
	select {
	case t.reset <- struct{}{}:
	default:
	}
}

// watch kills the session at its deadline, to the clock's second.
func (t *Tracked) watch() {
	clock := t.r.o.Clock
	for {
		d := t.Deadline()
		wait := d.Sub(clock.Now())
		if wait <= 0 {
			t.s.Kill(ExpiredReason(t.grant, d))
			return
		}
		select {
		case <-t.done:
			return
		case <-t.reset:
		case <-clock.After(wait):
		}
	}
}

// ExpiredReason is why a session ends at its grant's end.
func ExpiredReason(grant int64, at time.Time) string {
	return fmt.Sprintf("grant %d expired at %s", grant, jitgate.FormatTime(at))
}

// EndedReason is why a session ends when its grant ended (expired or revoked).
func EndedReason(g *jitgate.Grant) string {
	if g.State == jitgate.GrantExpired {
		return ExpiredReason(g.ID, g.EndsAt)
	}
	return fmt.Sprintf("grant %d was revoked by %s: %s", g.ID, g.EndedBy, g.EndReason)
}

// OnEvent ends or re-times the sessions of a grant that ended or was extended (subscribe it to
// the engine), and drops the grant's parked connections when it ended.
func (r *Registry) OnEvent(ev jitgate.Event) {
	if ev.Grant == nil || (ev.Kind != jitgate.EventGrantEnded && ev.Kind != jitgate.EventGrantExtended) {
		return
	}
	if ev.Kind == jitgate.EventGrantEnded && r.o.Parked != nil {
		// After the kills below, which a session about to park checks under the pool's lock.
		defer r.o.Parked.Drop(ev.Grant.ID)
	}
	for _, t := range r.ofGrant(ev.Grant.ID) {
		if ev.Kind == jitgate.EventGrantEnded {
			t.s.Kill(EndedReason(ev.Grant))
		} else {
			t.setDeadline(ev.Grant.EndsAt)
		}
	}
}

func (r *Registry) ofGrant(id int64) []*Tracked {
	r.mu.Lock()
	defer r.mu.Unlock()
	var hit []*Tracked
	for t := range r.live {
		if t.grant == id {
			hit = append(hit, t)
		}
	}
	return hit
}

// sweep re-reads the grants of live sessions (and of parked connections) every SweepEvery and
// applies what changed: an ended grant ends its sessions, a moved end moves their deadline.
// It is what makes a revoke on another server instance reach this one's sessions within a
// second.
func (r *Registry) sweep() {
	defer close(r.swept)
	tick := time.NewTicker(r.o.SweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		grants := map[int64]bool{}
		if r.o.Parked != nil {
			for _, id := range r.o.Parked.Expire(r.o.Clock.Now()) {
				grants[id] = true
			}
		}
		r.mu.Lock()
		for t := range r.live {
			grants[t.grant] = true
		}
		r.mu.Unlock()
		for id := range grants {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			g, err := r.o.Grants(ctx, id)
			cancel()
			if err != nil {
				// Store unreachable: sessions keep their known deadline (the grant's end still
				// closes them); new sessions are refused meanwhile.
				r.o.Logger.Warn("gateway: cannot re-read grant", "grant", id, "err", err)
				continue
			}
			if g.State.Live() {
				for _, t := range r.ofGrant(id) {
					t.setDeadline(g.EndsAt)
				}
			} else {
				r.OnEvent(jitgate.Event{Kind: jitgate.EventGrantEnded, Grant: g})
			}
		}
	}
}

// Len returns the number of live sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// Shutdown refuses new sessions and kills every live one for reason.
func (r *Registry) Shutdown(reason string) {
	r.mu.Lock()
	r.shut = true
	all := make([]*Tracked, 0, len(r.live))
	for t := range r.live {
		all = append(all, t)
	}
	r.mu.Unlock()
	for _, t := range all {
		t.s.Kill(reason)
	}
}

// Close stops the sweep (after Shutdown, once the sessions are gone).
func (r *Registry) Close() {
	close(r.stop)
	<-r.swept
}

// endRecordWait bounds one attempt to record a session's end (queued behind other writes
// included); endRecordRetries is how many more attempts follow a failed one, the first after
// endRecordPause and each next after five times the pause before (1 s, 5 s).
const (
	endRecordWait    = 30 * time.Second
	endRecordRetries = 2
)

var endRecordPause = time.Second // a variable for tests

// RecordEnd records the end of a gateway session: the recorder's statements first (they enter
// the chain before the session.ended event), then the end itself, and logs it. Protocols call
// it last, with info's counters and EndReason set.
//
// A store that is slow (writes queue behind a thousand grants ending at once) or briefly
// unreachable must not leave the session live in the store for good: each attempt may wait
// endRecordWait, and a failed one is tried again endRecordRetries times, after a pause. If
// every attempt fails the session stays live in the store until this instance is recovered
// (restarted, or found dead by another), which ends it there.
func RecordEnd(eng Engine, rec *Recorder, log *slog.Logger, info *jitgate.Session) {
	rec.Sync()
	for attempt, pause := 0, endRecordPause; ; attempt, pause = attempt+1, 5*pause {
		ctx, cancel := context.WithTimeout(context.Background(), endRecordWait)
		err := eng.EndSession(ctx, info)
		cancel()
		if err == nil {
			break
		}
		if attempt == endRecordRetries {
			log.Error("gateway: record session end; the store shows the session live until this instance is recovered",
				"session", info.ID, "attempts", attempt+1, "err", err)
			break
		}
		log.Warn("gateway: record session end; trying again", "session", info.ID, "in", pause, "err", err)
		time.Sleep(pause)
	}
	log.Info("gateway: session ended", "session", info.ID, "grant", info.GrantID, "resource", info.Resource, "reason", info.EndReason,
		"statements", info.Statements, "bytes_in", info.BytesIn, "bytes_out", info.BytesOut)
}
