package testdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultMySQL is the DSN (go-sql-driver form) used when JITGATE_TEST_MYSQL is unset.
const DefaultMySQL = "root@tcp(127.0.0.1:3306)/test"

// MySQL returns a connection to the test MariaDB/MySQL server as an admin, and its config. It
// skips the test when the server is unreachable, or fails it when CI=true.
func MySQL(t testing.TB) (*sql.DB, *mysql.Config) {
	t.Helper()
	dsn := os.Getenv("JITGATE_TEST_MYSQL")
	if dsn == "" {
		dsn = DefaultMySQL
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("JITGATE_TEST_MYSQL: %v", err)
	}
	cfg.InterpolateParams = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB/MySQL at %s is required with CI=true: %v", cfg.Addr, err)
		}
		t.Skipf("MariaDB/MySQL at %s unreachable: %v; set JITGATE_TEST_MYSQL, or CI=true to make this fatal", cfg.Addr, err)
	}
	t.Cleanup(func() { db.Close() })
	return db, cfg
}

// MySQLUpstreamPassword is the password of the accounts MySQLGatewayUpstream makes.
const MySQLUpstreamPassword = "jg-gwmy-test-pw"

// MySQLGatewayUpstream prepares the test MariaDB/MySQL server as a gateway upstream: a
// database jg_gwmy with a table items (one row, widget), an account jg_gwmy_read that may only
// SELECT in it and jg_gwmy_write that may also write, both with password
// MySQLUpstreamPassword (mysql_native_password). It is idempotent and returns the server's
// host:port and an admin connection pool (closed when the test ends).
func MySQLGatewayUpstream(t testing.TB) (string, *sql.DB) {
	t.Helper()
	db, cfg := MySQL(t)
	if err := prepareMySQLUpstream(db); err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return cfg.Addr, db
}

// ErrMySQLUnreachable means the test MariaDB/MySQL server could not be reached.
var ErrMySQLUnreachable = errors.New("MariaDB/MySQL unreachable")

// PrepareMySQLUpstream is MySQLGatewayUpstream outside a test (for CLI scripts): it returns
// the server's host:port, or an error wrapping ErrMySQLUnreachable if the server cannot be
// reached.
func PrepareMySQLUpstream() (string, error) {
	dsn := os.Getenv("JITGATE_TEST_MYSQL")
	if dsn == "" {
		dsn = DefaultMySQL
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("JITGATE_TEST_MYSQL: %w", err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return "", fmt.Errorf("%w (%s): %v", ErrMySQLUnreachable, cfg.Addr, err)
	}
	return cfg.Addr, prepareMySQLUpstream(db)
}

func prepareMySQLUpstream(db *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS jg_gwmy",
		"CREATE TABLE IF NOT EXISTS jg_gwmy.items (id INT PRIMARY KEY, name VARCHAR(64))",
		"INSERT IGNORE INTO jg_gwmy.items VALUES (1, 'widget')",
		"CREATE USER IF NOT EXISTS 'jg_gwmy_read'@'%' IDENTIFIED BY '" + MySQLUpstreamPassword + "'",
		"CREATE USER IF NOT EXISTS 'jg_gwmy_write'@'%' IDENTIFIED BY '" + MySQLUpstreamPassword + "'",
		"GRANT SELECT ON jg_gwmy.* TO 'jg_gwmy_read'@'%'",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES ON jg_gwmy.* TO 'jg_gwmy_write'@'%'",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}
