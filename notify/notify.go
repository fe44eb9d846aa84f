// Package notify tells people what jitgate did: approvers when a request waits for them (and
// loudly when someone breaks glass), requesters when their request is decided, owners when
// their grant starts, is about to expire and ends. Messages go to sinks (a Slack incoming
// webhook, generic HMAC-signed JSON webhooks) asynchronously: each sink has a bounded queue
// and a worker that retries failed deliveries with backoff. A slow or dead receiver never
// blocks or fails the request that caused the message; what cannot be delivered is logged
// and counted in metrics.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/textsafe"
	"github.com/prometheus/client_golang/prometheus"
)

// Message kinds.
const (
	KindRequestPending = "request.pending"
	KindBreakGlass     = "request.break_glass"
	KindRequestDecided = "request.decided"
	KindGrantStarted   = "grant.started"
	KindGrantExpiring  = "grant.expiring"
	KindGrantEnded     = "grant.ended"
	// KindRevocationUnverified is an alert: access was still there after a revoke.
	KindRevocationUnverified = "grant.revocation_unverified"
)

// Message is one notification, as sinks receive it.
type Message struct {
	// ID is stable for one happening (a receiver can drop repeats): kind, request, grant and
	// state.
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Recipients are the jitgate users the message is for.
	Recipients []string `json:"recipients"`
	// Urgent marks messages every recipient must see at once (break-glass, alerts).
	Urgent bool      `json:"urgent,omitempty"`
	Title  string    `json:"title"`
	Text   string    `json:"text,omitempty"`
	URL    string    `json:"url,omitempty"`
	Time   time.Time `json:"time"`
	// Request and Grant are the request and grant the message is about, when there is one.
	Request *jitgate.Request `json:"request,omitempty"`
	Grant   *jitgate.Grant   `json:"grant,omitempty"`
}

// Sink delivers messages somewhere.
type Sink interface {
	// Name identifies the sink in logs and metrics ("slack", "webhook:hooks.internal").
	Name() string
	// Send delivers m once; an error means it should be retried.
	Send(ctx context.Context, m *Message) error
}

// GrantLister lists live grants for the expiry warnings (access.Engine does, as the system).
type GrantLister func(ctx context.Context) ([]*jitgate.Grant, error)

// Options configures a Notifier.
type Options struct {
	Sinks []Sink
	// BaseURL, if set, is the web UI's address; messages link to the request or grant there.
	BaseURL string
	// ExpiryWarning is how long before a grant's end its owner is warned; zero disables.
	ExpiryWarning time.Duration
	// Grants lists live grants for the expiry warnings.
	Grants GrantLister
	Clock  jitgate.Clock
	Logger *slog.Logger
	// Outbox stores the messages until delivered (required with sinks: the engine).
	Outbox Outbox
	// Lease is how long a claimed message is this instance's to deliver (default 1m): longer
	// than a send's timeout (10s), and how long a dead instance's claims wait before another
	// instance takes them.
	Lease time.Duration
	// Poll is how often the workers look for due messages besides being woken (default 1s):
	// messages stored by other instances, and retries coming due.
	Poll time.Duration
	// Attempts bounds the deliveries of one message (default 8); Backoff is the wait after the
	// nth failure (default 1s doubling to 1m).
	Attempts int
	Backoff  func(n int) time.Duration
	// Registerer, if set, gets the notification metrics.
	Registerer prometheus.Registerer
}

// Outbox is where messages wait until delivered (the engine's, in the store): written with
// the change that caused them, claimed by one server instance at a time, retried, and left to
// another instance when the one delivering dies.
type Outbox interface {
	EnqueueOutbox(ctx context.Context, items []*jitgate.OutboxItem) error
	ClaimOutbox(ctx context.Context, sink string, lease time.Duration, limit int) ([]*jitgate.OutboxItem, error)
	FinishOutbox(ctx context.Context, id int64, delivered bool, next time.Time, lastErr string) error
	PurgeOutbox(ctx context.Context, keep time.Duration) (int64, error)
}

