package mysql_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	drv "github.com/go-sql-driver/mysql"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/mysql"
	"github.com/jitgate/jitgate/internal/gwtest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// The upstream is the local test MariaDB; the gateway logs in as jg_gwmy_read or
// jg_gwmy_write, accounts that hold only their role's privileges.
const gwConfig = `
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: shop-db
    kind: mysql
    address: %s
    database: jg_gwmy
    sslmode: disable
    roles:
      - {name: read, grants: ["SELECT ON jg_gwmy.*"], upstream: {user: jg_gwmy_read, password_env: JG_GWMY_PASSWORD}}
      - {name: write, grants: ["SELECT, INSERT ON jg_gwmy.*"], upstream: {user: jg_gwmy_write, password_env: JG_GWMY_PASSWORD}}
      - {name: nologin, grants: ["SELECT ON jg_gwmy.*"]}
      - {name: badlogin, grants: ["SELECT ON jg_gwmy.*"], upstream: {user: jg_gwmy_read, password_env: JG_GWMY_WRONG}}
  - name: pg-db
    kind: postgres
    address: 127.0.0.1:1
    database: x
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: x}}
policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [shop-db, pg-db]
    roles: ["*"]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

type env struct {
	eng   *access.Engine
	store *store.DB
	gw    *mysql.Gateway
	addr  string
	admin *sql.DB // the upstream's admin
	alice context.Context
	bob   context.Context
}

// newEnv starts an engine (SQLite store, scheduler running) and a MySQL gateway with TLS
// (self-signed) in front of the test MariaDB; alice requests, bob approves.
func newEnv(t *testing.T, opts ...func(*mysql.Options)) *env {
	t.Helper()
	addr, admin := testdb.MySQLGatewayUpstream(t)
	t.Setenv("JG_GWMY_PASSWORD", testdb.MySQLUpstreamPassword)
	t.Setenv("JG_GWMY_WRONG", "not-the-password")
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(gwConfig, addr)))
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
	tlsCfg, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	o := mysql.Options{Engine: eng.GatewayService(), Upstream: mysql.ConfigUpstream(set, nil), TLS: tlsCfg, ReuseUpstream: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	gw := mysql.New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gw.Serve(ln)
	dir := cfg.Directory()
	e := &env{eng: eng, store: st, gw: gw, addr: ln.Addr().String(), admin: admin}
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
	for _, r := range []string{mysql.RelayLoop, mysql.RelayGoroutines} {
		t.Run(r, func(t *testing.T) { f(t, r) })
	}
}

func withRelay(relay string) func(*mysql.Options) {
	return func(o *mysql.Options) { o.Relay = relay }
}

// checkRelay fails the test unless its sessions went through the relay it asked for.
func (e *env) checkRelay(t *testing.T, relay string) {
	t.Helper()
	looped := mysql.Looped(e.gw) > 0
	if want := relay == mysql.RelayLoop && runtime.GOOS == "linux"; looped != want {
		t.Errorf("relay %s: event loop used = %v", relay, looped)
	}
}

// grant requests role for d on resource (auto-approved) and mints a credential.
func (e *env) grant(t *testing.T, resource, role string, d time.Duration) (*jitgate.Grant, string) {
	t.Helper()
	r, err := e.eng.Submit(e.alice, jitgate.NewRequest{Resource: resource, Role: role, Duration: d, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.eng.IssueLogin(e.alice, r.GrantID, jitgate.KindMySQL, jitgate.KindPostgres)
	if err != nil {
		t.Fatal(err)
	}
	return in.Grant, in.Password
}

// dsn is go-sql-driver's DSN for the gateway: only user, password, address, database and TLS.
func (e *env) dsn(user, password, db string) string {
	c := drv.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", e.addr, db
	c.TLSConfig = "skip-verify"
	c.Timeout = 5 * time.Second
	return c.FormatDSN()
}

func (e *env) open(t *testing.T, secret string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", e.dsn("alice", secret, "shop-db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// conn is one connection (one gateway session).
func (e *env) conn(t *testing.T, secret string) *sql.Conn {
	t.Helper()
	c, err := e.open(t, secret).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mysqlErr(err error) (uint16, string) {
	var me *drv.MySQLError
	if errors.As(err, &me) {
		return me.Number, string(me.SQLState[:])
	}
	return 0, ""
}

func TestRefusedWithoutGrant(t *testing.T) {
	e := newEnv(t)
	ping := func(user, pw, db string) error {
		c, err := sql.Open("mysql", e.dsn(user, pw, db))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Ping()
	}
	for _, pw := range []string{"jgs_nope", ""} {
		err := ping("alice", pw, "shop-db")
		if n, _ := mysqlErr(err); n != 1045 || (pw != "" && !strings.Contains(err.Error(), "unknown credential")) {
			t.Fatalf("password %q: %v", pw, err)
		}
	}
	// Someone else's credential is answered like an unknown one.
	_, secret := e.grant(t, "shop-db", "read", time.Hour)
	if err := ping("bob", secret, "shop-db"); !strings.Contains(fmt.Sprint(err), "unknown credential") || strings.Contains(err.Error(), "alice") {
		t.Fatalf("foreign credential: %v", err)
	}
	// A credential names its resource.
	if err := ping("alice", secret, "pg-db"); !strings.Contains(fmt.Sprint(err), "not pg-db") {
		t.Fatalf("wrong resource: %v", err)
	}
	// A PostgreSQL grant's credential is no way into this gateway.
	_, pgSecret := e.grant(t, "pg-db", "read", time.Hour)
	if err := ping("alice", pgSecret, "pg-db"); !strings.Contains(fmt.Sprint(err), "not a MySQL resource") {
		t.Fatalf("postgres credential: %v", err)
	}
	// A role without an upstream login cannot be reached; a wrong upstream password is the
	// operator's to fix, and its login name is not shown.
	_, secret = e.grant(t, "shop-db", "nologin", time.Hour)
	if err := ping("alice", secret, "shop-db"); !strings.Contains(fmt.Sprint(err), "no upstream login") {
		t.Fatalf("no upstream: %v", err)
	}
	_, secret = e.grant(t, "shop-db", "badlogin", time.Hour)
	if err := ping("alice", secret, "shop-db"); !strings.Contains(fmt.Sprint(err), "operator must fix") || strings.Contains(err.Error(), "jg_gwmy_read") {
		t.Fatalf("bad upstream login: %v", err)
	}
	// Without TLS, the gateway refuses the login.
	c := drv.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = "alice", secret, "tcp", e.addr, "shop-db"
	db, _ := sql.Open("mysql", c.FormatDSN())
	defer db.Close()
	if err := db.Ping(); !strings.Contains(fmt.Sprint(err), "requires TLS") {
		t.Fatalf("plaintext: %v", err)
	}
}

func TestReadGrantReadsAndCannotWrite(t *testing.T) { relays(t, testReadGrantReadsAndCannotWrite) }

func testReadGrantReadsAndCannotWrite(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", time.Hour)
	c := e.conn(t, secret)
	ctx := context.Background()
	var name, user string
	// go-sql-driver prepares this (COM_STMT_PREPARE, COM_STMT_EXECUTE).
	if err := c.QueryRowContext(ctx, "SELECT name, CURRENT_USER() FROM items WHERE id = ?", 1).Scan(&name, &user); err != nil {
		t.Fatal(err)
	}
	if name != "widget" || user != "jg_gwmy_read@%" {
		t.Fatalf("got %q as %q", name, user)
	}
	_, err := c.ExecContext(ctx, "INSERT INTO items VALUES (2, 'gadget')")
	if n, state := mysqlErr(err); n != 1142 || state != "42000" {
		t.Fatalf("write with a read grant: %v", err)
	}
	if _, err := c.ExecContext(ctx, "SELEC 1"); err == nil {
		t.Fatal("syntax error accepted")
	}
	// A multi-row result and an empty one.
	rows, err := c.QueryContext(ctx, "SELECT seq FROM seq_1_to_100")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if n != 100 {
		t.Fatalf("%d rows", n)
	}
	c.Close()
	e.gw.Close() // ends and records every session
	stmts := statements(t, e, g.ID)
	want := []struct{ sql, protocol, tag, sqlstate string }{
		{"SELECT name, CURRENT_USER() FROM items WHERE id = ?", "prepare", "PREPARED", ""},
		{"SELECT name, CURRENT_USER() FROM items WHERE id = ?", "execute", "ROWS 1", ""},
		{"INSERT INTO items VALUES (2, 'gadget')", "", "ERROR 1142", "42000"},
		{"SELEC 1", "", "ERROR 1064", "42000"},
		{"SELECT seq FROM seq_1_to_100", "", "ROWS 100", ""},
	}
	var got []string
	for _, s := range stmts {
		if s.Protocol == "command" && strings.HasPrefix(s.SQL, "COM_") {
			continue
		}
		got = append(got, fmt.Sprintf("%s|%s|%s|%s", s.SQL, s.Protocol, s.Tag, s.SQLState))
	}
	var wants []string
	for _, w := range want {
		wants = append(wants, fmt.Sprintf("%s|%s|%s|%s", w.sql, w.protocol, w.tag, w.sqlstate))
	}
	// go-sql-driver may close the prepared statement before or after reading; compare the
	// recorded statements in order.
	if strings.Join(got, "\n") != strings.Join(wants, "\n") {
		t.Fatalf("recorded statements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wants, "\n"))
	}
	e.checkRelay(t, relay)
	verify(t, e)
}

func verify(t *testing.T, e *env) { t.Helper(); gwtest.VerifyAudit(t, e.store) }

func statements(t *testing.T, e *env, grantID int64) []jitgate.Statement {
	t.Helper()
	return gwtest.Statements(t, e.store, grantID)
}

// sleepUpstream runs SELECT SLEEP(60) on c in the background, returns once it runs upstream,
// and delivers the query's error.
func (e *env) sleepUpstream(t *testing.T, c *sql.Conn) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.ExecContext(context.Background(), "SELECT SLEEP(60)")
		errc <- err
	}()
	e.waitProcess(t, "SLEEP(60)", true)
	return errc
}

// waitProcess waits until a query containing text is (or is no longer) running upstream as
// one of the test accounts.
func (e *env) waitProcess(t *testing.T, text string, present bool) {
	t.Helper()
	db := e.admin
	deadline := time.Now().Add(3 * time.Second)
	for {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER LIKE 'jg_gwmy_%' AND COMMAND = 'Query' AND INFO LIKE ?`,
			"%"+text+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if (n > 0) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream query %q present=%v after 3s (count %d)", text, !present, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A revoke ends a running query within a second: killed upstream, the client told why.
