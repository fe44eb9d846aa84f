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
	// Queue is each sink's queue length (default 1000); a full queue drops new messages.
	Queue int
	// Attempts bounds the deliveries of one message (default 8); Backoff is the wait after the
	// nth failure (default 1s doubling to 1m).
	Attempts int
	Backoff  func(n int) time.Duration
	// Registerer, if set, gets the notification metrics.
	Registerer prometheus.Registerer
}

// Notifier turns engine events into messages and delivers them.
type Notifier struct {
	o      Options
	queues []*queue

	sent, failed, dropped    *prometheus.CounterVec
	nSent, nFailed, nDropped atomic.Int64

	mu     sync.Mutex
	warned map[int64]time.Time // grant → the end it was warned about
	wg     sync.WaitGroup
}

type queue struct {
	sink Sink
	ch   chan *Message
}

// New returns a Notifier; Start runs its workers.
func New(o Options) *Notifier {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Queue <= 0 {
		o.Queue = 1000
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
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jitgate_notifications_dropped_total", Help: "Notifications dropped because a sink's queue was full, by sink and kind."}, []string{"sink", "kind"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(n.sent, n.failed, n.dropped)
	}
	for _, s := range o.Sinks {
		n.queues = append(n.queues, &queue{sink: s, ch: make(chan *Message, o.Queue)})
	}
	return n
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
	for _, q := range n.queues {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.deliver(ctx, q) }()
	}
}

// Wait returns once the workers started by Start have stopped.
func (n *Notifier) Wait() { n.wg.Wait() }

// Handle turns an engine event into messages and queues them. It never blocks: subscribe it
// to the engine (engine.Subscribe(n.Handle)).
func (n *Notifier) Handle(ev jitgate.Event) {
	if ev.Remote {
		return // the instance that made the change tells people about it
	}
	if m := n.message(ev); m != nil {
		n.Post(m)
	}
}

// Post queues m on every sink, dropping it (and counting that) where a queue is full.
func (n *Notifier) Post(m *Message) {
	if m.Time.IsZero() {
		m.Time = n.o.Clock.Now().UTC()
	}
	for _, q := range n.queues {
		select {
		case q.ch <- m:
		default:
			n.dropped.WithLabelValues(q.sink.Name(), m.Kind).Inc()
			n.nDropped.Add(1)
			n.o.Logger.Error("notification dropped: queue full", "sink", q.sink.Name(), "kind", m.Kind, "id", m.ID)
		}
	}
}

// Stats returns how many messages were delivered, given up and dropped, over all sinks.
func (n *Notifier) Stats() (sent, failed, dropped int64) {
	return n.nSent.Load(), n.nFailed.Load(), n.nDropped.Load()
}

func (n *Notifier) deliver(ctx context.Context, q *queue) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q.ch:
			n.send(ctx, q.sink, m)
		}
	}
}

// send delivers m with retries; it gives up after the configured attempts or when ctx ends.
func (n *Notifier) send(ctx context.Context, s Sink, m *Message) {
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.Send(cctx, m)
		cancel()
		if err == nil {
			n.sent.WithLabelValues(s.Name(), m.Kind).Inc()
			n.nSent.Add(1)
			return
		}
		if attempt >= n.o.Attempts || ctx.Err() != nil {
			n.failed.WithLabelValues(s.Name(), m.Kind).Inc()
			n.nFailed.Add(1)
			n.o.Logger.Error("notification failed; giving up", "sink", s.Name(), "kind", m.Kind, "id", m.ID, "attempts", attempt, "err", err)
			return
		}
		wait := n.o.Backoff(attempt)
		n.o.Logger.Warn("notification failed; will retry", "sink", s.Name(), "kind", m.Kind, "id", m.ID, "attempt", attempt, "in", wait, "err", err)
		// Retry waits are real time (Options.Backoff shortens them in tests); the clock is for
		// the grants' times.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			n.failed.WithLabelValues(s.Name(), m.Kind).Inc()
			n.nFailed.Add(1)
			return
		case <-t.C:
		}
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
