package postgres_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/internal/gwtest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// The upstream is the local test PostgreSQL; the gateway logs in as jg_gw_read or jg_gw_write,
// login roles that hold only their role's privileges.
const gwConfig = `
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: app-db
    kind: postgres
    address: %s
    database: %s
    sslmode: disable
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: jg_gw_read}}
      - {name: write, grants: [pg_write_all_data], upstream: {user: jg_gw_write}}
      - {name: nologin, grants: [x]}
policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: ["*"]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

type env struct {
	dir    jitgate.Directory
	eng    *access.Engine
	store  *store.DB
	gw     *postgres.Gateway
	addr   string
	alice  context.Context
	bob    context.Context
	cancel context.CancelFunc
}

func newEnv(t *testing.T, opts ...func(*postgres.Options)) *env {
	t.Helper()
	addr, db := testdb.GatewayUpstream(t)
	return newEnvConfig(t, fmt.Sprintf(gwConfig, addr, db), opts...)
}

// newEnvConfig starts an engine (SQLite store, scheduler running) and a gateway for the config
// text; alice requests, bob approves.
func newEnvConfig(t *testing.T, src string, opts ...func(*postgres.Options)) *env {
	t.Helper()
	cfg, err := config.Parse("gw.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), testdb.SQLite(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory()})
	ctx, cancel := context.WithCancel(context.Background())
	go eng.Run(ctx)
	o := postgres.Options{Engine: eng.GatewayService(), Upstream: postgres.ConfigUpstream(set, nil), InsecurePlaintext: true}
	for _, f := range opts {
		f(&o)
	}
	gw := postgres.New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gw.Serve(ln)
	dir := cfg.Directory()
	e := &env{dir: dir, eng: eng, store: st, gw: gw, addr: ln.Addr().String(), cancel: cancel}
	a, _ := dir.LookupUser(ctx, "alice")
	b, _ := dir.LookupUser(ctx, "bob")
	e.alice, e.bob = jitgate.NewContext(context.Background(), a), jitgate.NewContext(context.Background(), b)
	t.Cleanup(func() {
		gw.Close()
		cancel()
		st.Close()
	})
	return e
}

// relays runs a test once with each relay (the event loop only exists on Linux).
func relays(t *testing.T, f func(t *testing.T, relay string)) {
	for _, r := range []string{postgres.RelayLoop, postgres.RelayGoroutines} {
		t.Run(r, func(t *testing.T) { f(t, r) })
	}
}

func withRelay(relay string) func(*postgres.Options) {
	return func(o *postgres.Options) { o.Relay = relay }
}

// checkRelay fails the test unless its sessions went through the relay it asked for.
func (e *env) checkRelay(t *testing.T, relay string) {
	t.Helper()
	looped := postgres.Looped(e.gw) > 0
	if want := relay == postgres.RelayLoop && runtime.GOOS == "linux"; looped != want {
		t.Errorf("relay %s: event loop used = %v", relay, looped)
	}
}

// grant requests role for d (auto-approved) and mints a credential.
func (e *env) grant(t *testing.T, role string, d time.Duration) (*jitgate.Grant, string) {
	t.Helper()
	r, err := e.eng.Submit(e.alice, jitgate.NewRequest{Resource: "app-db", Role: role, Duration: d, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.eng.IssueLogin(e.alice, r.GrantID, jitgate.KindPostgres)
	if err != nil {
		t.Fatal(err)
	}
	return in.Grant, in.Password
}

func (e *env) dsn(user, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: e.addr, Path: "/app-db", RawQuery: "sslmode=disable&connect_timeout=5"}
	return u.String()
}

func (e *env) connect(t *testing.T, secret string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.dsn("alice", secret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestRefusedWithoutGrant(t *testing.T) {
	e := newEnv(t)
	for _, pw := range []string{"jgs_nope", ""} {
		_, err := pgx.Connect(context.Background(), e.dsn("alice", pw))
		if sqlstate(err) != "28P01" || !strings.Contains(err.Error(), "unknown credential") {
			t.Fatalf("password %q: %v", pw, err)
		}
	}
	// Someone else's credential is answered like an unknown one: it does not confirm to the
	// one who tries it that the credential is real.
	_, secret := e.grant(t, "read", time.Hour)
	_, err := pgx.Connect(context.Background(), e.dsn("bob", secret))
	if sqlstate(err) != "28P01" || !strings.Contains(err.Error(), "unknown credential") || strings.Contains(err.Error(), "alice") {
		t.Fatalf("foreign credential: %v", err)
	}
	// A role without an upstream login cannot be reached.
	_, secret = e.grant(t, "nologin", time.Hour)
	_, err = pgx.Connect(context.Background(), e.dsn("alice", secret))
	if err == nil || !strings.Contains(err.Error(), "no upstream login") {
		t.Fatalf("no upstream: %v", err)
	}
}

func TestReadGrantReadsAndCannotWrite(t *testing.T) { relays(t, testReadGrantReadsAndCannotWrite) }

func testReadGrantReadsAndCannotWrite(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "read", time.Hour)
	conn := e.connect(t, secret)
	ctx := context.Background()
	var name, user string
	if err := conn.QueryRow(ctx, "SELECT name, current_user FROM jg_gw.items WHERE id = $1", 1).Scan(&name, &user); err != nil {
		t.Fatal(err)
	}
	if name != "widget" || user != "jg_gw_read" {
		t.Fatalf("got %q as %q", name, user)
	}
	_, err := conn.Exec(ctx, "INSERT INTO jg_gw.items VALUES (2, 'gadget')")
	if sqlstate(err) != "42501" {
		t.Fatalf("write with a read grant: %v", err)
	}
	// RESET ROLE cannot widen anything: the login itself is the narrow role.
	if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO jg_gw.items VALUES (2, 'gadget')"); sqlstate(err) != "42501" {
		t.Fatalf("write after RESET ROLE: %v", err)
	}
	// Simple protocol too, with a syntax error.
	if _, err := conn.Exec(ctx, "SELEC 1", pgx.QueryExecModeSimpleProtocol); sqlstate(err) != "42601" {
		t.Fatalf("syntax error: %v", err)
	}
	// A client on LATIN1 sends text that is not UTF-8: it runs, and its record (with U+FFFD for
	// the bad byte) keeps the chain verifiable.
	if _, err := conn.Exec(ctx, "SET client_encoding TO 'LATIN1'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	latin, err := conn.PgConn().Exec(ctx, "SELECT 'caf\xe9'").ReadAll() // pgx itself insists on UTF8
	if err != nil || len(latin) != 1 || len(latin[0].Rows) != 1 || string(latin[0].Rows[0][0]) != "caf\xe9" {
		t.Fatalf("LATIN1 round trip: %v, %v", latin, err)
	}
	conn.Close(ctx)

	// Every statement is in the audit log with its tag or SQLSTATE, and the chain verifies.
	stmts := waitStatements(t, e, g.ID, 7)
	want := map[string]string{
		"SELECT name, current_user FROM jg_gw.items WHERE id = $1": "tag=SELECT 1",
		"INSERT INTO jg_gw.items VALUES (2, 'gadget')":             "sqlstate=42501",
		"RESET ROLE":         "tag=RESET",
		"SELEC 1":            "sqlstate=42601",
		"SELECT 'caf\uFFFD'": "tag=SELECT 1",
	}
	for sql, outcome := range want {
		found := false
		for _, st := range stmts {
			if st.SQL == sql && (st.Tag == strings.TrimPrefix(outcome, "tag=") || st.SQLState == strings.TrimPrefix(outcome, "sqlstate=")) {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit event for %q with %s", sql, outcome)
		}
	}
	res, err := audit.Verify(ctx, e.store)
	if err != nil || !res.OK {
		t.Fatalf("verify: %+v %v", res, err)
	}
	e.checkRelay(t, relay)
}

// waitStatements waits until the grant has at least n statements recorded, and returns them
// in the order they were recorded (numbered from 1 within each session).
func waitStatements(t *testing.T, e *env, grantID int64, n int) []jitgate.Statement {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var evs []jitgate.Statement
		err := e.store.View(context.Background(), func(tx jitgate.Tx) error {
			all, err := tx.ListAudit(jitgate.AuditFilter{GrantID: grantID})
			for _, ev := range all {
				if ev.Action == jitgate.ActionSessionStatements {
					if ev.Details["count"] != strconv.Itoa(len(ev.Statements)) {
						t.Errorf("event %d: count %s for %d statements", ev.Seq, ev.Details["count"], len(ev.Statements))
					}
					evs = append(evs, ev.Statements...)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d statement events for grant %d", len(evs), grantID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A revoke closes a live session within a second, cancelling its running query upstream.
func TestRevokeEndsLiveSession(t *testing.T) { relays(t, testRevokeEndsLiveSession) }

func testRevokeEndsLiveSession(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "read", time.Hour)
	conn := e.connect(t, secret)
	errc := sleepUpstream(t, conn)
	start := time.Now()
	if _, err := e.eng.Revoke(e.bob, g.ID, "incident over"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if took := time.Since(start); took > time.Second {
			t.Errorf("session closed %v after the revoke", took)
		}
		if sqlstate(err) != "57P01" && !strings.Contains(err.Error(), "grant") {
			t.Fatalf("query error: %v", err)
		}
		if !strings.Contains(err.Error(), "revoked") {
			t.Errorf("message does not say why: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("session still open 3s after the revoke")
	}
	waitActivity(t, "pg_sleep", false) // cancelled upstream, not left running
	_, err := pgx.Connect(context.Background(), e.dsn("alice", secret))
	if sqlstate(err) != "28P01" || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("new connection after revoke: %v", err)
	}
}

// At the grant's end, an idle session and a running query are both ended within a second,
// and new connections are refused.
func TestExpiryEndsSessions(t *testing.T) { relays(t, testExpiryEndsSessions) }

func testExpiryEndsSessions(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "read", 2*time.Second)
	idle := e.connect(t, secret)
	busy := e.connect(t, secret)
	errc := sleepUpstream(t, busy)
	select {
	case err := <-errc:
		late := time.Since(g.EndsAt)
		if late > time.Second || late < -50*time.Millisecond {
			t.Errorf("running query ended %v after the grant's end", late)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("grant %d expired", g.ID)) {
			t.Errorf("message: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("busy session outlived its grant")
	}
	waitActivity(t, "pg_sleep", false)
	if err := idle.Ping(context.Background()); err == nil {
		t.Fatal("idle session still works after the grant's end")
	}
	_, err := pgx.Connect(context.Background(), e.dsn("alice", secret))
	if sqlstate(err) != "28P01" || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("new connection after expiry: %v", err)
	}
}

// An extension moves the deadline of live sessions.
func TestExtensionMovesDeadline(t *testing.T) {
	e := newEnv(t)
	g, secret := e.grant(t, "read", 2*time.Second)
	conn := e.connect(t, secret)
	if _, err := e.eng.Extend(e.alice, g.ID, time.Minute, "more"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(g.EndsAt) + 300*time.Millisecond)
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("session ended at the old deadline: %v", err)
	}
}

// sleepUpstream runs a 30-second pg_sleep on conn in the background, returns once it is
// running upstream, and delivers the query's error.
func sleepUpstream(t *testing.T, conn *pgx.Conn) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		errc <- err
	}()
	waitActivity(t, "pg_sleep", true)
	return errc
}

// waitActivity waits until a query containing text is (or is no longer) running upstream.
func waitActivity(t *testing.T, text string, present bool) {
	t.Helper()
	testdb.WaitUpstreamQuery(t, text, present, 3*time.Second)
}

// A client's CancelRequest reaches the right upstream backend.
func TestCancelRequest(t *testing.T) {
	e := newEnv(t)
	_, secret := e.grant(t, "read", time.Hour)
	conn := e.connect(t, secret)
	errc := sleepUpstream(t, conn)
	if err := conn.PgConn().CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if sqlstate(err) != "57014" {
			t.Fatalf("cancelled query: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("cancel did not reach upstream")
	}
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("session unusable after cancel: %v", err)
	}
}

// The real psql binary: runs statements, and is thrown out when the grant is revoked.
func TestPsql(t *testing.T) { relays(t, testPsql) }

func testPsql(t *testing.T, relay string) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("psql is required with CI=true")
		}
		t.Skip("psql not installed")
	}
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "read", time.Hour)
	host, port, _ := net.SplitHostPort(e.addr)
	cmd := func(sql string) *exec.Cmd {
		c := exec.Command(psql, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
		c.Env = append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER=alice", "PGDATABASE=app-db", "PGPASSWORD="+secret, "PGSSLMODE=disable")
		return c
	}
	out, err := cmd("SELECT name FROM jg_gw.items").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "widget" {
		t.Fatalf("psql select: %v %s", err, out)
	}
	out, err = cmd("DELETE FROM jg_gw.items").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("psql delete: %v %s", err, out)
	}
	long := cmd("SELECT pg_sleep(30)")
	done := make(chan []byte, 1)
	go func() { b, _ := long.CombinedOutput(); done <- b }()
	waitActivity(t, "pg_sleep", true)
	start := time.Now()
	if _, err := e.eng.Revoke(e.alice, g.ID, "done"); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-done:
		if took := time.Since(start); took > time.Second {
			t.Errorf("psql ran on %v after the revoke", took)
		}
		if !strings.Contains(string(b), "revoked") {
			t.Errorf("psql output: %s", b)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("psql still running 3s after the revoke")
	}
}

// Bad input gets an error or a clean close, and leaves no goroutines or upstream connections.
func TestBadInputLeaksNothing(t *testing.T) { relays(t, testBadInputLeaksNothing) }

func testBadInputLeaksNothing(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay), func(o *postgres.Options) { o.StartupTimeout = 300 * time.Millisecond })
	_, secret := e.grant(t, "read", time.Hour)
	before, fdsBefore := runtime.NumGoroutine(), gwtest.OpenSockets()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	readAll := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var sb strings.Builder
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				return sb.String()
			}
		}
	}
	cases := []struct {
		name string
		send []byte
		want string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "invalid startup packet"},
		{"unknown protocol", startup(0x00020000, nil), "invalid startup packet"},
		{"oversized startup", append([]byte{0, 1, 0, 0}, make([]byte, 100)...), "invalid startup packet"},
		{"silent client", nil, ""},
		{"no user", startup(0x00030000, map[string]string{"database": "app-db"}), "connect with your user name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := dial()
			defer conn.Close()
			if c.send != nil {
				conn.Write(c.send)
			}
			if got := readAll(conn); !strings.Contains(got, c.want) {
				t.Fatalf("got %q, want it to contain %q", got, c.want)
			}
		})
	}
	// A client that vanishes mid-query.
	conn, err := pgx.Connect(context.Background(), e.dsn("alice", secret))
	if err != nil {
		t.Fatal(err)
	}
	go conn.Exec(context.Background(), "SELECT pg_sleep(30)")
	waitActivity(t, "pg_sleep", true)
	conn.PgConn().Conn().Close()
	waitActivity(t, "pg_sleep", false) // the gateway cancels it; PostgreSQL alone would not notice
	deadline := time.Now().Add(5 * time.Second)
	for e.gw.Sessions() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("session of a vanished client never ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Goroutines settle back (a little slack for the runtime's own).
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before+2; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// So do file descriptors: the event loop holds sockets outside Go's poller, and each
	// session must close both of its own.
	for deadline := time.Now().Add(5 * time.Second); gwtest.OpenSockets() > fdsBefore; {
		if time.Now().After(deadline) {
			t.Fatalf("open sockets: %d before, %d after", fdsBefore, gwtest.OpenSockets())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startup encodes a startup packet with the given protocol version and parameters.
func startup(version uint32, params map[string]string) []byte {
	body := []byte{byte(version >> 24), byte(version >> 16), byte(version >> 8), byte(version)}
	for k, v := range params {
		body = append(append(append(append(body, k...), 0), v...), 0)
	}
	body = append(body, 0)
	n := len(body) + 4
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// With a certificate configured, clients get TLS on SSLRequest and plaintext is refused.
func TestTLS(t *testing.T) { relays(t, testTLS) }

func testTLS(t *testing.T, relay string) {
	upAddr, upDB := testdb.GatewayUpstream(t)
	tlsCfg, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvConfig(t, strings.Replace(fmt.Sprintf(gwConfig, upAddr, upDB), "sslmode: disable", "sslmode: require", 1), withRelay(relay), func(o *postgres.Options) { o.TLS, o.InsecurePlaintext = tlsCfg, false })
	_, secret := e.grant(t, "read", time.Hour)
	_, err = pgx.Connect(context.Background(), e.dsn("alice", secret))
	if sqlstate(err) != "28000" || !strings.Contains(err.Error(), "requires TLS") {
		t.Fatalf("plaintext: %v", err)
	}
	dsn := strings.Replace(e.dsn("alice", secret), "sslmode=disable", "sslmode=require", 1)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if !conn.PgConn().Conn().(interface{ ConnectionState() tls.ConnectionState }).ConnectionState().HandshakeComplete {
		t.Fatal("not TLS")
	}
	// TLS on both sides: the upstream login uses sslmode=require too.
	var upTLS bool
	if err := conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&upTLS); err != nil || !upTLS {
		t.Fatalf("query over TLS: upstream TLS %v, %v", upTLS, err)
	}
	// A result bigger than a TLS record crosses intact.
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT length(string_agg(md5(g::text), '')) FROM generate_series(1, 5000) g").Scan(&n); err != nil || n != 160000 {
		t.Fatalf("large result over TLS: %d, %v", n, err)
	}
	// 20 MB read slowly: more than the sockets buffer, so the gateway must hold back (stop
	// reading upstream) rather than buffer it all, and resume as the client reads.
	rows, err := conn.Query(context.Background(), "SELECT repeat('x', 1000000) FROM generate_series(1, 20)")
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil || len(v) != 1000000 {
			t.Fatalf("row %d: %d bytes, %v", k, len(v), err)
		}
		k++
		time.Sleep(5 * time.Millisecond)
	}
	if rows.Err() != nil || k != 20 {
		t.Fatalf("%d rows, %v", k, rows.Err())
	}
	e.checkRelay(t, relay)
}

// The gateway logs in upstream with SCRAM-SHA-256 and a password from the environment, on a
// private cluster that checks passwords for real.
func TestSCRAMUpstream(t *testing.T) {
	addr, super := testdb.PrivateCluster(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, super)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, q := range []string{
		`CREATE ROLE app_read LOGIN PASSWORD 'read-secret-42' IN ROLE pg_read_all_data`,
		`CREATE TABLE notes (id int, body text)`,
		`INSERT INTO notes VALUES (1, 'scram works')`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("JG_TEST_APP_READ_PASSWORD", "read-secret-42")
	src := fmt.Sprintf(`
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: app-db
    kind: postgres
    address: %s
    database: postgres
    sslmode: disable
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: app_read, password_env: JG_TEST_APP_READ_PASSWORD}}
policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: [read]
    max_duration: 1h
    approval: {steps: [{approvers: {groups: [sre]}}]}
    auto_approve: 'true'
