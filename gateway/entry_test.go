package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// scriptedListener returns the errors in errs from Accept, in order, then real connections
// from a pipe, then a permanent error once closed.
type scriptedListener struct {
	mu     sync.Mutex
	errs   []error
	conns  chan net.Conn
	closed chan struct{}
}

func newScripted(errs ...error) *scriptedListener {
	return &scriptedListener{errs: errs, conns: make(chan net.Conn, 16), closed: make(chan struct{})}
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *scriptedListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// dial hands the listener a connection from ip and returns the client's end.
func (l *scriptedListener) dial(ip string) net.Conn {
	a, b := net.Pipe()
	l.conns <- addrConn{Conn: b, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
	return a
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: &netSyscallError{errno}}
}

type netSyscallError struct{ errno syscall.Errno }

func (e *netSyscallError) Error() string { return "accept4: " + e.errno.Error() }
func (e *netSyscallError) Unwrap() error { return e.errno }

// Out of file descriptors: the loop backs off and retries, Ready fails meanwhile, and the next
// connection is served.
func TestServeRetriesTemporaryErrors(t *testing.T) {
	var logs bytes.Buffer
	e := NewEntry(EntryOptions{Protocol: "test", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ln := newScripted(acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE))
	served := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.Serve(ln, func(c net.Conn, release func()) { c.Close(); served <- struct{}{} })
	}()
	c := ln.dial("127.0.0.1")
	defer c.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection served after the accept errors")
	}
	if err := e.Ready(); err != nil {
		t.Errorf("Ready after recovering: %v", err)
	}
	if got := float64(e.acceptErrs.Load()); got != 3 {
		t.Errorf("accept errors metric = %v, want 3", got)
	}
	if !strings.Contains(logs.String(), "too many open files") || !strings.Contains(logs.String(), "accepting again") {
		t.Errorf("log lacks the failure or the recovery:\n%s", logs.String())
	}
	e.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}

// A listener that really died stops Serve and turns Ready red for good.
func TestServeStopsOnPermanentError(t *testing.T) {
	e := NewEntry(EntryOptions{Protocol: "test"})
	ln := newScripted(acceptErr(syscall.EINVAL))
	if err := e.Serve(ln, func(net.Conn, func()) {}); err == nil {
		t.Fatal("Serve returned nil on a dead listener")
	}
	if err := e.Ready(); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("Ready = %v, want the listener stopped", err)
	}
	e.Close()
}

// Ready is red while accepts keep failing.
func TestReadyFailsWhileAcceptFails(t *testing.T) {
	e := NewEntry(EntryOptions{Protocol: "test"})
	errs := make([]error, 1000)
	for i := range errs {
		errs[i] = acceptErr(syscall.EMFILE)
	}
	ln := newScripted(errs...)
	go e.Serve(ln, func(net.Conn, func()) {})
	deadline := time.Now().Add(10 * time.Second)
	for e.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready stayed green while accept failed")
		}
		time.Sleep(time.Millisecond)
	}
	e.Close()
}