// OutboxKeep is how long delivered and given-up messages stay in the outbox (for a look at
// what was sent, and so that a warning is not queued twice) before they are purged.
const OutboxKeep = 7 * 24 * time.Hour

// Notifier turns engine events into messages, stores them in the outbox (see Effects), and
// delivers them to its sinks.
type Notifier struct {
	o     Options
	sinks []*sinkRef

	sent, failed   *prometheus.CounterVec
	nSent, nFailed atomic.Int64

	mu     sync.Mutex
	warned map[int64]time.Time // grant → the end it was warned about
	wg     sync.WaitGroup
}

// sinkRef is a sink with the id its outbox items carry, and the signal that some are due.
type sinkRef struct {
	id   string
	sink Sink
	kick chan struct{}
}

// New returns a Notifier; Start runs its workers. o.Outbox is required when there are sinks.
func New(o Options) *Notifier {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Lease <= 0 {
		o.Lease = time.Minute
	}
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	if o.Backoff == nil {
		o.Backoff = func(n int) time.Duration { return min(time.Second<<min(n-1, 10), time.Minute) }
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	n := &Notifier{o: o, warned: map[int64]time.Time{},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_notifications_sent_total", Help: "Notifications delivered, by sink and kind."}, []string{"sink", "kind"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_notifications_failed_total", Help: "Notifications given up after every retry failed, by sink and kind."}, []string{"sink", "kind"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(n.sent, n.failed)
	}
	for i, s := range o.Sinks {
		n.sinks = append(n.sinks, &sinkRef{id: SinkID(s, i), sink: s, kick: make(chan struct{}, 1)})
	}
	return n
}

// SinkID names a sink in the outbox: its kind and a digest of where it delivers (so that a
// message queued for one webhook is never sent to another after the config changed), or its
// place in the list for sinks that do not say where.
func SinkID(s Sink, i int) string {
	if w, ok := s.(interface{ Target() string }); ok {
		sum := sha256.Sum256([]byte(w.Target()))
		return s.Name() + ":" + hex.EncodeToString(sum[:6])
	}
	return fmt.Sprintf("%s:%d", s.Name(), i)
}

// Start runs the delivery workers and the expiry watcher until ctx ends; Wait waits for them.
func (n *Notifier) Start(ctx context.Context) {
	n.StartWorkers(ctx)
	if n.o.ExpiryWarning > 0 && n.o.Grants != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.watchExpiry(ctx) }()
	}
}

// StartWorkers runs only the delivery workers (tests drive CheckExpiring by hand).
func (n *Notifier) StartWorkers(ctx context.Context) {
	for _, sr := range n.sinks {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.deliver(ctx, sr) }()
	}
	if len(n.sinks) > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.purge(ctx) }()
	}
}