func TestRevokeEndsRunningQuery(t *testing.T) { relays(t, testRevokeEndsRunningQuery) }

func testRevokeEndsRunningQuery(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", time.Hour)
	c := e.conn(t, secret)
	errc := e.sleepUpstream(t, c)
	start := time.Now()
	if _, err := e.eng.Revoke(e.bob, g.ID, "incident over"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if took := time.Since(start); took > time.Second {
			t.Errorf("session closed %v after the revoke", took)
		}
		if n, _ := mysqlErr(err); n != 1927 || !strings.Contains(err.Error(), fmt.Sprintf("grant %d", g.ID)) || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("query error: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("session still open 3s after the revoke")
	}
	e.waitProcess(t, "SLEEP(60)", false) // killed upstream, not left running
	db, _ := sql.Open("mysql", e.dsn("alice", secret, "shop-db"))
	defer db.Close()
	if err := db.Ping(); !strings.Contains(fmt.Sprint(err), "revoked") {
		t.Fatalf("new connection after revoke: %v", err)
	}
	e.gw.Close()
	stmts := statements(t, e, g.ID)
	if len(stmts) != 1 || stmts[0].SQL != "SELECT SLEEP(60)" || stmts[0].Tag != "ERROR 1927" || stmts[0].SQLState != "70100" {
		t.Fatalf("recorded: %+v", stmts)
	}
	e.checkRelay(t, relay)
	verify(t, e)
}

// At the grant's end, an idle session and a running query are both ended within a second,
// and new connections are refused.
func TestExpiryEndsSessions(t *testing.T) { relays(t, testExpiryEndsSessions) }

func testExpiryEndsSessions(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", 2*time.Second)
	idle := e.conn(t, secret)
	if err := idle.PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	busy := e.conn(t, secret)
	errc := e.sleepUpstream(t, busy)
	select {
	case err := <-errc:
		late := time.Since(g.EndsAt)
		if late > time.Second || late < -50*time.Millisecond {
			t.Errorf("running query ended %v after the grant's end", late)
		}
		if !strings.Contains(fmt.Sprint(err), fmt.Sprintf("grant %d expired", g.ID)) {
			t.Errorf("message: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("busy session outlived its grant")
	}
	e.waitProcess(t, "SLEEP(60)", false)
	for deadline := time.Now().Add(time.Second); e.gw.Sessions() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions live after the grant's end", e.gw.Sessions())
		}
	}
	if err := idle.PingContext(context.Background()); err == nil {
		t.Fatal("idle session still works after the grant's end")
	}
	db, _ := sql.Open("mysql", e.dsn("alice", secret, "shop-db"))
	defer db.Close()
	if err := db.Ping(); !strings.Contains(fmt.Sprint(err), "expired") {
		t.Fatalf("new connection after expiry: %v", err)
	}
}

// An extension moves the deadline of live sessions.
func TestExtensionMovesDeadline(t *testing.T) { relays(t, testExtensionMovesDeadline) }

func testExtensionMovesDeadline(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", 2*time.Second)
	c := e.conn(t, secret)
	if err := c.PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Extend(e.alice, g.ID, time.Minute, "more"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(g.EndsAt) + 300*time.Millisecond)
	if err := c.PingContext(context.Background()); err != nil {
		t.Fatalf("session ended at the old deadline: %v", err)
	}
	if e.gw.Sessions() != 1 {
		t.Fatalf("%d sessions", e.gw.Sessions())
	}
}

// A session the client ends cleanly leaves its upstream connection to the grant's next
// session, reset: nothing of the first session's state is left.
func TestReuseResetsState(t *testing.T) { relays(t, testReuseResetsState) }

func testReuseResetsState(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	_, secret := e.grant(t, "shop-db", "write", time.Hour)
	db := e.open(t, secret)
	ctx := context.Background()
	var id1, id2 int64
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET @mark = 42", "CREATE TEMPORARY TABLE scratch (x INT)", "USE information_schema"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id1); err != nil {
		t.Fatal(err)
	}
	c.Raw(func(dc any) error { return driverConnClose(dc) })
	c.Close()
	db.Close()
	waitFor(t, func() bool { return e.gw.Sessions() == 0 })
	db = e.open(t, secret)
	var mark sql.NullInt64
	var dbName string
	if err := db.QueryRowContext(ctx, "SELECT CONNECTION_ID(), @mark, DATABASE()").Scan(&id2, &mark, &dbName); err != nil {
		t.Fatal(err)
	}
	if id2 != id1 {
		t.Fatalf("upstream connection not reused: %d then %d", id1, id2)
	}
	if mark.Valid || dbName != "jg_gwmy" {
		t.Fatalf("state survived the reset: @mark=%v database=%q", mark, dbName)
	}
	if _, err := db.ExecContext(ctx, "SELECT * FROM scratch"); err == nil {
		t.Fatal("temporary table survived the reset")
	}
}

