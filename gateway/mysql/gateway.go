// Package mysql is jitgate's MySQL/MariaDB wire-protocol gateway. Clients (the mariadb and
// mysql command-line clients, go-sql-driver, any connector) log in with a short-lived session
// credential as their password, their jitgate user name as the user and the resource's name as
// the database. The gateway checks the credential, logs in to the real server with the login
// configured for the grant's role (the client never sees it), relays the protocol, records
// every statement in the audit log, and ends the session, killing any running query, the
// moment the grant ends.
//
// # Why caching_sha2_password, answered in full
//
// The gateway announces caching_sha2_password, the default of MySQL 8 and a plugin every
// current client (mariadb and mysql, Connector/C, go-sql-driver, Connector/J) supports without
// options, and always asks for "full authentication". Over TLS, the client then sends the
// password itself, which the gateway checks against the credential's hash: jitgate never
// stores a session credential in clear, and neither mysql_native_password nor the fast path
// of caching_sha2_password can be checked without a password-equivalent hash kept on the
// server. Without TLS (insecure_plaintext), a client asks for the gateway's RSA key and sends
// the password encrypted with it, as MySQL does.
package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Gateway.
type Options struct {
	Engine   gateway.Engine
	Upstream UpstreamFunc
	// TLS, when set, is offered to clients.
	TLS *tls.Config
	// InsecurePlaintext allows clients that do not use TLS (local experiments only).
	InsecurePlaintext bool
	// Clock defaults to the system clock.
	Clock jitgate.Clock
	// StartupTimeout bounds the whole handshake and authentication phase (default 10s).
	StartupTimeout time.Duration
	// MaxPacket caps a client's command after login (default 64 MiB, MySQL's default
	// max_allowed_packet).
	MaxPacket int
	Logger    *slog.Logger
	// SweepEvery is how often live sessions' grants are re-read from the store, so that a
	// revoke or extension made by another server instance takes effect (default 1s).
	SweepEvery time.Duration
	// ReuseUpstream, when positive, keeps the upstream connection of a session the client
	// ended cleanly (COM_QUIT between transactions), reset with COM_RESET_CONNECTION, for up
	// to this long for the next session of the same grant. Zero turns reuse off.
	ReuseUpstream time.Duration
	// Recorder settings; see gateway.NewRecorder (zero: the defaults).
	RecorderBuffer int
	RecorderBatch  int
	RecorderFlush  time.Duration
	// Limits bound clients that have not logged in yet (see gateway.Limits).
	Limits gateway.Limits
	// ServerVersion is the version the gateway announces before it knows the upstream
	// (default: the last upstream's, or "8.0.0-jitgate" before any).
	ServerVersion string
	// Relay is how established sessions are relayed: "loop" (the default on Linux) on the
	// shared epoll event-loop threads (gateway.Loops), or "goroutines" (a goroutine per
	// direction, the only way elsewhere).
	Relay string
	// Loops is how many event-loop threads to start if none run yet (zero: one per two CPUs,
	// 1-8); the loops serve every gateway in the process.
	Loops int
}

// The relays Options.Relay names (see gateway.RelayLoop).
const (
	RelayLoop       = gateway.RelayLoop
	RelayGoroutines = gateway.RelayGoroutines
)

// Gateway accepts MySQL client connections and runs their sessions.
type Gateway struct {
	opts  Options
	log   *slog.Logger
	clock jitgate.Clock
	// core is what every protocol gateway is made of: the front door, the registry that ends
	// each session with its grant, the recorder, the pool, the loops.
	core *gateway.Core[*upstream]

	nextID    atomic.Uint32          // client-facing connection ids
	fastAuths atomic.Int64           // logins checked by their scramble alone (see authenticate)
	version   atomic.Pointer[string] // the last upstream's version

	keyOnce sync.Once
	key     *rsa.PrivateKey // for caching_sha2_password without TLS
	keyPEM  []byte
	keyErr  error

	mu   sync.Mutex
	byID map[uint32]*session // live sessions by the connection id their client was told
}

