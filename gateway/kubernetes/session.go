package kubernetes

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

// errKilled is the cause of a request context cancelled because its session was killed.
var errKilled = errors.New("jitgate: session ended")

// killGrace bounds how long cutting a request may wait for a write to a slow client.
const killGrace = 300 * time.Millisecond

// sessionKey and requestKey are the context keys of a request's *session and *request.
type (
	sessionKey struct{}
	requestKey struct{}
)

// connListener hands the connections the front door admits to the HTTP server: handle queues
// one for Accept and returns when it is closed, so the front door counts it until then.
type connListener struct {
	ch    chan *entryConn
	stop  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	conns map[*entryConn]struct{}
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan *entryConn), stop: make(chan struct{}), conns: map[*entryConn]struct{}{}}
}

// entryConn is an admitted connection and its state.
type entryConn struct {
	net.Conn
	cc     *clientConn
	done   chan struct{}
	closed sync.Once
}

func (c *entryConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		close(c.done)
		c.cc.gone()
	})
	return err
}

func (l *connListener) handle(c net.Conn, release func()) {
	ec := &entryConn{Conn: c, done: make(chan struct{}), cc: &clientConn{addr: c.RemoteAddr(), release: release, sessions: map[string]*session{}}}
	l.mu.Lock()
	l.conns[ec] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.conns, ec)
		l.mu.Unlock()
	}()
	select {
	case l.ch <- ec:
	case <-l.stop:
		ec.Close()
		return
	}
	<-ec.done
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.stop:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: no more connections are handed out.
func (l *connListener) Close() error {
	l.once.Do(func() { close(l.stop) })
	return nil
}

// closeAll closes every admitted connection.
func (l *connListener) closeAll() {
	l.mu.Lock()
	all := make([]*entryConn, 0, len(l.conns))
	for c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// state returns the state of a connection the HTTP server holds (TLS over an entryConn).
func (l *connListener) state(c net.Conn) *clientConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ec, ok := c.(*entryConn); ok {
		return ec.cc
	}
	return nil
}

// clientConn is one client connection: its sessions, one per grant whose credential it used.
type clientConn struct {
	addr    net.Addr
	release func()

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
}

// session returns the live session of the credential key.
func (cc *clientConn) session(key string) (*session, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s, ok := cc.sessions[key]
	return s, ok
}

// add adds s, reporting false if the connection is gone.
func (cc *clientConn) add(s *session) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		return false
	}
	// A connection's requests come one after another (HTTP/1.1), so a live session of the
	// same credential was found before this one was started.
	cc.sessions[s.key] = s
	return true
}

// remove forgets s (killed or ended).
func (cc *clientConn) remove(s *session) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.sessions[s.key] == s {
		delete(cc.sessions, s.key)
	}
}

// authenticated frees the connection's pre-authentication slot at the front door.
func (cc *clientConn) authenticated() { cc.release() }

// gone is called once the connection has closed: its sessions end when their requests have.
func (cc *clientConn) gone() {
	cc.mu.Lock()
	cc.closed = true
	all := make([]*session, 0, len(cc.sessions))
	for _, s := range cc.sessions {
		all = append(all, s)
	}
	clear(cc.sessions)
	cc.mu.Unlock()
	for _, s := range all {
		s.detach()
	}
}

// session is one client connection's use of one grant.
type session struct {
	g     *Gateway
	cc    *clientConn
	key   string
	grant *jitgate.Grant
	info  *jitgate.Session
	head  *jitgate.AuditEvent
	tr    *gateway.Tracked

	mu       sync.Mutex
	inflight map[*request]struct{}
	killed   string
	detached bool
	// started is set once the session is recorded in the store: it cannot end before.
	started bool
	ended   bool
	n       int64

	bytesIn, bytesOut atomic.Int64
}

// Kill ends the session for reason: every live request and stream is cut, and the session's
// credential is refused on this connection from now on (gateway.Killer). It does not block.
func (s *session) Kill(reason string) {
	s.mu.Lock()
	if s.killed != "" || s.ended {
		s.mu.Unlock()
		return
	}
	s.killed = reason
	reqs := make([]*request, 0, len(s.inflight))
	for r := range s.inflight {
		reqs = append(reqs, r)
	}
	s.mu.Unlock()
	s.cc.remove(s)
	for _, r := range reqs {
		s.g.core.Go(func() { r.cut(reason) })
	}
	s.g.log.Info("kubernetes gateway: session cut", "session", s.info.ID, "grant", s.grant.ID, "reason", reason, "requests", len(reqs))
	s.maybeEnd()
}

func (s *session) killReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killed
}

// detach says the connection no longer uses the session (it closed): the session ends once
// its requests have.
func (s *session) detach() {
	s.mu.Lock()
	s.detached = true
	s.mu.Unlock()
	s.maybeEnd()
}

// maybeEnd records the session's end once it is over: killed or detached, and no request left.
func (s *session) maybeEnd() {
	s.mu.Lock()
	if !s.started || s.ended || len(s.inflight) > 0 || (s.killed == "" && !s.detached) {
		s.mu.Unlock()
		return
	}
	s.ended = true
	reason := s.killed
	if reason == "" {
		reason = "client closed the connection"
	}
	s.mu.Unlock()
	s.cc.remove(s)
	if s.tr != nil {
		s.tr.Remove()
	}
	s.info.EndReason = reason
	s.info.BytesIn, s.info.BytesOut = s.bytesIn.Load(), s.bytesOut.Load()
	s.g.core.Go(func() { gateway.RecordEnd(s.g.opts.Engine, s.g.core.Recorder, s.g.log, s.info) })
}

