package postgres_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testdb"
	pgprov "github.com/jitgate/jitgate/provision/postgres"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-test-key")

func exec(t *testing.T, c *pgx.Conn, sqls ...string) {
	t.Helper()
	for _, s := range sqls {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func loginDSN(l *jitgate.Login, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(l.User, password), Host: net.JoinHostPort(l.Host, l.Port),
		Path: "/" + l.Database, RawQuery: "sslmode=disable&connect_timeout=5"}
	return u.String()
}

// TestProvisioner runs the whole life of an ephemeral user against a private cluster that
// checks passwords for real.
func TestProvisioner(t *testing.T) {
	ctx := context.Background()
	addr, superDSN := testdb.PrivateCluster(t)
	admin, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	exec(t, admin,
		`CREATE TABLE items (id int)`, `INSERT INTO items VALUES (1), (2)`, `CREATE TABLE secrets (s text)`,
		`CREATE ROLE app_reader NOLOGIN`, `GRANT SELECT ON items TO app_reader`,
		`CREATE ROLE "we""ird role" NOLOGIN`, `GRANT SELECT ON secrets TO "we""ird role"`,
		`CREATE ROLE app_creator NOLOGIN`, `GRANT CREATE ON SCHEMA public TO app_creator`,
		`CREATE ROLE standing_login LOGIN`, `GRANT SELECT, UPDATE ON secrets TO standing_login`)
	res := &jitgate.Resource{Name: "pgres", Kind: jitgate.KindPostgres, Address: addr, Database: "postgres", SSLMode: "disable",
		Credentials: jitgate.Secret{User: "postgres"}, Roles: []jitgate.Role{
			{Name: "read", Grants: []string{"app_reader"}, Provision: jitgate.ProvisionEphemeral},
			{Name: "odd", Grants: []string{`we"ird role`}, Provision: jitgate.ProvisionEphemeral},
			{Name: "create", Grants: []string{"app_reader", "app_creator"}, Provision: jitgate.ProvisionEphemeral},
			{Name: "gw", Grants: []string{"app_reader"}},
		}}
	p, err := pgprov.New(res, "install1", testdb.ClusterPassword, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.Manages("read") || p.Manages("gw") || p.Manages("nope") {
		t.Fatal("Manages: wrong roles")
	}
	now := time.Now().UTC().Truncate(time.Second)
	g := &jitgate.Grant{ID: 7, User: "alice", Resource: "pgres", Role: "read", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}

	t.Run("grant", func(t *testing.T) {
		for range 2 { // idempotent
			if err := p.Grant(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		var (
			validUntil time.Time
			limit      int
			comment    string
			super      bool
			members    []string
		)
		err := admin.QueryRow(ctx, `SELECT rolvaliduntil, rolconnlimit, shobj_description(oid, 'pg_authid'), rolsuper,
			ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid)
			FROM pg_roles r WHERE rolname = 'jit_alice_7'`).Scan(&validUntil, &limit, &comment, &super, &members)
		if err != nil {
			t.Fatal(err)
		}
		if !validUntil.Equal(g.EndsAt) || limit != pgprov.DefaultConnectionLimit || super || !slices.Equal(members, []string{"app_reader"}) ||
			comment != "jitgate-managed install=install1 grant=7 resource=pgres user=alice" {
			t.Fatalf("role: valid until %s (want %s), limit %d, super %t, members %v, comment %q", validUntil, g.EndsAt, limit, super, members, comment)
		}
		login, err := p.Login(g)
		if err != nil {
			t.Fatal(err)
		}
		if login.User != "jit_alice_7" || login.Host != "127.0.0.1" || login.Database != "postgres" {
			t.Fatalf("login %+v", login)
		}
		c, err := pgx.Connect(ctx, loginDSN(login, login.Password))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("select within the role: %d %v", n, err)
		}
		_, err = c.Exec(ctx, `SELECT * FROM secrets`)
		if sqlstate(err) != "42501" || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("select outside the role: %v", err)
		}
		_, err = c.Exec(ctx, `INSERT INTO items VALUES (3)`)
		if sqlstate(err) != "42501" {
			t.Fatalf("write outside the role: %v", err)
		}
		if _, err := pgx.Connect(ctx, loginDSN(login, "wrong")); sqlstate(err) != "28P01" {
			t.Fatalf("wrong password: %v", err)
		}
	})

	t.Run("hand-edited memberships are put back", func(t *testing.T) {
		exec(t, admin, `GRANT app_creator TO jit_alice_7`)
		if err := p.Grant(ctx, g); err != nil {
			t.Fatal(err)
		}
		var members []string
		admin.QueryRow(ctx, `SELECT ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
			JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'jit_alice_7')`).Scan(&members)
		if !slices.Equal(members, []string{"app_reader"}) {
			t.Fatalf("members %v", members)
		}
	})

	t.Run("managed accounts", func(t *testing.T) {
		accts, err := p.ManagedAccounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(accts) != 1 || accts[0] != (jitgate.ManagedAccount{Name: "jit_alice_7", GrantID: 7}) {
			t.Fatalf("accounts %+v", accts)
		}
	})

	t.Run("verification fails while the user exists", func(t *testing.T) {
		if _, err := p.VerifyRevoked(ctx, g); err == nil || !strings.Contains(err.Error(), "role jit_alice_7 still exists") {
			t.Fatalf("VerifyRevoked = %v", err)
		}
	})

	t.Run("revoke ends live sessions", func(t *testing.T) {
		login, _ := p.Login(g)
		c, err := pgx.Connect(ctx, loginDSN(login, login.Password))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		busy := make(chan error, 1)
		go func() { _, err := c.Exec(ctx, `SELECT pg_sleep(30)`); busy <- err }()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := p.Revoke(ctx, g); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-busy:
			if sqlstate(err) != "57P01" && err == nil {
				t.Fatalf("running query: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the live session survived the revoke")
		}
		receipt, err := p.VerifyRevoked(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(receipt, "role jit_alice_7 absent") || !strings.Contains(receipt, "0 sessions") {
			t.Fatalf("receipt %q", receipt)
		}
		t.Logf("revoke with a busy session took %s", time.Since(start))
		if _, err := pgx.Connect(ctx, loginDSN(login, login.Password)); sqlstate(err) != "28P01" && sqlstate(err) != "28000" {
			t.Fatalf("login after revoke: %v", err)
		}
		if err := p.Revoke(ctx, g); err != nil { // idempotent
			t.Fatal(err)
		}
	})

	t.Run("owned objects go to the owner", func(t *testing.T) {
		g := &jitgate.Grant{ID: 8, User: "bob", Resource: "pgres", Role: "create", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
		if err := p.Grant(ctx, g); err != nil {
			t.Fatal(err)
		}
		login, _ := p.Login(g)
		c, err := pgx.Connect(ctx, loginDSN(login, login.Password))
		if err != nil {
			t.Fatal(err)
		}
		exec(t, c, `CREATE TABLE bobs_report (x int)`)
		c.Close(ctx)
		if err := p.Revoke(ctx, g); err != nil {
			t.Fatal(err)
		}
		var owner string
		if err := admin.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE tablename = 'bobs_report'`).Scan(&owner); err != nil || owner != "postgres" {
			t.Fatalf("owner %q %v", owner, err)
		}
	})

	t.Run("names that need quoting", func(t *testing.T) {
		g := &jitgate.Grant{ID: 9, User: "o'brien.x@corp-1", Resource: "pgres", Role: "odd", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
		if err := p.Grant(ctx, g); err != nil {
			t.Fatal(err)
		}
		login, _ := p.Login(g)
		if login.User != "jit_o'brien.x@corp-1_9" {
			t.Fatalf("user %q", login.User)
		}
		c, err := pgx.Connect(ctx, loginDSN(login, login.Password))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `SELECT * FROM secrets`); err != nil {
			t.Fatalf("the oddly named role's privilege: %v", err)
		}
		c.Close(ctx)
		if err := p.Revoke(ctx, g); err != nil {
			t.Fatal(err)
		}
		if _, err := p.VerifyRevoked(ctx, g); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("another installation's role is neither taken over nor removed", func(t *testing.T) {
		exec(t, admin, `CREATE ROLE jit_dave_11 LOGIN`, `COMMENT ON ROLE jit_dave_11 IS 'jitgate-managed install=other grant=11 resource=pgres user=dave'`)
		g := &jitgate.Grant{ID: 11, User: "dave", Resource: "pgres", Role: "read", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
		if err := p.Grant(ctx, g); err == nil || !strings.Contains(err.Error(), "is not this jitgate's") {
			t.Fatalf("Grant over a foreign role: %v", err)
		}
		if accts, _ := p.ManagedAccounts(ctx); len(accts) != 0 {
			t.Fatalf("foreign role listed as ours: %+v", accts)
		}
		if err := p.Revoke(ctx, g); err != nil {
			t.Fatal(err)
		}
		if receipt, err := p.VerifyRevoked(ctx, g); err != nil || !strings.Contains(receipt, "left alone") {
			t.Fatalf("verify: %q %v", receipt, err)
		}
		var n int
		admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = 'jit_dave_11'`).Scan(&n)
		if n != 1 {
			t.Fatal("the foreign role was dropped")
		}
	})

	t.Run("a long user name is shortened to 63 bytes", func(t *testing.T) {
		g := &jitgate.Grant{ID: 123456, User: strings.Repeat("x", 63), Role: "read"}
		if n := p.AccountFor(g); len(n) != 63 || !strings.HasSuffix(n, "_123456") {
			t.Fatalf("name %q (%d)", n, len(n))
		}
	})

	t.Run("standing access", func(t *testing.T) {
		g := &jitgate.Grant{ID: 10, User: "carol", Resource: "pgres", Role: "read", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
		if err := p.Grant(ctx, g); err != nil {
			t.Fatal(err)
		}
		defer p.Revoke(ctx, g)
		accts, err := p.StandingAccess(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]jitgate.StandingAccount{}
		for _, a := range accts {
			byName[a.Name] = a
		}
		if _, ok := byName["jit_carol_10"]; ok {
			t.Error("a jitgate-managed user is reported as standing access")
		}
		if pg := byName["postgres"]; !slices.Contains(pg.Flags, jitgate.FlagSuperuser) || !slices.Contains(pg.Attributes, "SUPERUSER") {
			t.Errorf("postgres: %+v", pg)
		}
		sl := byName["standing_login"]
		if !slices.Contains(sl.Flags, jitgate.FlagDirectTableGrants) || !slices.Equal(sl.TableGrants, []string{"SELECT, UPDATE on public.secrets"}) {
			t.Errorf("standing_login: %+v", sl)
		}
	})
}

// The report against the machine's own PostgreSQL flags its postgres superuser.
func TestStandingAccessLocal(t *testing.T) {
	testdb.Postgres(t) // skips or fails (CI) when it is unreachable
	u, err := url.Parse(testdb.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	res := &jitgate.Resource{Name: "local", Kind: jitgate.KindPostgres, Address: u.Host, Database: strings.TrimPrefix(u.Path, "/"),
		SSLMode: u.Query().Get("sslmode"), Credentials: jitgate.Secret{User: u.User.Username()}, Roles: []jitgate.Role{{Name: "r"}}}
	p, err := pgprov.New(res, "install1", pw, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	accts, err := p.StandingAccess(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accts {
		if a.Name == "postgres" {
			if !slices.Contains(a.Flags, jitgate.FlagSuperuser) {
				t.Fatalf("postgres not flagged: %+v", a)
			}
			return
		}
	}
	t.Fatalf("postgres missing from %+v", accts)
}