// New returns a Gateway, subscribed to the engine's grant events at once.
func New(o Options) *Gateway {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.StartupTimeout == 0 {
		o.StartupTimeout = 10 * time.Second
	}
	if o.MaxPacket == 0 {
		o.MaxPacket = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{opts: o, log: o.Logger, clock: o.Clock}
	g.core = gateway.NewCore(gateway.CoreOptions{Protocol: "mysql", Engine: o.Engine, Clock: o.Clock, Logger: o.Logger,
		SweepEvery: o.SweepEvery, RecorderBuffer: o.RecorderBuffer, RecorderBatch: o.RecorderBatch, RecorderFlush: o.RecorderFlush,
		Limits: o.Limits, Refuse: refuse, Relay: o.Relay, Loops: o.Loops}, o.ReuseUpstream, func(u *upstream) net.Conn { return u.conn })
	return g
}

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) { g.core.Describe(ch) }

// Collect implements prometheus.Collector.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) { g.core.Collect(ch) }

// Recorder returns the gateway's statement recorder.
func (g *Gateway) Recorder() *gateway.Recorder { return g.core.Recorder }

// Serve accepts connections on ln until Close (see gateway.Entry.Serve).
func (g *Gateway) Serve(ln net.Listener) error { return g.core.Entry.Serve(ln, g.handle) }

// Ready returns nil while the gateway accepts connections; otherwise why not.
func (g *Gateway) Ready() error { return g.core.Entry.Ready() }

// Drain stops accepting connections and waits until every session has ended on its own or
// with its grant, or ctx is done; it returns how many are still live (see gateway.Core.Drain).
// Close afterwards ends those.
func (g *Gateway) Drain(ctx context.Context) int { return g.core.Drain(ctx) }

// Sessions returns the number of live sessions.
func (g *Gateway) Sessions() int { return g.core.Registry.Len() }

// Close stops accepting connections, ends every session ("jitgate is shutting down"),
// flushes the statement recorder and returns when all connection goroutines are gone. Calls
// after the first return nil.
func (g *Gateway) Close() error { return g.core.Close() }

// refuse tells a client over a pre-authentication limit why, in place of the handshake.
func refuse(c net.Conn, reason string) {
	msg := "jitgate: too many connections are logging in; try again shortly"
	if reason == gateway.RefusedSource {
		msg = "jitgate: too many connections from your address are logging in; try again shortly"
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	p := &packetIO{rw: c}
	_ = p.write(errPacket(erConCount, "08004", msg))
}

// serverVersion is the version the handshake announces.
func (g *Gateway) serverVersion() string {
	if g.opts.ServerVersion != "" {
		return g.opts.ServerVersion
	}
	if v := g.version.Load(); v != nil {
		return *v
	}
	return "8.0.0-jitgate"
}

// rsaKey returns the gateway's RSA key for caching_sha2_password over plaintext, made on
// first use.
func (g *Gateway) rsaKey() (*rsa.PrivateKey, []byte, error) {
	g.keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			g.keyErr = err
			return
		}
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			g.keyErr = err
			return
		}
		g.key, g.keyPEM = k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	})
	return g.key, g.keyPEM, g.keyErr
}

// denied is a login the gateway refuses: the ERR it sends and how the failure counts.
type denied struct {
	code     uint16
	sqlstate string
	msg      string
}