// request is one request in flight in a session.
type request struct {
	s      *session
	cancel context.CancelCauseFunc
	w      *respWriter
	start  time.Time
	// status is set from the API server's answer (or the gateway's own); json too, which a
	// cut reads from another goroutine.
	status int
	json   atomic.Bool
	watch  bool
}

// begin registers a request, or reports the reason the session was killed.
func (s *session) begin(r *request) (int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.killed != "" {
		return 0, s.killed
	}
	if s.ended {
		return 0, "the session has ended"
	}
	s.inflight[r] = struct{}{}
	s.g.inflight.Add(1)
	s.n++
	s.info.Statements = s.n
	return s.n, ""
}

// serve forwards one request of the session and records it.
func (s *session) serve(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	info := describe(r)
	req := &request{s: s, cancel: cancel, start: s.g.clock.Now(), watch: info.watch,
		w: &respWriter{ResponseWriter: w, rc: http.NewResponseController(w)}}
	n, killed := s.begin(req)
	if killed != "" {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "jitgate: "+killed)
		return
	}
	defer s.finish(req, n, info)
	if info.watch {
		s.g.watching.Add(1)
		defer s.g.watching.Add(-1)
	}
	if r.ContentLength > s.g.opts.MaxBody {
		req.status = http.StatusRequestEntityTooLarge
		writeStatus(req.w, req.status, "RequestEntityTooLarge", "jitgate: the request body is larger than the gateway's limit ("+strconv.FormatInt(s.g.opts.MaxBody, 10)+" bytes)")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: http.MaxBytesReader(w, r.Body, s.g.opts.MaxBody), n: &s.bytesIn}
	}
	ctx = context.WithValue(context.WithValue(ctx, sessionKey{}, s), requestKey{}, req)
	proxy := s.g.proxies[s.grant.Resource]
	defer func() {
		// The proxy aborts a response it could not finish (the stream was cut, or the client
		// left) with http.ErrAbortHandler. After a cut, end the response normally: what the
		// client got (a watch's final ERROR event) is complete.
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler || context.Cause(ctx) != errKilled {
				panic(v)
			}
		}
	}()
	proxy.ServeHTTP(req.w, r.WithContext(ctx))
}

// finish records a request that is over and ends the session if that was its last.
func (s *session) finish(r *request, n int64, info requestInfo) {
	status := r.status
	if status == 0 {
		status = r.w.status
	}
	if status == 0 {
		status = http.StatusOK
	}
	st := jitgate.Statement{N: n, Start: r.start, DurationUS: s.g.clock.Now().Sub(r.start).Microseconds(), SQL: info.text, Protocol: "http"}
	if status >= 400 {
		st.SQLState = strconv.Itoa(status)
	} else {
		st.Tag = strconv.Itoa(status)
	}
	s.bytesOut.Add(r.w.n.Load())
	s.g.core.Recorder.Record(s.head, st)
	s.mu.Lock()
	delete(s.inflight, r)
	s.mu.Unlock()
	s.g.inflight.Add(-1)
	s.maybeEnd()
}

// cut ends a request of a killed session: a watch served as JSON gets a last ERROR event
// saying why (at a line boundary only), then the request is cancelled, which ends the
// upstream request, a response not yet begun with a 401 Status, and an upgraded stream by
// closing it.
func (r *request) cut(reason string) {
	// A client that does not read must not hold the cut up: writes fail after killGrace.
	_ = r.w.rc.SetWriteDeadline(time.Now().Add(killGrace))
	r.w.end(func(w http.ResponseWriter, lineEnd bool) {
		if !r.watch || !r.json.Load() || !lineEnd {
			return
		}
		ev, _ := json.Marshal(map[string]any{"type": "ERROR", "object": map[string]any{"kind": "Status", "apiVersion": "v1",
			"metadata": map[string]any{}, "status": "Failure", "message": "jitgate: " + reason, "reason": "Expired", "code": http.StatusGone}})
		_, _ = w.Write(append(ev, '\n'))
		_ = r.w.rc.Flush()
	})
	r.cancel(errKilled)
}

// respWriter passes a response through, counting its bytes, and lets a cut add a last line
// and then refuse the proxy's further writes.
type respWriter struct {
	http.ResponseWriter
	rc *http.ResponseController

	mu          sync.Mutex
	status      int
	wroteHeader bool
	lineEnd     bool
	ended       bool
	n           atomic.Int64
}

func (w *respWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended || w.wroteHeader {
		return
	}
	// The body starts at a line boundary (where a watch's next event may go).
	w.wroteHeader, w.status, w.lineEnd = true, code, true
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return 0, errKilled
	}
	if !w.wroteHeader {
		w.wroteHeader, w.status, w.lineEnd = true, http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	if n > 0 {
		w.lineEnd = p[n-1] == '\n'
	}
	return n, err
}

// Flush implements http.Flusher.
func (w *respWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		_ = w.rc.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (the proxy hijacks it for an
// upgraded stream).
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// end runs last and refuses later writes, if the response has begun.
func (w *respWriter) end(last func(w http.ResponseWriter, lineEnd bool)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if !w.wroteHeader {
		// Not begun: the proxy's error handler answers the cancelled request with a 401.
		return
	}
	last(w.ResponseWriter, w.lineEnd)
	w.ended = true
}

// countingBody counts a request body's bytes.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
