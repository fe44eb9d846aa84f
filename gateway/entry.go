// Package gateway holds what every protocol gateway shares: the front door (accepting
// connections, limits on connections that have not authenticated yet, failed-login accounting)
// and its metrics. A protocol package (gateway/postgres) adds only its wire protocol.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for EntryOptions.
const (
	DefaultMaxUnauthenticated          = 512
	DefaultMaxUnauthenticatedPerSource = 32
	DefaultFailureThreshold            = 5
	DefaultFailureWindow               = time.Minute
	DefaultMaxFailureDelay             = 5 * time.Second
)

// Refusal reasons, the reason label of jitgate_gateway_connections_refused_total.
const (
	RefusedTotal  = "unauthenticated_total" // too many connections are authenticating overall
	RefusedSource = "unauthenticated_source"
)

// Limits are a gateway's limits on clients that have not logged in; zero fields take the
// defaults.
type Limits struct {
	// MaxUnauthenticated caps connections that have not finished authenticating, in all and
	// per source address (defaults DefaultMaxUnauthenticated and
	// DefaultMaxUnauthenticatedPerSource), so idle or slow clients cannot starve real ones.
	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	// FailureThreshold failed logins from one source within FailureWindow make a burst: it is
	// written to the audit log once per window, and every further failure from that source is
	// answered only after a delay that doubles up to MaxFailureDelay.
	FailureThreshold int
	FailureWindow    time.Duration
	MaxFailureDelay  time.Duration
}

// EntryOptions configures an Entry.
type EntryOptions struct {
	Limits
	// Protocol labels metrics, logs and audit events ("postgres").
	Protocol string
	// Refuse, if set, tells a client refused for a limit why (in its protocol) before the
	// connection is closed; it must not block for long (it runs with a short write deadline).
	Refuse func(c net.Conn, reason string)
	// Audit appends events to the audit log (the burst events).
	Audit func(ctx context.Context, events []*jitgate.AuditEvent) error
	Clock jitgate.Clock
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Entry is a gateway's front door. Serve accepts connections and hands each to the protocol's
// handler with a pre-authentication slot that the handler releases once the client has logged
// in; LoginFailed accounts a failed login. An Entry is a prometheus.Collector.
type Entry struct {
	o   EntryOptions
	log *slog.Logger

	mu      sync.Mutex
	ln      []net.Listener
	closed  bool
	dead    error // a listener that stopped for good
	failing error // the last accept error, while accepts keep failing
	pending int
	bySrc   map[string]int
	fails   map[string]*failures
	logs    tokenBucket

	stop chan struct{}
	bg   sync.WaitGroup // refusals and audit writes
	hs   sync.WaitGroup // handlers

	acceptErrs                    atomic.Int64
	acceptErrsD, pendingD, readyD *prometheus.Desc
	refused                       *prometheus.CounterVec
	authFails                     *prometheus.CounterVec
	bursts                        prometheus.Counter
}

// failures is one source's recent failed logins.
type failures struct {
	n       int
	first   time.Time
	last    time.Time
	audited bool
}

// NewEntry returns an Entry.
func NewEntry(o EntryOptions) *Entry {
	if o.MaxUnauthenticated <= 0 {
		o.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if o.MaxUnauthenticatedPerSource <= 0 {
		o.MaxUnauthenticatedPerSource = DefaultMaxUnauthenticatedPerSource
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = DefaultFailureThreshold
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.MaxFailureDelay <= 0 {
		o.MaxFailureDelay = DefaultMaxFailureDelay
	}
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	labels := prometheus.Labels{"protocol": o.Protocol}
	return &Entry{o: o, log: o.Logger, bySrc: map[string]int{}, fails: map[string]*failures{}, stop: make(chan struct{}),
		logs: tokenBucket{rate: 10, burst: 20},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jitgate_gateway_connections_refused_total",
			Help: "Connections refused before authentication because a limit was reached, by reason.", ConstLabels: labels}, []string{"reason"}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jitgate_gateway_login_failures_total",
			Help: "Failed gateway logins, by reason.", ConstLabels: labels}, []string{"reason"}),
		bursts: prometheus.NewCounter(prometheus.CounterOpts{Name: "jitgate_gateway_login_failure_bursts_total",
			Help: "Bursts of failed logins from one source (each also an audit event).", ConstLabels: labels}),
		acceptErrsD: prometheus.NewDesc("jitgate_gateway_accept_errors_total", "Accept errors the gateway retried (e.g. out of file descriptors).", nil, labels),
		pendingD:    prometheus.NewDesc("jitgate_gateway_unauthenticated", "Connections that have not finished authenticating.", nil, labels),
		readyD:      prometheus.NewDesc("jitgate_gateway_listening", "1 while every listener of the gateway accepts connections.", nil, labels),
	}
}