// handle runs one client connection: handshake, authentication, upstream login, relay.
func (g *Gateway) handle(nc net.Conn, authenticated func()) {
	g.core.Conns.Add(1)
	defer g.core.Conns.Done()
	var conn net.Conn = gateway.NewBufConn(nc) // so that an event loop can take the socket over
	defer func() { conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.StartupTimeout)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(g.opts.StartupTimeout))

	scramble, err := newScramble()
	if err != nil {
		return
	}
	caps := serverCaps
	if g.opts.TLS != nil {
		caps |= capSSL
	}
	id := g.nextID.Add(1)
	hs := &handshake{version: g.serverVersion(), connID: id, scramble: scramble, caps: caps, charset: 45,
		status: statusAutocommit, plugin: pluginCachingSHA2}
	p := &packetIO{rw: conn, max: 1 << 16}
	if err := p.write(hs.encode()); err != nil {
		return
	}
	fail := func(code uint16, sqlstate, msg string) { _ = p.write(errPacket(code, sqlstate, msg)) }
	b, err := p.read()
	if err != nil {
		g.log.Debug("mysql gateway: bad handshake", "client", conn.RemoteAddr(), "err", err)
		switch {
		case errors.Is(err, errPacketTooLarge):
			fail(erNetPacketTooBig, "08S01", "jitgate: handshake packet too large")
		case !errors.Is(err, net.ErrClosed):
			fail(erHandshake, "08S01", "jitgate: bad handshake")
		}
		return
	}
	resp, err := parseResponse(b)
	if err != nil {
		g.loginFailed(conn, "", "", err.Error())
		fail(erHandshake, "08S01", "jitgate: bad handshake: "+err.Error())
		return
	}
	secure := false
	if resp.caps&capSSL != 0 && len(b) == sslRequestLen {
		if g.opts.TLS == nil {
			fail(erHandshake, "08S01", "jitgate: this gateway does not offer TLS")
			return
		}
		tconn := tls.Server(conn, g.opts.TLS)
		if err := tconn.HandshakeContext(ctx); err != nil {
			g.log.Debug("mysql gateway: TLS handshake failed", "client", conn.RemoteAddr(), "err", err)
			return
		}
		conn, secure, p.rw = tconn, true, tconn
		if b, err = p.read(); err != nil {
			return
		}
		if resp, err = parseResponse(b); err != nil || len(b) == sslRequestLen {
			msg := "jitgate: bad handshake"
			if err != nil {
				msg += ": " + err.Error()
			}
			g.loginFailed(conn, "", "", msg)
			fail(erHandshake, "08S01", msg)
			return
		}
	}
	user, resource := clip(resp.user), clip(resp.database)
	deny := func(msg string) {
		g.loginFailed(conn, user, resource, msg)
		fail(erAccessDenied, "28000", msg)
	}
	if !secure && !g.opts.InsecurePlaintext {
		deny("jitgate: this gateway requires TLS (mariadb/mysql: --ssl; go-sql-driver: tls=true or skip-verify)")
		return
	}
	if user == "" || resource == "" {
		deny("jitgate: connect with your jitgate user name as the user and the resource name as the database")
		return
	}
	grant, msg, err := g.authenticate(ctx, p, resp, scramble, secure, user, resource)
	if msg != "" {
		deny(msg)
		return
	}
	if err != nil {
		if jitgate.ErrorCode(err) == jitgate.EUNAUTHORIZED {
			g.core.Entry.Pause(ctx, g.core.Entry.LoginFailed(conn.RemoteAddr(), user, resource, err))
			fail(erAccessDenied, "28000", jitgate.ErrorMessage(err))
		} else {
			g.log.Error("mysql gateway: cannot check a credential", "err", err)
			fail(1105, "HY000", "jitgate: cannot check the credential now; try again shortly")
		}
		return
	}
	authenticated()
	cfg, err := g.opts.Upstream(grant)
	if err != nil {
		switch jitgate.ErrorCode(err) {
		case jitgate.EUNAVAILABLE:
			fail(erUpstream, "HY000", "jitgate: "+jitgate.ErrorMessage(err))
		case jitgate.ENOTFOUND:
			fail(erAccessDenied, "28000", fmt.Sprintf("jitgate: %s is not a MySQL resource; this is the MySQL gateway", grant.Resource))
		default:
			g.log.Error("mysql gateway: upstream config", "grant", grant.ID, "err", err)
			fail(erUpstream, "HY000", fmt.Sprintf("jitgate: resource %s is not reachable through the gateway: %s", grant.Resource, jitgate.ErrorMessage(err)))
		}
		return
	}
	maxPacket := resp.maxPacket
	key := gateway.KeyOf(grant.ID, map[string]string{"caps": strconv.FormatUint(uint64(resp.caps&streamCaps), 16),
		"charset": strconv.Itoa(int(resp.charset)), "user": cfg.User})
	u, ok := g.core.Pool.Take(key, g.clock.Now())
	if ok {
		g.core.Reused.Add(1)
	} else {
		u, err = login(ctx, cfg, resp.caps, resp.charset, maxPacket)
		if err != nil {
			g.upstreamFailed(fail, grant, err)
			return
		}
		v := u.version
		g.version.Store(&v)
	}
	s := newSession(g, conn, u, key, grant, resp.caps&streamCaps, id)
	if tr, ok := g.core.Registry.Add(s, grant); ok {
		s.tr = tr
	} else {
		u.conn.Close()
		fail(erServerShutdown, "08S01", "jitgate is shutting down")
		return
	}
	s.info = &jitgate.Session{GrantID: grant.ID, User: grant.User, Resource: grant.Resource, Role: grant.Role, ClientAddr: conn.RemoteAddr().String(), Owner: grant.Owner}
	if err := g.opts.Engine.StartSession(ctx, s.info); err != nil {
		s.tr.Remove()
		u.conn.Close()
		fail(1105, "HY000", "jitgate: cannot record the session; refusing it")
		g.log.Error("mysql gateway: start session", "err", err)
		return
	}
	if err := p.write(okPacket(statusAutocommit)); err != nil {
		s.tr.Remove()
		u.conn.Close()
		s.finish("client went away during login")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	s.backlog.Rec = g.core.Recorder
	s.backlog.Head = &jitgate.AuditEvent{Actor: grant.User, Action: jitgate.ActionSessionStatements,
		RequestID: grant.RequestID, GrantID: grant.ID, SessionID: s.info.ID}
	g.log.Info("mysql gateway: session started", "session", s.info.ID, "grant", grant.ID, "user", grant.User,
		"resource", grant.Resource, "role", grant.Role, "upstream_thread", u.connID)
	s.client = conn
	s.run()
}

