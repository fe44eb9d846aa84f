package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testdb"
	myprov "github.com/jitgate/jitgate/provision/mysql"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-test-key")

func errno(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func open(t *testing.T, l *jitgate.Login, password string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = l.User, password, "tcp", l.Host+":"+l.Port, l.Database
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestProvisioner runs the whole life of an ephemeral user against the local MariaDB.
func TestProvisioner(t *testing.T) {
	ctx := context.Background()
	admin, cfg := testdb.MySQL(t)
	// A database of this test's own, and unique user names, so parallel runs do not meet.
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e6)
	db := "jgprov" + suffix
	for _, s := range []string{
		"CREATE DATABASE " + db, "CREATE TABLE " + db + ".items (id int)", "INSERT INTO " + db + ".items VALUES (1), (2)",
		"CREATE TABLE " + db + ".secrets (s text)", "CREATE ROLE IF NOT EXISTS jg_reader_" + suffix,
		"GRANT SELECT ON " + db + ".secrets TO jg_reader_" + suffix,
		"CREATE USER jg_standing_" + suffix + "@'%'", "GRANT SELECT ON " + db + ".items TO jg_standing_" + suffix + "@'%'",
	} {
		if _, err := admin.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE IF EXISTS " + db)
		admin.Exec("DROP ROLE IF EXISTS jg_reader_" + suffix)
		admin.Exec("DROP USER IF EXISTS jg_standing_" + suffix + "@'%'")
	})
	res := &jitgate.Resource{Name: "shop", Kind: jitgate.KindMySQL, Address: cfg.Addr, Database: db,
		Credentials: jitgate.Secret{User: cfg.User}, Roles: []jitgate.Role{
			{Name: "read", Grants: []string{"SELECT ON " + db + ".items"}, Provision: jitgate.ProvisionEphemeral},
			{Name: "secrets", Grants: []string{"jg_reader_" + suffix}, Provision: jitgate.ProvisionEphemeral},
		}}
	p, err := myprov.New(res, cfg.Passwd, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	now := time.Now().UTC()
	g := &jitgate.Grant{ID: 7, User: "a" + suffix, Resource: "shop", Role: "read", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
	name := p.AccountFor(g)
	t.Cleanup(func() { admin.Exec("DROP USER IF EXISTS ?@'%'", name) })

	for range 2 { // idempotent
		if err := p.Grant(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	login, err := p.Login(g)
	if err != nil {
		t.Fatal(err)
	}
	if login.User != "jit_a"+suffix+"_7" || login.Kind != jitgate.KindMySQL {
		t.Fatalf("login %+v", login)
	}
	c := open(t, login, login.Password)
	var n int
	if err := c.QueryRow("SELECT COUNT(*) FROM items").Scan(&n); err != nil || n != 2 {
		t.Fatalf("select within the role: %d %v", n, err)
	}
	if _, err := c.Exec("SELECT * FROM secrets"); errno(err) != 1142 {
		t.Fatalf("select outside the role: %v", err)
	}
	if _, err := c.Exec("INSERT INTO items VALUES (3)"); errno(err) != 1142 {
		t.Fatalf("write outside the role: %v", err)
	}
	if err := open(t, login, "wrong").Ping(); errno(err) != 1045 {
		t.Fatalf("wrong password: %v", err)
	}

	accts, err := p.ManagedAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(accts, jitgate.ManagedAccount{Name: name, GrantID: 7}) {
		t.Fatalf("managed accounts %+v", accts)
	}
	rep, err := p.StandingAccess(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawRoot, sawStanding bool
	for _, a := range rep {
		switch {
		case strings.HasPrefix(a.Name, "jit_"):
			t.Errorf("managed user %s reported", a.Name)
		case a.Name == "root@localhost":
			sawRoot = slices.Contains(a.Flags, jitgate.FlagSuperuser) && slices.Contains(a.Flags, jitgate.FlagCreateRole)
		case a.Name == "jg_standing_"+suffix+"@%":
			sawStanding = slices.Contains(a.Flags, jitgate.FlagDirectTableGrants) && slices.Equal(a.TableGrants, []string{"Select on " + db + ".items"})
			if !sawStanding {
				t.Logf("standing: %+v", a)
			}
		}
	}
	if !sawRoot || !sawStanding {
		t.Fatalf("report misses root (%t) or the direct table grant (%t): %+v", sawRoot, sawStanding, rep)
	}

	// A busy connection is killed by the revoke, not left running (vault#10681).
	busy := make(chan error, 1)
	go func() { _, err := c.Exec("SELECT SLEEP(30)"); busy <- err }()
	time.Sleep(100 * time.Millisecond)
	if _, err := p.VerifyRevoked(ctx, g); err == nil {
		t.Fatal("verified while the user exists")
	}
	if err := p.Revoke(ctx, g); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-busy:
		if err == nil {
			t.Fatal("the sleeping query finished normally")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the live connection survived the revoke")
	}
	receipt, err := p.VerifyRevoked(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(receipt, "user "+name+" absent") {
		t.Fatalf("receipt %q", receipt)
	}
	// MariaDB answers a user that is gone with 1045 or 1698, both "access denied".
	if err := open(t, login, login.Password).Ping(); errno(err) != 1045 && errno(err) != 1698 {
		t.Fatalf("login after revoke: %v", err)
	}
	if err := p.Revoke(ctx, g); err != nil { // idempotent
		t.Fatal(err)
	}

	// A role grant: the role is the user's default, so its privileges work at once.
	g2 := &jitgate.Grant{ID: 8, User: "b" + suffix, Resource: "shop", Role: "secrets", State: jitgate.GrantActive, ActivatedAt: now, EndsAt: now.Add(time.Hour)}
	t.Cleanup(func() { admin.Exec("DROP USER IF EXISTS ?@'%'", p.AccountFor(g2)) })
	if err := p.Grant(ctx, g2); err != nil {
		t.Fatal(err)
	}
	l2, _ := p.Login(g2)
	if _, err := open(t, l2, l2.Password).Exec("SELECT * FROM secrets"); err != nil {
		t.Fatalf("role privilege: %v", err)
	}
	if err := p.RemoveAccount(ctx, jitgate.ManagedAccount{Name: p.AccountFor(g2), GrantID: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyRevoked(ctx, g2); err != nil {
		t.Fatal(err)
	}
}
