// Package postgres is jitgate's PostgreSQL wire-protocol gateway. Clients (psql, pgbench, any
// driver) connect with a short-lived session credential bound to one grant; the gateway
// checks it, logs in to the real database with the credentials configured for the grant's
// role (the client never sees them), relays the protocol, records every statement in the
// audit log, and ends the session — cancelling any running query — the moment the grant ends.
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

// Engine is what the gateway needs from the lifecycle engine (see gateway.Engine).
type Engine = gateway.Engine

// UpstreamFunc returns how to log in to the real database for a grant: the resource's
// address and database, and the login configured for the grant's role.
type UpstreamFunc func(g *jitgate.Grant) (*pgconn.Config, error)

// Options configures a Gateway.
type Options struct {
	Engine   Engine
	Upstream UpstreamFunc
	// TLS, when set, is offered to clients that send SSLRequest.
	TLS *tls.Config
	// InsecurePlaintext allows clients that do not use TLS (local experiments only).
	InsecurePlaintext bool
	// Clock defaults to the system clock.
	Clock jitgate.Clock
	// StartupTimeout bounds the whole startup and authentication phase (default 10s).
	StartupTimeout time.Duration
	// MaxMessage caps a client message after startup (default 64 MiB).
	MaxMessage int
	Logger     *slog.Logger
	// SweepEvery is how often live sessions' grants are re-read from the store, so that a
	// revoke or extension made by another server instance on the same database takes effect
	// (default 1s). Events from this instance act at once.
	SweepEvery time.Duration
	// ReuseUpstream, when positive, keeps the upstream connection of a session the client
	// ended cleanly (Terminate while idle), reset with DISCARD ALL, for up to this long for the
	// next session of the same grant with the same startup parameters, as PgBouncer's session
	// mode does: such a session then costs the database no new backend. Parked connections
	// close when their grant ends. Zero turns reuse off.
	ReuseUpstream time.Duration
	// Relay is how established sessions are relayed: "loop" (the default on Linux) on
	// event-loop threads with epoll, like PgBouncer; "goroutines" on a goroutine per
	// direction (the only way elsewhere).
	Relay string
	// Loops is how many event-loop threads to start for relay "loop" (zero: one per two
	// CPUs, 1-8). The loops serve every Gateway in the process, so the first one started sets
	// their number.
	Loops int
	// Recorder settings; see gateway.Recorder and gateway.NewRecorder (zero: the defaults). RecorderFlush is
	// how often recorded statements are written to the audit log.
	RecorderBuffer int
	RecorderBatch  int
	RecorderFlush  time.Duration
	// Limits bound clients that have not logged in yet (see gateway.Limits; zero: defaults).
	Limits gateway.Limits
}

// The relays Options.Relay names (see gateway.RelayLoop).
const (
	RelayLoop       = gateway.RelayLoop
	RelayGoroutines = gateway.RelayGoroutines
)

// Gateway accepts client connections and runs their sessions.
type Gateway struct {
	opts  Options
	log   *slog.Logger
	clock jitgate.Clock
	// core is what every protocol gateway is made of: the front door, the registry that ends
	// each session at its grant's end, revoke or expiry, the recorder, the pool, the loops.
	core *gateway.Core[*upstream]

	mu    sync.Mutex
	byKey map[uint32]*session // client-facing backend PID → session, for CancelRequest
	conns sync.WaitGroup
}