`, addr)
	e := newEnvConfig(t, src)
	_, secret := e.grant(t, "read", time.Hour)
	conn, err := pgx.Connect(ctx, e.dsn("alice", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var body, who string
	if err := conn.QueryRow(ctx, `SELECT body, current_user FROM notes`).Scan(&body, &who); err != nil {
		t.Fatal(err)
	}
	if body != "scram works" || who != "app_read" {
		t.Fatalf("got %q as %q", body, who)
	}
	// The cluster accepts TCP logins only by SCRAM, and app_read's verifier is SCRAM's.
	var scram bool
	if err := admin.QueryRow(ctx, `SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app_read'`).Scan(&scram); err != nil || !scram {
		t.Fatalf("app_read has no SCRAM verifier: %v", err)
	}
	// A wrong upstream password is an upstream error the client sees, not a silent success.
	t.Setenv("JG_TEST_APP_READ_PASSWORD", "wrong")
	_, err = pgx.Connect(ctx, e.dsn("alice", secret))
	if sqlstate(err) != "28P01" || !strings.Contains(err.Error(), "upstream login for app-db/read was refused") || strings.Contains(err.Error(), "app_read") {
		t.Fatalf("wrong upstream password: %v", err)
	}
}

// storeDown fails RecordAudit while down is set, as an unreachable store would.
type storeDown struct {
	postgres.Engine
	down atomic.Bool
}