// Connections that have not logged in are capped per source and in all; a slot comes back when
// its client logs in or goes away.
func TestUnauthenticatedLimits(t *testing.T) {
	var refusedWith []string
	var mu sync.Mutex
	e := NewEntry(EntryOptions{Protocol: "test", Limits: Limits{MaxUnauthenticated: 3, MaxUnauthenticatedPerSource: 2},
		Refuse: func(c net.Conn, reason string) { mu.Lock(); refusedWith = append(refusedWith, reason); mu.Unlock() }})
	ln := newScripted()
	releases := make(chan func(), 10)
	go e.Serve(ln, func(c net.Conn, release func()) {
		releases <- release
		buf := make([]byte, 1)
		c.Read(buf) // hold the slot until the client closes
	})
	defer e.Close()
	a1, a2 := ln.dial("10.0.0.1"), ln.dial("10.0.0.1")
	r1, r2 := <-releases, <-releases
	a3 := ln.dial("10.0.0.1") // third from the same source: refused
	b1 := ln.dial("10.0.0.2")
	<-releases
	b2 := ln.dial("10.0.0.2") // fourth in all: refused
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(refusedWith) == 2 })
	slices.Sort(refusedWith) // each refusal runs on its own goroutine
	if refusedWith[0] != RefusedSource || refusedWith[1] != RefusedTotal {
		t.Fatalf("refused with %v", refusedWith)
	}
	for _, c := range []net.Conn{a3, b2} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a refused connection stayed open")
		}
	}
	// a1 and a2 log in (release; twice is harmless): their source may connect again.
	r1()
	r1()
	r2()
	waitUntil(t, func() bool { return e.Unauthenticated() == 1 })
	// b1 goes away before logging in: its slot comes back too.
	b1.Close()
	waitUntil(t, func() bool { return e.Unauthenticated() == 0 })
	a4 := ln.dial("10.0.0.1")
	<-releases
	if got := counter(t, e.refused.WithLabelValues(RefusedSource)); got != 1 {
		t.Errorf("refused metric (source) = %v", got)
	}
	for _, c := range []net.Conn{a1, a2, a4} {
		c.Close()
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Failed logins are counted by reason, logged rate-limited, slowed down past the threshold and
// audited once per burst; the count starts again after a quiet window.
func TestLoginFailures(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	var (
		logs    bytes.Buffer
		mu      sync.Mutex
		audited []*jitgate.AuditEvent
	)
	e := NewEntry(EntryOptions{Protocol: "test", Clock: clk, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Limits: Limits{FailureThreshold: 5, FailureWindow: time.Minute, MaxFailureDelay: 2 * time.Second},
		Audit: func(_ context.Context, evs []*jitgate.AuditEvent) error {
			mu.Lock()
			defer mu.Unlock()
			audited = append(audited, evs...)
			return nil
		}})
	from := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5555}
	unknown := &jitgate.AuthFailure{Reason: jitgate.AuthUnknownCredential, Err: jitgate.Errorf(jitgate.EUNAUTHORIZED, "unknown credential")}
	var delays []time.Duration
	for i := 0; i < 1000; i++ {
		clk.Advance(10 * time.Millisecond)
		delays = append(delays, e.LoginFailed(from, "mallory", "app-db", unknown))
	}
	e.Close() // waits for the audit write
	for i, d := range delays[:4] {
		if d != 0 {
			t.Errorf("failure %d delayed %v below the threshold", i+1, d)
		}
	}
	if delays[4] != 250*time.Millisecond || delays[5] != 500*time.Millisecond || delays[999] != 2*time.Second {
		t.Errorf("delays 5, 6, 1000 = %v, %v, %v", delays[4], delays[5], delays[999])
	}
	if got := counter(t, e.authFails.WithLabelValues(jitgate.AuthUnknownCredential)); got != 1000 {
		t.Errorf("failures metric = %v, want 1000", got)
	}
	lines := strings.Count(logs.String(), "login failed")
	if lines < 5 || lines > 20 {
		t.Errorf("%d log lines for 1000 failures from one source; want a handful:\n%s", lines, logs.String())
	}
	if !strings.Contains(logs.String(), "client=192.0.2.7") || !strings.Contains(logs.String(), "reason=unknown_credential") {
		t.Errorf("log lacks client or reason:\n%s", logs.String())
	}
	if len(audited) != 1 || audited[0].Action != ActionLoginFailures || audited[0].Details["client"] != "192.0.2.7" ||
		audited[0].Details["failures"] != "5" {
		t.Fatalf("audited %+v, want one burst event", audited)
	}
	// After a quiet minute the source starts afresh.
	clk.Advance(2 * time.Minute)
	if d := e.LoginFailed(from, "mallory", "app-db", unknown); d != 0 {
		t.Errorf("first failure after a quiet window delayed %v", d)
	}
	// Another source is not slowed by the first one's failures.
	if d := e.LoginFailed(&net.TCPAddr{IP: net.ParseIP("192.0.2.8")}, "bob", "app-db", fmt.Errorf("store down")); d != 0 {
		t.Errorf("another source delayed %v", d)
	}
	if got := counter(t, e.authFails.WithLabelValues("error")); got != 1 {
		t.Errorf("errors counted %v", got)
	}
}

// counter reads a counter's value.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Names from a client's startup packet are clipped before they reach the log and the audit.
func TestLoginFailureNamesAreClipped(t *testing.T) {
	var (
		mu      sync.Mutex
		audited []*jitgate.AuditEvent
	)
	e := NewEntry(EntryOptions{Protocol: "test", Limits: Limits{FailureThreshold: 1},
		Audit: func(_ context.Context, evs []*jitgate.AuditEvent) error {
			mu.Lock()
			defer mu.Unlock()
			audited = append(audited, evs...)
			return nil
		}})
	long := strings.Repeat("é", 1000)
	e.LoginFailed(&net.TCPAddr{IP: net.ParseIP("192.0.2.9")}, long, long, fmt.Errorf("x"))
	e.Close()
	if len(audited) != 1 {
		t.Fatalf("audited %d events", len(audited))
	}
	for _, k := range []string{"last_user", "last_resource"} {
		if v := audited[0].Details[k]; len(v) > 64+len("…") || !strings.HasPrefix(v, "éé") || !utf8.ValidString(v) {
			t.Errorf("%s = %q", k, v)
		}
	}
}
