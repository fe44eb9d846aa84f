package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
)

// Dev-mode demo database: the names dev.yaml uses.
const (
	demoDatabase = "demo"
	demoRead     = "demo_read"
	demoWrite    = "demo_write"
	// The gateway reads the demo logins' passwords from these (dev.yaml names them); the dev
	// server sets them to fresh random passwords it gives the roles.
	demoReadPasswordEnv  = "JITGATE_DEMO_READ_PASSWORD"
	demoWritePasswordEnv = "JITGATE_DEMO_WRITE_PASSWORD"
)

// demoSetup is what setUpDemoDB did, or what the user must do instead.
type demoSetup struct {
	OK   bool
	Done []string // what was created or refreshed
	// Why and Fix say why it could not, and the commands that set it up by hand.
	Why, Fix string
}

// setUpDemoDB makes the dev config's demo-db real on the local PostgreSQL, when it accepts a
// superuser login ($PGUSER, default postgres, with $PGPASSWORD if set; trust authentication
// on a developer machine): the database, a sample table, and the two login roles the gateway
// logs in as, with fresh random passwords it hands the gateway through the environment.
// Nothing it does touches anything but these three names.
func setUpDemoDB(ctx context.Context, res *jitgate.Resource) demoSetup {
	s := setUpDemoDBOnce(ctx, res)
	if !s.OK {
		// Roles made by hand for trust authentication need no password: an unset variable
		// would otherwise refuse every session.
		for _, env := range []string{demoReadPasswordEnv, demoWritePasswordEnv} {
			if _, ok := os.LookupEnv(env); !ok {
				os.Setenv(env, "")
			}
		}
	}
	return s
}

func setUpDemoDBOnce(ctx context.Context, res *jitgate.Resource) demoSetup {
	user := os.Getenv("PGUSER")
	if user == "" {
		user = "postgres"
	}
	host, port, err := net.SplitHostPort(res.Address)
	if err != nil {
		return demoSetup{Why: err.Error()}
	}
	admin := url.URL{Scheme: "postgres", User: url.User(user), Host: net.JoinHostPort(host, port), Path: "/postgres",
		RawQuery: "sslmode=prefer&connect_timeout=3"}
	if pw, ok := os.LookupEnv("PGPASSWORD"); ok {
		admin.User = url.UserPassword(user, pw)
	}
	readPW, writePW := randomPassword(), randomPassword()
	fix := fmt.Sprintf(`as a PostgreSQL superuser on %s (e.g. psql -h %s -p %s -U postgres):
    CREATE DATABASE %s;
    CREATE ROLE %s LOGIN PASSWORD '...' IN ROLE pg_read_all_data;
    CREATE ROLE %s LOGIN PASSWORD '...' IN ROLE pg_read_all_data, pg_write_all_data;
  then start the dev server with %s and %s set to those passwords
  (or set PGUSER/PGPASSWORD to a superuser login and let the dev server do it).`,
		res.Address, host, port, demoDatabase, demoRead, demoWrite, demoReadPasswordEnv, demoWritePasswordEnv)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return demoSetup{Why: fmt.Sprintf("cannot log in to PostgreSQL at %s as %s: %s", res.Address, user, firstLine(err.Error())), Fix: fix}
	}
	defer conn.Close(ctx)
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || !super {
		return demoSetup{Why: fmt.Sprintf("%s on %s is not a superuser", user, res.Address), Fix: fix}
	}
	var s demoSetup
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, demoDatabase).Scan(&exists); err != nil {
		return demoSetup{Why: err.Error(), Fix: fix}
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{demoDatabase}.Sanitize()); err != nil {
			return demoSetup{Why: "create database: " + firstLine(err.Error()), Fix: fix}
		}
		s.Done = append(s.Done, "created database "+demoDatabase)
	}
	for _, r := range []struct{ name, password, env, member string }{
		{demoRead, readPW, demoReadPasswordEnv, "pg_read_all_data"},
		{demoWrite, writePW, demoWritePasswordEnv, "pg_read_all_data, pg_write_all_data"},
	} {
		ident := pgx.Identifier{r.name}.Sanitize()
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r.name).Scan(&exists); err != nil {
			return demoSetup{Why: err.Error(), Fix: fix}
		}
		verb := "set a new password for"
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE ROLE "+ident+" LOGIN"); err != nil {
				return demoSetup{Why: "create role: " + firstLine(err.Error()), Fix: fix}
			}
			verb = "created"
		}
		// Utility statements take no bind parameters: pgx's simple protocol quotes the literal
		// ($1) on the client side.
		if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" LOGIN PASSWORD $1", pgx.QueryExecModeSimpleProtocol, r.password); err != nil {
			return demoSetup{Why: firstLine(err.Error()), Fix: fix}
		}
		if _, err := conn.Exec(ctx, "GRANT "+r.member+" TO "+ident); err != nil {
			return demoSetup{Why: firstLine(err.Error()), Fix: fix}
		}
		if err := os.Setenv(r.env, r.password); err != nil {
			return demoSetup{Why: err.Error(), Fix: fix}
		}
		s.Done = append(s.Done, fmt.Sprintf("%s login role %s (member of %s)", verb, r.name, r.member))
	}
	demo := admin
	demo.Path = "/" + demoDatabase
	dconn, err := pgx.Connect(ctx, demo.String())
	if err != nil {
		return demoSetup{Why: firstLine(err.Error()), Fix: fix}
	}
	defer dconn.Close(ctx)
	var n int
	if _, err := dconn.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (
		id integer PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL, status text NOT NULL)`); err != nil {
		return demoSetup{Why: firstLine(err.Error()), Fix: fix}
	}
	if err := dconn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		return demoSetup{Why: firstLine(err.Error()), Fix: fix}
	}
	if n == 0 {
		if _, err := dconn.Exec(ctx, `INSERT INTO orders VALUES (41, 'ada', 12.50, 'shipped'), (42, 'grace', 99.00, 'stuck'), (43, 'linus', 7.25, 'paid')`); err != nil {
			return demoSetup{Why: firstLine(err.Error()), Fix: fix}
		}
		s.Done = append(s.Done, "created table orders with 3 rows")
	}
	s.OK = true
	return s
}

func randomPassword() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// firstLine folds an error's lines (pgx puts the server's reason on the second) into one.
func firstLine(s string) string { return strings.Join(strings.Fields(s), " ") }