func (s *storeDown) RecordAudit(ctx context.Context, evs []*jitgate.AuditEvent) error {
	if s.down.Load() {
		return errors.New("store unreachable")
	}
	return s.Engine.RecordAudit(ctx, evs)
}

// While the audit store is down and the statement queue is full, the session waits (no
// statement runs unrecorded), but the grant's end still ends it on time; once the store is
// back, every statement is recorded.
func TestEndsWhileRecorderIsFull(t *testing.T) { relays(t, testEndsWhileRecorderIsFull) }

func testEndsWhileRecorderIsFull(t *testing.T, relay string) {
	sd := &storeDown{}
	e := newEnv(t, withRelay(relay), func(o *postgres.Options) {
		sd.Engine = o.Engine
		o.Engine, o.RecorderBuffer, o.RecorderFlush = sd, 4, 5*time.Millisecond
	})
	g, secret := e.grant(t, "read", 3*time.Second)
	conn := e.connect(t, secret)
	ctx := context.Background()
	sd.down.Store(true)
	ran := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		n := 0
		defer func() { ran <- n }()
		for range 100 {
			if _, err := conn.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
				errc <- err
				return
			}
			n++
		}
		errc <- nil
	}()
	select {
	case err := <-errc:
		late := time.Since(g.EndsAt)
		if err == nil || late > time.Second || late < -50*time.Millisecond {
			t.Errorf("statements ended %v after the grant's end with %v", late, err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("the session outlived its grant while the recorder was full")
	}
	// The recorder holds 4 in its buffer and 4 in the batch it keeps retrying; the session may
	// finish the statement whose result it was reading, then waits.
	n := <-ran
	if n > 10 {
		t.Fatalf("%d statements ran while the store was down", n)
	}
	t.Logf("%d statements ran before the session waited", n)
	if _, _, waits := postgres.RecorderStats(e.gw); waits == 0 {
		t.Error("no back-pressure wait counted")
	}
	sd.down.Store(false)
	waitStatements(t, e, g.ID, n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		recorded, lost, _ := postgres.RecorderStats(e.gw)
		if lost != 0 {
			t.Fatalf("%d statements lost", lost)
		}
		if recorded >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorded %d of %d statements", recorded, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res, err := audit.Verify(ctx, e.store); err != nil || !res.OK {
		t.Fatalf("verify: %+v %v", res, err)
	}
	e.checkRelay(t, relay)
}