// New returns a Gateway. It subscribes to the engine's grant events at once, so a grant that
// ends while a session is starting still ends the session.
func New(o Options) *Gateway {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.StartupTimeout == 0 {
		o.StartupTimeout = 10 * time.Second
	}
	if o.MaxMessage == 0 {
		o.MaxMessage = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SweepEvery == 0 {
		o.SweepEvery = time.Second
	}
	g := &Gateway{opts: o, log: o.Logger, clock: o.Clock, byKey: map[uint32]*session{}}
	g.core = gateway.NewCore(gateway.CoreOptions{Protocol: "postgres", Engine: o.Engine, Clock: o.Clock, Logger: o.Logger,
		SweepEvery: o.SweepEvery, RecorderBuffer: o.RecorderBuffer, RecorderBatch: o.RecorderBatch, RecorderFlush: o.RecorderFlush,
		Limits: o.Limits, Refuse: refuse, Relay: o.Relay, Loops: o.Loops}, o.ReuseUpstream, func(u *upstream) net.Conn { return u.conn })
	return g
}

// Recorder returns the gateway's statement recorder (for metrics).
func (g *Gateway) Recorder() *gateway.Recorder { return g.core.Recorder }

// ListenAndServe listens on addr and serves until Close.
func (g *Gateway) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return g.Serve(ln)
}

// Serve accepts connections on ln until Close (see gateway.Entry.Serve: temporary accept
// errors are retried, and clients that have not logged in are limited in number).
func (g *Gateway) Serve(ln net.Listener) error {
	return g.core.Entry.Serve(ln, g.handle)
}

// refuse tells a client over a pre-authentication limit why, without reading its startup:
// libpq shows an ErrorResponse sent in place of the answer to its SSLRequest.
func refuse(c net.Conn, reason string) {
	msg := "jitgate: too many connections are logging in; try again shortly"
	if reason == gateway.RefusedSource {
		msg = "jitgate: too many connections from your address are logging in; try again shortly"
	}
	fatal(pgproto3.NewBackend(c, c), "53300", msg)
}

// Ready returns nil while the gateway accepts connections; otherwise why not.
func (g *Gateway) Ready() error { return g.core.Entry.Ready() }

// ServeConn runs one client connection to its end (for tests and custom listeners).
func (g *Gateway) ServeConn(conn net.Conn) {
	g.core.Conns.Add(1)
	defer g.core.Conns.Done()
	g.handle(conn, func() {})
}

// Close stops accepting connections, ends every session ("jitgate is shutting down"),
// flushes the statement recorder and returns when all connection goroutines are gone.
func (g *Gateway) Close() error { return g.core.Close() }

// Drain stops accepting connections and waits until every session has ended on its own or
// with its grant, or ctx is done; it returns how many are still live (see gateway.Core.Drain).
// Close afterwards ends those.
func (g *Gateway) Drain(ctx context.Context) int { return g.core.Drain(ctx) }

// Sessions returns the number of live sessions.
func (g *Gateway) Sessions() int { return g.core.Registry.Len() }

// add registers a session, which from then on ends with its grant; false once the gateway is
// shutting down.
func (g *Gateway) add(s *session) bool {
	tr, ok := g.core.Registry.Add(s, s.grant)
	if !ok {
		return false
	}
	s.tr = tr
	g.mu.Lock()
	g.byKey[s.keyPID] = s
	g.mu.Unlock()
	return true
}

func (g *Gateway) remove(s *session) {
	s.tr.Remove()
	g.mu.Lock()
	delete(g.byKey, s.keyPID)
	g.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the upstream backend of the matching session.
func (g *Gateway) cancel(pid uint32, key []byte) {
	g.mu.Lock()
	s := g.byKey[pid]
	g.mu.Unlock()
	if s == nil || len(key) != 4 || binary.BigEndian.Uint32(key) != s.keySecret {
		return // unknown or forged: ignored silently, as PostgreSQL does
	}
	s.cancelUpstream()
}

// randomKey returns the client-facing backend key data for a session.
func randomKey() (pid, secret uint32) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, binary.BigEndian.Uint32(b[4:])
}

// fatal sends a FATAL ErrorResponse and flushes; errors are ignored (the connection closes).
func fatal(be *pgproto3.Backend, code, msg string) {
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	_ = be.Flush()
}

