package testdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// GatewayUpstream prepares the test PostgreSQL as a gateway upstream (see PrepareUpstream) and
// returns its host:port and database. It skips (or, with CI=true, fails) when PostgreSQL is
// unreachable.
func GatewayUpstream(t testing.TB) (addr, database string) {
	t.Helper()
	addr, database, err := PrepareUpstream()
	if errors.Is(err, ErrUnreachable) && os.Getenv("CI") != "true" {
		t.Skipf("%v; set JITGATE_TEST_POSTGRES, or CI=true to make this fatal", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return addr, database
}

// PrepareUpstream makes, idempotently, login roles jg_gw_read (pg_read_all_data) and
// jg_gw_write (also pg_write_all_data) and a table jg_gw.items with one row in the test
// PostgreSQL, serialized by an advisory lock across parallel test processes.
func PrepareUpstream() (addr, database string, err error) {
	u, err := url.Parse(PostgresURL())
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		return "", "", fmt.Errorf("%w (%s): %v", ErrUnreachable, PostgresURL(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(4242001)"); err != nil {
		return "", "", err
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(4242001)")
	for _, q := range []string{
		`DO $$ BEGIN
		   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jg_gw_read') THEN CREATE ROLE jg_gw_read LOGIN; END IF;
		   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jg_gw_write') THEN CREATE ROLE jg_gw_write LOGIN; END IF;
		 END $$`,
		`GRANT pg_read_all_data TO jg_gw_read`,
		`GRANT pg_read_all_data, pg_write_all_data TO jg_gw_write`,
		`CREATE SCHEMA IF NOT EXISTS jg_gw`,
		`CREATE TABLE IF NOT EXISTS jg_gw.items (id int PRIMARY KEY, name text)`,
		`INSERT INTO jg_gw.items VALUES (1, 'widget') ON CONFLICT DO NOTHING`,
		`GRANT USAGE ON SCHEMA jg_gw TO jg_gw_read, jg_gw_write`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil && !strings.Contains(err.Error(), "already exists") {
			return "", "", fmt.Errorf("%s: %w", q, err)
		}
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return u.Hostname() + ":" + port, strings.TrimPrefix(u.Path, "/"), nil
}

// WaitUpstreamQuery waits up to within until a statement containing text is running (present)
// or no longer running (!present) in the test PostgreSQL as one of the gateway's upstream
// roles (jg_gw_*), failing t otherwise.
func WaitUpstreamQuery(t testing.TB, text string, present bool, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(within)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'jg_gw_%' AND state = 'active' AND query LIKE '%'||$1||'%'`, text).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if (n > 0) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream query %q present=%v after %s (count %d)", text, !present, within, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