// authenticate runs the authentication exchange after the handshake response and returns
// the grant of the session credential the client proved it holds. A message means the
// exchange itself failed (the client's answer is unusable); an error is the engine's (an
// AuthFailure, or the store being unreachable).
//
// Clients answer the handshake's caching_sha2_password with the scramble
// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble), and the store keeps SHA256(SHA256(pw))
// of every credential (jitgate.HashCredential): that is MySQL's own fast authentication, checked
// in one round trip, with no RSA and without the credential itself crossing the wire, over TLS
// or not. Only when no credential fits (one minted before double hashing, one whose grant has
// ended, a wrong one) does the gateway ask for the credential itself (full authentication:
// over TLS, or RSA-encrypted without it), whose check says precisely what is wrong.
func (g *Gateway) authenticate(ctx context.Context, p *packetIO, resp *response, scramble []byte, secure bool, user, resource string) (*jitgate.Grant, string, error) {
	const noPassword = "jitgate: no password given; use the session credential from `jitgate credentials` as the password"
	plugin := resp.plugin
	if resp.caps&capPluginAuth == 0 {
		plugin = pluginNative
	}
	auth := resp.auth
	switch plugin {
	case pluginClear:
		// Only a client configured for it answers so; the password itself is the answer.
		auth = bytes.TrimSuffix(auth, []byte{0})
		if len(auth) == 0 {
			return nil, noPassword, nil
		}
		grant, err := g.opts.Engine.AuthenticateSession(ctx, user, resource, string(auth))
		return grant, "", err
	case pluginCachingSHA2:
	default:
		// Ask for caching_sha2_password (whatever the client tried first).
		sw := append([]byte{0xfe}, pluginCachingSHA2...)
		sw = append(sw, 0)
		sw = append(append(sw, scramble...), 0)
		if err := p.write(sw); err != nil {
			return nil, "jitgate: client went away", nil
		}
		b, err := p.read()
		if err != nil {
			return nil, "jitgate: client went away during authentication", nil
		}
		auth = b
	}
	if len(auth) == 0 || (len(auth) == 1 && auth[0] == 0) {
		return nil, noPassword, nil
	}
	if len(auth) == 32 { // a SHA-256 scramble
		grant, err := g.opts.Engine.AuthenticateProof(ctx, user, resource, func(v []byte) bool { return checkSHA2Proof(v, scramble, auth) })
		var af *jitgate.AuthFailure
		switch {
		case err == nil:
			// Sent with what comes next (OK once the upstream is ready, or ERR).
			p.hold([]byte{0x01, sha2FastAuthOK})
			g.fastAuths.Add(1)
			return grant, "", nil
		case jitgate.ErrorCode(err) != jitgate.EUNAUTHORIZED:
			return nil, "", err // the store: fail closed
		case errors.As(err, &af) && af.Reason != jitgate.AuthUnknownCredential:
			return nil, "", err
		}
	}
	password, msg := g.password(p, scramble, secure)
	if msg != "" {
		return nil, msg, nil
	}
	grant, err := g.opts.Engine.AuthenticateSession(ctx, user, resource, password)
	return grant, "", err
}