// driverConnClose closes the driver connection (a COM_QUIT), as database/sql does.
func driverConnClose(dc any) error {
	if c, ok := dc.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
	}
}

// Without TLS (insecure_plaintext), a client proves it holds its credential with
// caching_sha2_password's scramble, checked against the stored double hash: one round trip,
// no RSA. A credential stored the old way (single SHA-256) still logs in, through full
// authentication with the gateway's RSA key.
func TestPlaintextLogin(t *testing.T) {
	e := newEnv(t, func(o *mysql.Options) { o.TLS, o.InsecurePlaintext = nil, true })
	g, secret := e.grant(t, "shop-db", "read", time.Hour)
	query := func(secret string) {
		t.Helper()
		c := drv.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr, c.DBName = "alice", secret, "tcp", e.addr, "shop-db"
		db, err := sql.Open("mysql", c.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM items").Scan(&n); err != nil || n < 1 {
			t.Fatalf("%d %v", n, err)
		}
	}
	query(secret)
	if n := mysql.FastAuths(e.gw); n != 1 {
		t.Fatalf("%d fast logins, want 1", n)
	}
	legacy := jitgate.CredentialPrefix + "minted-before-credentials-were-double-hashed"
	if err := e.store.Tx(context.Background(), func(tx jitgate.Tx) error {
		return tx.InsertCredential(&jitgate.SessionCredential{GrantID: g.ID, User: "alice", Hash: jitgate.HashToken(legacy),
			CreatedAt: time.Now(), ExpiresAt: g.EndsAt})
	}); err != nil {
		t.Fatal(err)
	}
	query(legacy)
	if n := mysql.FastAuths(e.gw); n != 1 {
		t.Fatalf("the legacy credential logged in fast (%d)", n)
	}
	// A login without a user is told what to send.
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(handshakeResponse("", "shop-db"))
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, _ := io.ReadAll(conn)
	if !strings.Contains(string(got), "connect with your jitgate user name") {
		t.Fatalf("no user: %q", got)
	}
}