// Serve accepts connections on ln until Close, and runs handle for each on its own goroutine
// with a release func that frees the connection's pre-authentication slot (call it once the
// client is authenticated; calling it again, or after the connection ended, does nothing; the
// slot is freed when handle returns in any case). A connection over a limit is refused (see
// EntryOptions.Refuse) and never reaches handle. Temporary accept errors (out of file
// descriptors, out of memory) are retried with backoff, as net/http does, and make Ready fail
// while they last; any other error stops Serve and makes Ready fail for good.
func (e *Entry) Serve(ln net.Listener, handle func(c net.Conn, release func())) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	e.ln = append(e.ln, ln)
	e.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if e.isClosed() {
				return nil
			}
			if !temporary(err) {
				e.mu.Lock()
				e.dead = fmt.Errorf("%s gateway listener on %s stopped: %w", e.o.Protocol, ln.Addr(), err)
				e.mu.Unlock()
				e.log.Error("gateway: listener stopped; this gateway accepts no more connections", "protocol", e.o.Protocol, "addr", ln.Addr().String(), "err", err)
				return err
			}
			e.acceptErrs.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			e.mu.Lock()
			first := e.failing == nil
			e.failing = err
			e.mu.Unlock()
			if first || e.logs.allow(time.Now()) {
				e.log.Error("gateway: accept failed; retrying", "protocol", e.o.Protocol, "err", err, "retry_in", backoff)
			}
			select {
			case <-time.After(backoff):
			case <-e.stop:
				return nil
			}
			continue
		}
		if backoff != 0 {
			backoff = 0
			e.mu.Lock()
			e.failing = nil
			e.mu.Unlock()
			e.log.Info("gateway: accepting again", "protocol", e.o.Protocol)
		}
		release, reason := e.admit(c.RemoteAddr())
		if release == nil {
			e.refuse(c, reason)
			continue
		}
		e.hs.Add(1)
		go func() {
			defer e.hs.Done()
			defer release()
			handle(c, release)
		}()
	}
}

// temporary reports whether an accept error may go away by itself.
func temporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (e *Entry) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// source is the part of a remote address a limit counts by: the IP, without the port.
func source(a net.Addr) string {
	if a == nil {
		return ""
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// admit takes a pre-authentication slot for a connection from addr; nil and the reason when a
// limit is reached.
func (e *Entry) admit(addr net.Addr) (release func(), reason string) {
	src := source(addr)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.pending >= e.o.MaxUnauthenticated:
		return nil, RefusedTotal
	case e.bySrc[src] >= e.o.MaxUnauthenticatedPerSource:
		return nil, RefusedSource
	}
	e.pending++
	e.bySrc[src]++
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.pending--
		if e.bySrc[src]--; e.bySrc[src] <= 0 {
			delete(e.bySrc, src)
		}
	}, ""
}

// refuse tells a client over a limit why, briefly, and closes it.
func (e *Entry) refuse(c net.Conn, reason string) {
	e.refused.WithLabelValues(reason).Inc()
	if e.logs.allow(time.Now()) {
		e.log.Warn("gateway: connection refused: too many unauthenticated connections", "protocol", e.o.Protocol,
			"client", c.RemoteAddr().String(), "limit", reason)
	}
	if e.o.Refuse == nil {
		c.Close()
		return
	}
	// Off the accept loop: a client that does not read must not hold it up.
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		e.o.Refuse(c, reason)
	}()
}

// Unauthenticated returns how many connections hold a pre-authentication slot.
func (e *Entry) Unauthenticated() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pending
}

// Ready returns nil while every listener accepts connections; otherwise why not.
func (e *Entry) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.dead != nil:
		return e.dead
	case e.failing != nil:
		return fmt.Errorf("%s gateway cannot accept connections: %w", e.o.Protocol, e.failing)
	}
	return nil
}