// purge deletes old delivered and given-up messages every hour (any instance may; it is
// idempotent).
func (n *Notifier) purge(ctx context.Context) {
	for {
		if k, err := n.o.Outbox.PurgeOutbox(ctx, OutboxKeep); err != nil && ctx.Err() == nil {
			n.o.Logger.Warn("cannot purge the outbox", "err", err)
		} else if k > 0 {
			n.o.Logger.Info("outbox purged", "messages", k)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}

// Wait returns once the workers started by Start have stopped.
func (n *Notifier) Wait() { n.wg.Wait() }

// Effects returns the outbox items of ev: its message for each sink. Give it to the engine
// (engine.SetEffects(n.Effects)), which stores them in the change's transaction. A change
// announced by another instance has none here: that instance stored them.
func (n *Notifier) Effects(ev jitgate.Event) []*jitgate.OutboxItem {
	if ev.Remote {
		return nil
	}
	m := n.message(ev)
	if m == nil {
		return nil
	}
	return n.items(m)
}

func (n *Notifier) items(m *Message) []*jitgate.OutboxItem {
	if m.Time.IsZero() {
		m.Time = n.o.Clock.Now().UTC()
	}
	payload, err := json.Marshal(m)
	if err != nil {
		n.o.Logger.Error("notification cannot be encoded", "kind", m.Kind, "id", m.ID, "err", err)
		return nil
	}
	now := time.Now()
	var out []*jitgate.OutboxItem
	for _, sr := range n.sinks {
		out = append(out, &jitgate.OutboxItem{Key: m.ID + "|" + sr.id, Sink: sr.id, Payload: string(payload), CreatedAt: now, NextAt: now})
	}
	return out
}

// Handle wakes the delivery workers after a change committed (subscribe it to the engine:
// engine.Subscribe(n.Handle)). It never blocks.
func (n *Notifier) Handle(ev jitgate.Event) {
	if ev.Remote {
		return // the instance that made the change delivers its messages
	}
	n.kick()
}

func (n *Notifier) kick() {
	for _, sr := range n.sinks {
		select {
		case sr.kick <- struct{}{}:
		default:
		}
	}
}

// Post stores m in the outbox for every sink (once: an m.ID queued before is left out, so
// several instances may post the same warning) and wakes the workers.
func (n *Notifier) Post(m *Message) {
	items := n.items(m)
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.o.Outbox.EnqueueOutbox(ctx, items); err != nil {
		n.o.Logger.Error("notification not stored", "kind", m.Kind, "id", m.ID, "err", err)
		return
	}
	n.kick()
}

// Stats returns how many messages this instance delivered and gave up, over all sinks.
func (n *Notifier) Stats() (sent, failed int64) {
	return n.nSent.Load(), n.nFailed.Load()
}

// deliver claims sr's due messages from the outbox and sends them, until ctx ends; it looks
// again when woken and every Poll (messages other instances stored, retries coming due).
func (n *Notifier) deliver(ctx context.Context, sr *sinkRef) {
	const batch = 20
	for {
		items, err := n.o.Outbox.ClaimOutbox(ctx, sr.id, n.o.Lease, batch)
		if err != nil && ctx.Err() == nil {
			n.o.Logger.Warn("cannot claim notifications; retrying", "sink", sr.sink.Name(), "err", err)
		}
		for _, it := range items {
			n.send(ctx, sr, it)
		}
		if len(items) == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-sr.kick:
		case <-time.After(n.o.Poll):
		}
	}
}

// send makes one delivery attempt of it and records the outcome: delivered, due again after
// the backoff, or given up after the configured attempts. An attempt cut by shutdown is
// recorded neither way: the claim's lease runs out and an instance delivers it then.
func (n *Notifier) send(ctx context.Context, sr *sinkRef, it *jitgate.OutboxItem) {
	var m Message
	if err := json.Unmarshal([]byte(it.Payload), &m); err != nil {
		n.finish(ctx, it, false, time.Time{}, "undecodable: "+err.Error())
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := sr.sink.Send(cctx, &m)
	cancel()
	if err == nil {
		n.finish(ctx, it, true, time.Time{}, "")
		n.sent.WithLabelValues(sr.sink.Name(), m.Kind).Inc()
		n.nSent.Add(1)
		return
	}
	if ctx.Err() != nil {
		return
	}
	attempt := it.Attempts + 1
	if attempt >= n.o.Attempts {
		n.finish(ctx, it, false, time.Time{}, err.Error())
		n.failed.WithLabelValues(sr.sink.Name(), m.Kind).Inc()
		n.nFailed.Add(1)
		n.o.Logger.Error("notification failed; giving up", "sink", sr.sink.Name(), "kind", m.Kind, "id", m.ID, "attempts", attempt, "err", err)
		return
	}
	wait := n.o.Backoff(attempt)
	n.o.Logger.Warn("notification failed; will retry", "sink", sr.sink.Name(), "kind", m.Kind, "id", m.ID, "attempt", attempt, "in", wait, "err", err)
	n.finish(ctx, it, false, time.Now().Add(wait), err.Error())
}

func (n *Notifier) finish(ctx context.Context, it *jitgate.OutboxItem, delivered bool, next time.Time, lastErr string) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := n.o.Outbox.FinishOutbox(fctx, it.ID, delivered, next, lastErr); err != nil {
		// The claim's lease runs out and the message is tried again (a delivered one may be
		// sent twice: receivers get its id to tell).
		n.o.Logger.Error("cannot record a notification's delivery", "id", it.ID, "err", err)
	}
}

// watchExpiry warns each active grant's owner once, ExpiryWarning before its end (again if an
// extension moves the end). It looks every quarter of the lead time, at most every 30s.
func (n *Notifier) watchExpiry(ctx context.Context) {
	every := min(max(n.o.ExpiryWarning/4, time.Second), 30*time.Second)
	for {
		n.CheckExpiring(ctx)
		select {
		case <-ctx.Done():
			return
		case <-n.o.Clock.After(every):
		}
	}
}

// CheckExpiring posts a warning for every active grant that ends within ExpiryWarning and has
// not been warned about that end yet.
func (n *Notifier) CheckExpiring(ctx context.Context) {
	gs, err := n.o.Grants(ctx)
	if err != nil {
		n.o.Logger.Warn("expiry warnings: cannot list grants", "err", err)
		return
	}
	now := n.o.Clock.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	live := map[int64]bool{}
	for _, g := range gs {
		live[g.ID] = true
		left := g.EndsAt.Sub(now)
		if g.State != jitgate.GrantActive || left <= 0 || left > n.o.ExpiryWarning || n.warned[g.ID].Equal(g.EndsAt) {
			continue
		}
		n.warned[g.ID] = g.EndsAt
		n.Post(&Message{ID: fmt.Sprintf("%s:%d:%d", KindGrantExpiring, g.ID, g.EndsAt.Unix()), Kind: KindGrantExpiring,
			Recipients: g.Holders(), Grant: g, URL: n.link("grants", g.ID),
			Title: fmt.Sprintf("%s to %s/%s ends in %s", whose(g), g.Resource, g.Role, jitgate.FormatDuration(left.Round(time.Second))),
			Text:  fmt.Sprintf("Grant %d ends at %s. Need more time? jitgate extend g%d --by 30m --reason \"...\"", g.ID, g.EndsAt.Format(time.RFC3339), g.ID)})
	}
	for id := range n.warned {
		if !live[id] {
			delete(n.warned, id)
		}
	}
}

// whose starts a grant message: "Your access", or for an agent's grant (whose owner hears of
// it too) "triage-bot's access (agent of alice)".
func whose(g *jitgate.Grant) string {
	if g.Owner == "" {
		return "Your access"
	}
	return fmt.Sprintf("%s's access (agent of %s)", g.User, g.Owner)
}

// agentOf is " by triage-bot (agent of alice)" for an agent's request, empty for a person's.
func agentOf(name, owner string) string {
	if owner == "" {
		return ""
	}
	return fmt.Sprintf(" by %s (agent of %s)", name, owner)
}

func (n *Notifier) link(kind string, id int64) string {
	if n.o.BaseURL == "" {
		return ""
	}
	return fmt.Sprintf("%s/%s/%d", n.o.BaseURL, kind, id)
}

// message builds the message for ev, or nil if nobody needs to hear of it.
func (n *Notifier) message(ev jitgate.Event) *Message {
	r, g := ev.Request, ev.Grant
	recipients := append([]string(nil), ev.Notify...)
	sort.Strings(recipients)
	switch ev.Kind {
	case jitgate.EventRequestPending:
		what := "requests"
		if r.ExtendsGrant != 0 {
			what = fmt.Sprintf("asks to extend grant %d on", r.ExtendsGrant)
		}
		step := ""
		if r.Steps > 1 {
			step = fmt.Sprintf(" (step %d of %d)", r.Step+1, r.Steps)
		}
		return &Message{ID: fmt.Sprintf("%s:%d:%d", KindRequestPending, r.ID, r.Step), Kind: KindRequestPending, Recipients: recipients,
			Request: r, URL: n.link("requests", r.ID),
			Title: fmt.Sprintf("%s %s %s/%s for %s%s", r.RequesterLabel(), what, r.Resource, r.Role, jitgate.FormatDuration(r.Duration), step),
			Text:  fmt.Sprintf("Reason: %s\nReview: jitgate approve %d  |  jitgate deny %d --comment \"...\"", textsafe.Text(r.Reason), r.ID, r.ID)}
	case jitgate.EventBreakGlass:
		return &Message{ID: fmt.Sprintf("%s:%d", KindBreakGlass, r.ID), Kind: KindBreakGlass, Recipients: recipients, Urgent: true,
			Request: r, Grant: g, URL: n.link("requests", r.ID),
			Title: fmt.Sprintf("BREAK-GLASS: %s took %s/%s for %s", r.RequesterLabel(), r.Resource, r.Role, jitgate.FormatDuration(r.Duration)),
			Text:  fmt.Sprintf("Reason: %s\nAccess is already active. An after-the-fact review is required: jitgate approve %d, or deny it (which revokes the grant).", textsafe.Text(r.Reason), r.ID)}
	case jitgate.EventRequestDecided:
		text := textsafe.Text(r.DecisionNote)
		if r.DecidedBy != "" {
			text = fmt.Sprintf("By %s: %s", r.DecidedBy, text)
		}
		return &Message{ID: fmt.Sprintf("%s:%d:%s", KindRequestDecided, r.ID, r.State), Kind: KindRequestDecided, Recipients: recipients,
			Request: r, Grant: g, URL: n.link("requests", r.ID),
			Title: fmt.Sprintf("Request %d%s for %s/%s was %s", r.ID, agentOf(r.Requester, r.RequesterOwner), r.Resource, r.Role, strings.ReplaceAll(string(r.State), "_", " ")),
			Text:  text}
	case jitgate.EventGrantStarted:
		return &Message{ID: fmt.Sprintf("%s:%d", KindGrantStarted, g.ID), Kind: KindGrantStarted, Recipients: recipients, Grant: g,
			URL:   n.link("grants", g.ID),
			Title: fmt.Sprintf("%s to %s/%s is active until %s", whose(g), g.Resource, g.Role, g.EndsAt.Format(time.RFC3339)),
			Text:  fmt.Sprintf("Grant %d. Connect with: jitgate connect %s --role %s", g.ID, g.Resource, g.Role)}
	case jitgate.EventGrantEnded:
		how := "expired"
		if g.State == jitgate.GrantRevoked {
			how = "was revoked by " + g.EndedBy
		}
		return &Message{ID: fmt.Sprintf("%s:%d", KindGrantEnded, g.ID), Kind: KindGrantEnded, Recipients: recipients, Grant: g,
			URL:   n.link("grants", g.ID),
			Title: fmt.Sprintf("%s to %s/%s %s", whose(g), g.Resource, g.Role, how),
			Text:  fmt.Sprintf("Grant %d ended: %s. Live sessions were closed.", g.ID, textsafe.Text(g.EndReason))}
	case jitgate.EventRevocationUnverified:
		return &Message{ID: fmt.Sprintf("%s:%d:%d", KindRevocationUnverified, g.ID, g.Provision.Attempts), Kind: KindRevocationUnverified,
			Urgent: true, Grant: g, URL: n.link("grants", g.ID),
			Title: fmt.Sprintf("ALERT: access of grant %d (%s on %s/%s) is still there after its revoke", g.ID, g.User, g.Resource, g.Role),
			Text:  textsafe.Text(g.Provision.LastError) + "\njitgate keeps retrying; check the target."}
	}
	return nil
}