// A client that starts with mysql_native_password is switched to caching_sha2_password, and
// its answer to the switch is checked by its scramble too: 0x01 0x03 (fast authentication
// succeeded) and OK arrive together, with the sequence numbers the protocol wants.
func TestSwitchedLoginIsFast(t *testing.T) {
	e := newEnv(t, func(o *mysql.Options) { o.TLS, o.InsecurePlaintext = nil, true })
	_, secret := e.grant(t, "shop-db", "read", time.Hour)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	read := func() (byte, []byte) {
		t.Helper()
		var h [4]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		return h[3], b
	}
	read() // the handshake
	conn.Write(handshakeResponse("alice", "shop-db"))
	seq, sw := read()
	const plugin = "caching_sha2_password\x00"
	if seq != 2 || len(sw) != 1+len(plugin)+21 || sw[0] != 0xfe || string(sw[1:1+len(plugin)]) != plugin {
		t.Fatalf("switch request %d %q", seq, sw)
	}
	scramble := sw[1+len(plugin) : 1+len(plugin)+20]
	h1 := sha256.Sum256([]byte(secret))
	h2 := sha256.Sum256(h1[:])
	x := sha256.Sum256(append(h2[:], scramble...))
	for i := range x {
		x[i] ^= h1[i]
	}
	conn.Write(append([]byte{32, 0, 0, 3}, x[:]...))
	if seq, b := read(); seq != 4 || string(b) != "\x01\x03" {
		t.Fatalf("after the scramble: %d %q", seq, b)
	}
	if seq, b := read(); seq != 5 || b[0] != 0 {
		t.Fatalf("then: %d %q", seq, b)
	}
	if n := mysql.FastAuths(e.gw); n != 1 {
		t.Fatalf("%d fast logins", n)
	}
	conn.Write([]byte{1, 0, 0, 0, 1}) // COM_QUIT
}