// LoginFailed accounts a failed login from addr as user on resource: it counts it in the
// metrics by reason (see jitgate.AuthFailure; "error" for others), logs it (rate-limited:
// a source's 1st, 2nd, 4th, 8th... failure of a window, and at most 10 lines a second in all),
// writes an audit event when the source's failures reach the burst threshold, and returns how
// long the caller should wait before answering (zero below the threshold).
func (e *Entry) LoginFailed(addr net.Addr, user, resource string, err error) time.Duration {
	reason := jitgate.AuthFailureReason(err)
	e.authFails.WithLabelValues(reason).Inc()
	// The names come from the client's startup packet: whatever it sent, up to its size limit.
	user, resource = clip(user), clip(resource)
	src := source(addr)
	now := e.o.Clock.Now()
	e.mu.Lock()
	f := e.fails[src]
	if f == nil || now.Sub(f.last) > e.o.FailureWindow {
		if len(e.fails) >= 10000 {
			e.pruneFailures(now)
		}
		f = &failures{first: now}
		e.fails[src] = f
	}
	f.n++
	f.last = now
	n := f.n
	burst := n >= e.o.FailureThreshold && !f.audited
	if burst {
		f.audited = true
	}
	first := f.first
	e.mu.Unlock()
	if n&(n-1) == 0 && e.logs.allow(time.Now()) {
		e.log.Warn("gateway: login failed", "protocol", e.o.Protocol, "client", src, "user", user, "resource", resource,
			"reason", reason, "failures_from_client", n)
	}
	if burst {
		e.bursts.Inc()
		e.log.Warn("gateway: burst of failed logins; slowing the client down", "protocol", e.o.Protocol, "client", src, "failures", n,
			"since", first.UTC().Format(time.RFC3339))
		e.auditBurst(src, user, resource, reason, n, first, now)
	}
	if n < e.o.FailureThreshold {
		return 0
	}
	return min(250*time.Millisecond<<min(n-e.o.FailureThreshold, 10), e.o.MaxFailureDelay)
}

// clip cuts a name a client sent to 64 bytes (at a character boundary) for logs and audit.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// pruneFailures forgets sources whose last failure is older than the window (caller holds mu);
// if every one is recent (a flood from very many addresses), it forgets them all rather than
// grow without bound: the pre-authentication limits still hold.
func (e *Entry) pruneFailures(now time.Time) {
	for k, f := range e.fails {
		if now.Sub(f.last) > e.o.FailureWindow {
			delete(e.fails, k)
		}
	}
	if len(e.fails) >= 10000 {
		clear(e.fails)
	}
}

// ActionLoginFailures is the audit action of a burst of failed gateway logins.
const ActionLoginFailures = "gateway.login_failures"

func (e *Entry) auditBurst(src, user, resource, reason string, n int, first, now time.Time) {
	if e.o.Audit == nil {
		return
	}
	ev := &jitgate.AuditEvent{Time: now, Actor: "jitgate", Action: ActionLoginFailures, Details: map[string]string{
		"protocol": e.o.Protocol, "client": src, "failures": fmt.Sprint(n), "since": first.UTC().Format(time.RFC3339Nano),
		"last_user": user, "last_resource": resource, "last_reason": reason}}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.o.Audit(ctx, []*jitgate.AuditEvent{ev}); err != nil {
			e.log.Error("gateway: cannot audit a burst of failed logins", "client", src, "err", err)
		}
	}()
}

// Pause waits for d, or less if ctx ends (the connection's login deadline: a slowed answer
// never outlasts it) or the entry is closed meanwhile.
func (e *Entry) Pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-e.stop:
	}
}

// Close stops every listener and waits for the entry's own background work (refusals, audit
// writes). Connections already handed to handle are the protocol's to end; Wait waits for
// their handlers.
func (e *Entry) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for _, ln := range e.ln {
		ln.Close()
	}
	close(e.stop)
	e.mu.Unlock()
	e.bg.Wait()
}

// Wait returns once every handler Serve started has returned.
func (e *Entry) Wait() { e.hs.Wait() }

// Describe implements prometheus.Collector.
func (e *Entry) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.acceptErrsD
	ch <- e.pendingD
	ch <- e.readyD
	e.refused.Describe(ch)
	e.authFails.Describe(ch)
	e.bursts.Describe(ch)
}

// Collect implements prometheus.Collector.
func (e *Entry) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(e.acceptErrsD, prometheus.CounterValue, float64(e.acceptErrs.Load()))
	ch <- prometheus.MustNewConstMetric(e.pendingD, prometheus.GaugeValue, float64(e.Unauthenticated()))
	ready := 1.0
	if e.Ready() != nil {
		ready = 0
	}
	ch <- prometheus.MustNewConstMetric(e.readyD, prometheus.GaugeValue, ready)
	e.refused.Collect(ch)
	e.authFails.Collect(ch)
	e.bursts.Collect(ch)
}

// tokenBucket rate-limits log lines.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens a second
	burst  float64
	tokens float64
	last   time.Time
}

func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