// handle runs one client connection: startup, authentication, upstream login, relay. It calls
// authenticated once the client has logged in, freeing its pre-authentication slot.
func (g *Gateway) handle(nc net.Conn, authenticated func()) {
	var conn net.Conn = gateway.NewBufConn(nc) // so that an event loop can take the socket over
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.StartupTimeout)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(g.opts.StartupTimeout))

	be := pgproto3.NewBackend(conn, conn)
	be.SetMaxBodyLen(1 << 16)
	secure := false
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			g.log.Debug("gateway: bad startup", "client", conn.RemoteAddr(), "err", err)
			if !errors.Is(err, net.ErrClosed) {
				fatal(be, "08P01", "jitgate: invalid startup packet")
			}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if g.opts.TLS == nil || secure {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return
			}
			tconn := tls.Server(conn, g.opts.TLS)
			if err := tconn.HandshakeContext(ctx); err != nil {
				g.log.Debug("gateway: TLS handshake failed", "client", conn.RemoteAddr(), "err", err)
				return
			}
			conn, secure = tconn, true
			defer tconn.Close()
			be = pgproto3.NewBackend(conn, conn)
			be.SetMaxBodyLen(1 << 16)
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.CancelRequest:
			g.cancel(m.ProcessID, m.SecretKey)
			return
		case *pgproto3.StartupMessage:
			startup = m
		}
	}
	if startup.ProtocolVersion != pgproto3.ProtocolVersion30 {
		be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0})
	}
	user, resource := startup.Parameters["user"], startup.Parameters["database"]
	if !secure && !g.opts.InsecurePlaintext {
		g.loginFailed(conn, user, resource, "jitgate: this gateway requires TLS (sslmode=require)")
		fatal(be, "28000", "jitgate: this gateway requires TLS (sslmode=require)")
		return
	}
	if user == "" || resource == "" {
		g.loginFailed(conn, user, resource, "jitgate: no user or database in the startup packet")
		fatal(be, "28000", "jitgate: connect with your user name and the resource name as the database")
		return
	}
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return
	}
	if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return
	}
	msg, err := be.Receive()
	if err != nil {
		return
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		g.loginFailed(conn, user, resource, "jitgate: expected a password message")
		fatal(be, "08P01", "jitgate: expected a password message")
		return
	}
	grant, err := g.opts.Engine.AuthenticateSession(ctx, user, resource, pw.Password)
	if err != nil {
		code := "28P01"
		if jitgate.ErrorCode(err) == jitgate.EUNAUTHORIZED {
			// A wrong guess is answered late once its source has guessed wrong repeatedly.
			g.core.Entry.Pause(ctx, g.core.Entry.LoginFailed(conn.RemoteAddr(), user, resource, err))
		} else {
			code = "08006"
			g.log.Error("gateway: cannot check a credential", "err", err)
		}
		fatal(be, code, jitgate.ErrorMessage(err))
		return
	}
	authenticated()
	params := map[string]string{}
	for _, k := range []string{"application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "search_path"} {
		if v, ok := startup.Parameters[k]; ok {
			params[k] = v
		}
	}
	key := gateway.KeyOf(grant.ID, params)
	u, ok := g.core.Pool.Take(key, g.clock.Now())
	if ok {
		g.core.Reused.Add(1)
	} else if u = g.connect(ctx, be, grant, params); u == nil {
		return
	}
	s := newSession(g, conn, u, key, grant)
	if !g.add(s) {
		u.conn.Close()
		fatal(be, "57P01", "jitgate is shutting down")
		return
	}
	defer g.remove(s)
	s.info = &jitgate.Session{GrantID: grant.ID, User: grant.User, Resource: grant.Resource, Role: grant.Role, ClientAddr: conn.RemoteAddr().String(), Owner: grant.Owner}
	if err := g.opts.Engine.StartSession(ctx, s.info); err != nil {
		u.conn.Close()
		fatal(be, "08006", "jitgate: cannot record the session; refusing it")
		g.log.Error("gateway: start session", "err", err)
		return
	}
	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range u.params {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], s.keySecret)
	be.Send(&pgproto3.BackendKeyData{ProcessID: s.keyPID, SecretKey: secret[:]})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		u.conn.Close()
		s.finish("client went away during startup")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	// The head of this session's session.statements events: user, grant and session are
	// their columns.
	s.backlog.Rec = g.core.Recorder
	s.backlog.Head = &jitgate.AuditEvent{Actor: grant.User, Action: jitgate.ActionSessionStatements,
		RequestID: grant.RequestID, GrantID: grant.ID, SessionID: s.info.ID}
	g.log.Info("gateway: session started", "session", s.info.ID, "grant", grant.ID, "user", grant.User, "resource", grant.Resource, "role", grant.Role, "upstream_pid", u.pid)
	s.run()
}