// The stock mariadb client connects with nothing but host, port, user, password, database
// and --ssl; the role's limits are MariaDB's own.
func TestMariaDBClient(t *testing.T) { relays(t, testMariaDBClient) }

func testMariaDBClient(t *testing.T, relay string) {
	bin, err := exec.LookPath("mariadb")
	if err != nil {
		if bin, err = exec.LookPath("mysql"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("the mariadb client is required with CI=true")
			}
			t.Skip("no mariadb or mysql client")
		}
	}
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", time.Hour)
	host, port, _ := net.SplitHostPort(e.addr)
	run := func(extra ...string) (string, error) {
		args := append([]string{"-h", host, "-P", port, "-u", "alice"}, extra...)
		cmd := exec.Command(bin, append(args, "shop-db")...)
		cmd.Env = append(os.Environ(), "MYSQL_PWD="+secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("--ssl", "-N", "-e", "SELECT name FROM items WHERE id = 1; SELECT CURRENT_USER()")
	if err != nil || !strings.Contains(out, "widget") || !strings.Contains(out, "jg_gwmy_read@%") {
		t.Fatalf("select: %v\n%s", err, out)
	}
	out, err = run("--ssl", "-e", "INSERT INTO items VALUES (3, 'thing')")
	if err == nil || !strings.Contains(out, "ERROR 1142") {
		t.Fatalf("write: %v\n%s", err, out)
	}
	out, err = run("--skip-ssl", "-e", "SELECT 1")
	if err == nil || !strings.Contains(out, "requires TLS") {
		t.Fatalf("without TLS: %v\n%s", err, out)
	}
	if n := mysql.FastAuths(e.gw); n != 2 {
		t.Errorf("%d of the client's 2 logins checked by their scramble", n)
	}
	waitFor(t, func() bool { return e.gw.Sessions() == 0 })
	e.gw.Close()
	var sqls []string
	for _, s := range statements(t, e, g.ID) {
		sqls = append(sqls, s.SQL+" -> "+s.Tag)
	}
	all := strings.Join(sqls, "\n")
	for _, want := range []string{"SELECT name FROM items WHERE id = 1 -> ROWS 1", "SELECT CURRENT_USER() -> ROWS 1", "INSERT INTO items VALUES (3, 'thing') -> ERROR 1142"} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
	e.checkRelay(t, relay)
	verify(t, e)
}

// KILL QUERY with the connection id the gateway told a client (what the mariadb client sends
// on Ctrl-C) stops that session's query, if the session is of the same grant.
func TestKillQueryByClientID(t *testing.T) { relays(t, testKillQueryByClientID) }

func testKillQueryByClientID(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	_, secret := e.grant(t, "shop-db", "read", time.Hour)
	_, other := e.grant(t, "shop-db", "write", time.Hour)
	c := e.conn(t, secret)
	errc := e.sleepUpstream(t, c)
	ids := mysql.ClientIDs(e.gw)
	if len(ids) != 1 {
		t.Fatalf("ids %v", ids)
	}
	kill := fmt.Sprintf("KILL QUERY %d", ids[0])
	// Another grant's session may not.
	if _, err := e.open(t, other).Exec(kill); err == nil {
		t.Fatal("another grant's session killed the query")
	}
	select {
	case err := <-errc:
		t.Fatalf("query ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := e.open(t, secret).Exec(kill); err != nil {
		t.Fatal(err)
	}
	select {
	case <-errc:
	case <-time.After(3 * time.Second):
		t.Fatal("KILL QUERY did not stop the query")
	}
	e.waitProcess(t, "SLEEP(60)", false)
	if err := c.PingContext(context.Background()); err != nil {
		t.Fatalf("the session itself should live on: %v", err)
	}
}

// Garbage, oversized packets, silent clients, a client that vanishes mid-query and a
// database that is down each get a clear error or a clean close, and leave no goroutine or
// connection behind.
func TestBadInputLeaksNothing(t *testing.T) { relays(t, testBadInputLeaksNothing) }

func testBadInputLeaksNothing(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay), func(o *mysql.Options) { o.StartupTimeout = 300 * time.Millisecond })
	_, secret := e.grant(t, "shop-db", "read", time.Hour)
	time.Sleep(50 * time.Millisecond)
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
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "bad handshake"},
		{"oversized packet", append([]byte{0xff, 0xff, 0xff, 1}, make([]byte, 100)...), "handshake packet too large"},
		{"short response", []byte{3, 0, 0, 1, 1, 2, 3}, "bad handshake"},
		{"silent client", nil, ""},
		{"plaintext", handshakeResponse("alice", "shop-db"), "requires TLS"},
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
	// A client that vanishes mid-query: the gateway kills the query upstream.
	db, err := sql.Open("mysql", e.dsn("alice", secret, "shop-db"))
	if err != nil {
		t.Fatal(err)
	}
	var nc net.Conn
	drv.RegisterDialContext("vanish", func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		nc = c
		return c, err
	})
	cfg, _ := drv.ParseDSN(e.dsn("alice", secret, "shop-db"))
	cfg.Net = "vanish"
	db.Close()
	db, _ = sql.Open("mysql", cfg.FormatDSN())
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	go db.Exec("SELECT SLEEP(60)")
	e.waitProcess(t, "SLEEP(60)", true)
	nc.Close()
	e.waitProcess(t, "SLEEP(60)", false)
	waitFor(t, func() bool { return e.gw.Sessions() == 0 })
	db.Close()
	// Goroutines settle back (a little slack for the runtime's own and the driver's).
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before+2; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(5 * time.Second); gwtest.OpenSockets() > fdsBefore; {
		if time.Now().After(deadline) {
			t.Fatalf("open sockets: %d before, %d after", fdsBefore, gwtest.OpenSockets())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A database that is down gets a clear error, not a hang.
func TestUpstreamDown(t *testing.T) {
	e := newEnv(t, func(o *mysql.Options) {
		up := o.Upstream
		o.Upstream = func(g *jitgate.Grant) (*mysql.Upstream, error) {
			u, err := up(g)
			if u != nil {
				u.Addr = "127.0.0.1:1"
			}
			return u, err
		}
	})
	_, secret := e.grant(t, "shop-db", "read", time.Hour)
	db, _ := sql.Open("mysql", e.dsn("alice", secret, "shop-db"))
	defer db.Close()
	if err := db.Ping(); !strings.Contains(fmt.Sprint(err), "cannot connect to shop-db") {
		t.Fatalf("upstream down: %v", err)
	}
}

// handshakeResponse is a HandshakeResponse41 sent without TLS (sequence 1).
func handshakeResponse(user, db string) []byte {
	caps := uint32(1<<9 | 1<<15 | 1<<3 | 1<<19)
	b := []byte{byte(caps), byte(caps >> 8), byte(caps >> 16), byte(caps >> 24), 0, 0, 0, 1, 45}
	b = append(b, make([]byte, 23)...)
	b = append(append(b, user...), 0)
	b = append(b, 0) // no auth data
	b = append(append(b, db...), 0)
	b = append(append(b, "mysql_native_password"...), 0)
	return append([]byte{byte(len(b)), byte(len(b) >> 8), byte(len(b) >> 16), 1}, b...)
}

// The gateway's own upstream login speaks caching_sha2_password: pointed at a second jitgate
// MySQL gateway (whose clients must use that plugin, with full authentication), it logs in
// over TLS (the password inside TLS) and without TLS (the password encrypted with the
// server's RSA key).
func TestCachingSHA2Upstream(t *testing.T) {
	for _, withTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			inner := newEnv(t, func(o *mysql.Options) {
				if !withTLS {
					o.TLS, o.InsecurePlaintext = nil, true
				}
			})
			_, innerSecret := inner.grant(t, "shop-db", "read", time.Hour)
			outer := newEnv(t, func(o *mysql.Options) {
				o.Upstream = func(*jitgate.Grant) (*mysql.Upstream, error) {
					u := &mysql.Upstream{Addr: inner.addr, User: "alice", Password: innerSecret, Database: "shop-db"}
					if withTLS {
						u.TLS, u.TLSRequired = &tls.Config{InsecureSkipVerify: true}, true
					}
					return u, nil
				}
			})
			_, secret := outer.grant(t, "shop-db", "write", time.Hour)
			var user string
			if err := outer.open(t, secret).QueryRow("SELECT CURRENT_USER()").Scan(&user); err != nil {
				t.Fatal(err)
			}
			if user != "jg_gwmy_read@%" {
				t.Fatalf("logged in as %q", user)
			}
		})
	}
}

