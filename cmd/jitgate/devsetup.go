package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
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

// The dev config's MySQL demo: its account and the variable its password goes in.
const (
	demoMySQLRead            = "demo_read"
	demoMySQLReadPasswordEnv = "JITGATE_DEMO_MYSQL_READ_PASSWORD"
)

// setUpDemoMySQL makes the dev config's demo-mysql real on the local MariaDB or MySQL, when
// root may log in over TCP (without a password, or with $MYSQL_PWD): the database, a sample
// table, and the account the gateway logs in as, with a fresh random password it hands the
// gateway through the environment. It touches nothing but these names.
func setUpDemoMySQL(ctx context.Context, res *jitgate.Resource) demoSetup {
	s := setUpDemoMySQLOnce(ctx, res)
	if !s.OK {
		if _, ok := os.LookupEnv(demoMySQLReadPasswordEnv); !ok {
			os.Setenv(demoMySQLReadPasswordEnv, "")
		}
	}
	return s
}

func setUpDemoMySQLOnce(ctx context.Context, res *jitgate.Resource) demoSetup {
	fix := fmt.Sprintf(`as an administrator of the MariaDB/MySQL server on %s (e.g. mariadb -h 127.0.0.1 -u root):
    CREATE DATABASE demo;
    CREATE TABLE demo.orders (id INT PRIMARY KEY, customer VARCHAR(64), total DECIMAL(10,2), status VARCHAR(16));
    CREATE USER %s IDENTIFIED BY '...';
    GRANT SELECT ON demo.* TO %s;
  then start the dev server with %s set to that password
  (or let root log in, with MYSQL_PWD if it needs a password, and let the dev server do it).`,
		res.Address, demoMySQLRead, demoMySQLRead, demoMySQLReadPasswordEnv)
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "root", os.Getenv("MYSQL_PWD"), "tcp", res.Address
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 3*time.Second, 10*time.Second, 10*time.Second
	cfg.InterpolateParams = true // literals quoted by the driver, also in statements that take no parameters
	connector, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return demoSetup{Why: err.Error(), Fix: fix}
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return demoSetup{Why: fmt.Sprintf("cannot log in to MariaDB/MySQL at %s as root: %s", res.Address, firstLine(err.Error())), Fix: fix}
	}
	pw := randomPassword()
	var s demoSetup
	for _, st := range []struct {
		q    string
		args []any
		done string
	}{
		{"CREATE DATABASE IF NOT EXISTS demo", nil, ""},
		{`CREATE TABLE IF NOT EXISTS demo.orders (id INT PRIMARY KEY, customer VARCHAR(64) NOT NULL,
			total DECIMAL(10,2) NOT NULL, status VARCHAR(16) NOT NULL)`, nil, ""},
		{"INSERT IGNORE INTO demo.orders VALUES (41, 'ada', 12.50, 'shipped'), (42, 'grace', 99.00, 'stuck'), (43, 'linus', 7.25, 'paid')", nil, ""},
		{"CREATE USER IF NOT EXISTS '" + demoMySQLRead + "'@'%' IDENTIFIED BY ?", []any{pw}, ""},
		{"ALTER USER '" + demoMySQLRead + "'@'%' IDENTIFIED BY ?", []any{pw}, "set a new password for account " + demoMySQLRead},
		{"GRANT SELECT ON demo.* TO '" + demoMySQLRead + "'@'%'", nil, "granted it SELECT on demo.*"},
	} {
		if _, err := db.ExecContext(ctx, st.q, st.args...); err != nil {
			return demoSetup{Why: firstLine(err.Error()), Fix: fix}
		}
		if st.done != "" {
			s.Done = append(s.Done, st.done)
		}
	}
	if err := os.Setenv(demoMySQLReadPasswordEnv, pw); err != nil {
		return demoSetup{Why: err.Error(), Fix: fix}
	}
	s.OK = true
	return s
}