// loginFailed accounts a login the client broke off or got wrong before its credential was
// checked.
func (g *Gateway) loginFailed(conn net.Conn, user, resource, msg string) {
	g.core.Entry.LoginFailed(conn.RemoteAddr(), user, resource,
		&jitgate.AuthFailure{Reason: jitgate.AuthProtocol, Err: jitgate.Errorf(jitgate.EUNAUTHORIZED, "%s", msg)})
}

// The upstream connection check (see connect).
const (
	connectionCheckParam    = "client_connection_check_interval"
	connectionCheckInterval = "1000" // milliseconds
)

// connect logs in to the grant's database with the login configured for its role, passing on
// the client's runtime parameters. On failure it tells the client why and returns nil.
func (g *Gateway) connect(ctx context.Context, be *pgproto3.Backend, grant *jitgate.Grant, runtime map[string]string) *upstream {
	cfg, err := g.opts.Upstream(grant)
	if jitgate.ErrorCode(err) == jitgate.EUNAVAILABLE {
		// The grant's ephemeral user is still being created: a moment's wait, not a fault.
		fatal(be, "57P03", "jitgate: "+jitgate.ErrorMessage(err))
		return nil
	}
	if err != nil {
		g.log.Error("gateway: upstream config", "grant", grant.ID, "err", err)
		fatal(be, "08006", fmt.Sprintf("jitgate: resource %s is not reachable through the gateway: %s", grant.Resource, jitgate.ErrorMessage(err)))
		return nil
	}
	maps.Copy(cfg.RuntimeParams, runtime)
	// If this process dies (SIGKILL, OOM), the kernel closes its upstream sockets, but
	// PostgreSQL notices a vanished client only when it next writes to it: a long query would
	// run on, past its grant's end and unaudited. With this set (PostgreSQL 14 and later) the
	// backend checks its socket every second while a query runs and ends it once the socket is
	// gone.
	cfg.RuntimeParams[connectionCheckParam] = connectionCheckInterval
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return gateway.NewBufConn(c), nil // so that an event loop can take the socket over
	}
	up, err := pgconn.ConnectConfig(ctx, cfg)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42704" && strings.Contains(pe.Message, connectionCheckParam) {
		// PostgreSQL 13 or older: no connection check; a crash of this process then leaves a
		// running query to end when it next writes.
		delete(cfg.RuntimeParams, connectionCheckParam)
		up, err = pgconn.ConnectConfig(ctx, cfg)
	}
	if errors.As(err, &pe) && pe.Code == "53300" && g.core.Pool.Size() > 0 {
		// Too many connections for the login: parked ones of this grant may be what holds the
		// slots (they count against an ephemeral user's connection limit). Free them and retry.
		g.core.Pool.Drop(grant.ID)
		up, err = pgconn.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		switch {
		case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "28"):
			// Do not show the client the upstream login's name or why it was refused.
			fatal(be, pe.Code, fmt.Sprintf("jitgate: the upstream login for %s/%s was refused; an operator must fix its credentials", grant.Resource, grant.Role))
		case errors.As(err, &pe):
			fatal(be, pe.Code, "jitgate: upstream: "+pe.Message)
		default:
			fatal(be, "08006", fmt.Sprintf("jitgate: cannot connect to %s", grant.Resource))
		}
		g.log.Warn("gateway: upstream connect failed", "grant", grant.ID, "resource", grant.Resource, "err", err)
		return nil
	}
	hj, err := up.Hijack()
	if err != nil {
		up.Close(context.Background())
		fatal(be, "08006", "jitgate: upstream connection failed")
		return nil
	}
	return upstreamOf(hj)
}