// Large answers stream through (the loop pauses a side whose peer is slow), and a command
// larger than what the gateway reads before forwarding streams through too, recorded cut.
func TestLargeQueriesAndResults(t *testing.T) { relays(t, testLargeQueriesAndResults) }

func testLargeQueriesAndResults(t *testing.T, relay string) {
	e := newEnv(t, withRelay(relay))
	g, secret := e.grant(t, "shop-db", "read", time.Hour)
	c := e.conn(t, secret)
	ctx := context.Background()
	rows, err := c.QueryContext(ctx, "SELECT seq, REPEAT('x', 200) FROM seq_1_to_50000")
	if err != nil {
		t.Fatal(err)
	}
	n, sum := 0, 0
	for rows.Next() {
		var seq int
		var pad string
		if err := rows.Scan(&seq, &pad); err != nil {
			t.Fatal(err)
		}
		n, sum = n+1, sum+seq
		if len(pad) != 200 {
			t.Fatalf("row %d: %d bytes", seq, len(pad))
		}
	}
	if err := rows.Err(); err != nil || n != 50000 || sum != 50000*50001/2 {
		t.Fatalf("%d rows, sum %d, %v", n, sum, err)
	}
	long := "SELECT LENGTH('" + strings.Repeat("y", 100_000) + "')"
	var got int
	if err := c.QueryRowContext(ctx, long).Scan(&got); err != nil || got != 100_000 {
		t.Fatalf("long statement: %d %v", got, err)
	}
	if err := c.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	e.gw.Close()
	var tags []string
	for _, s := range statements(t, e, g.ID) {
		if strings.HasPrefix(s.SQL, "SELECT LENGTH") {
			if len(s.SQL) > 17<<10 || !strings.Contains(s.SQL, "bytes in all]") {
				t.Errorf("long statement recorded as %d bytes: %.40q...", len(s.SQL), s.SQL)
			}
		}
		tags = append(tags, s.Tag)
	}
	if strings.Join(tags, ",") != "ROWS 50000,ROWS 1" {
		t.Fatalf("tags %v", tags)
	}
	verify(t, e)
	e.checkRelay(t, relay)
}