// password runs caching_sha2_password's full authentication, after the client's scramble
// fitted no credential, and returns the password the client sends, or why the login is
// refused.
func (g *Gateway) password(p *packetIO, scramble []byte, secure bool) (string, string) {
	// Full authentication: the password itself, over TLS or RSA-encrypted.
	if err := p.write([]byte{0x01, sha2FullAuth}); err != nil {
		return "", "jitgate: client went away"
	}
	b, err := p.read()
	if err != nil {
		return "", "jitgate: client went away during authentication"
	}
	if secure {
		if len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
		return string(b), ""
	}
	if len(b) != 1 || b[0] != sha2RequestPublicKey {
		// The client sent the password in clear without TLS (MariaDB's client does when it
		// asked for TLS the gateway does not offer). Only insecure_plaintext gets this far:
		// the password has crossed the network in clear already.
		if len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
		return string(b), ""
	}
	key, pemKey, err := g.rsaKey()
	if err != nil {
		return "", "jitgate: no RSA key for authentication without TLS; use TLS"
	}
	if err := p.write(append([]byte{0x01}, pemKey...)); err != nil {
		return "", "jitgate: client went away"
	}
	if b, err = p.read(); err != nil {
		return "", "jitgate: client went away during authentication"
	}
	pw, err := decryptPassword(key, scramble, b)
	if err != nil {
		return "", "jitgate: could not decrypt the password"
	}
	return pw, ""
}

// upstreamFailed tells the client why the upstream login failed, without the upstream
// login's name or the server's reason where it is about credentials.
func (g *Gateway) upstreamFailed(fail func(uint16, string, string), grant *jitgate.Grant, err error) {
	g.log.Warn("mysql gateway: upstream login failed", "grant", grant.ID, "resource", grant.Resource, "err", err)
	var se *serverError
	switch {
	case errors.As(err, &se) && (se.Code == erAccessDenied || se.Code == 1698 || se.Code == 1044):
		fail(erAccessDenied, "28000", fmt.Sprintf("jitgate: the upstream login for %s/%s was refused; an operator must fix its credentials", grant.Resource, grant.Role))
	case errors.As(err, &se):
		fail(se.Code, se.SQLState, "jitgate: upstream: "+se.Message)
	case errors.Is(err, errUnsupported):
		fail(erUpstream, "HY000", fmt.Sprintf("jitgate: cannot log in to %s: %v", grant.Resource, err))
	default:
		fail(erUpstream, "HY000", fmt.Sprintf("jitgate: cannot connect to %s", grant.Resource))
	}
}

// loginFailed accounts a login the client broke off or got wrong before its credential was
// checked.
func (g *Gateway) loginFailed(conn net.Conn, user, resource, msg string) {
	g.core.Entry.LoginFailed(conn.RemoteAddr(), user, resource,
		&jitgate.AuthFailure{Reason: jitgate.AuthProtocol, Err: jitgate.Errorf(jitgate.EUNAUTHORIZED, "%s", msg)})
}

// clip bounds a name a client sent before logging in.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// track makes a live session findable by the connection id its client was told.
func (g *Gateway) track(s *session) {
	g.mu.Lock()
	if g.byID == nil {
		g.byID = map[uint32]*session{}
	}
	g.byID[s.id] = s
	g.mu.Unlock()
}

func (g *Gateway) untrack(s *session) {
	g.mu.Lock()
	delete(g.byID, s.id)
	g.mu.Unlock()
}

// killByClient kills the running query of the session its client knows as id, if that
// session is of grant (a client may stop its own queries, as MySQL lets an account kill its
// own threads); false if there is no such session.
func (g *Gateway) killByClient(grant int64, id uint32) bool {
	g.mu.Lock()
	s := g.byID[id]
	g.mu.Unlock()
	if s == nil || s.grant.ID != grant {
		return false
	}
	if s.inflight.Load() > 0 {
		// It logs in to the database: not on the relay's thread, which may be an event loop.
		g.core.Go(s.killQuery)
	}
	return true
}

// ServeConn runs one client connection to its end (for tests and custom listeners).
func (g *Gateway) ServeConn(conn net.Conn) { g.handle(conn, func() {}) }
