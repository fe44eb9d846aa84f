package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func reuse(d time.Duration) func(*postgres.Options) {
	return func(o *postgres.Options) { o.ReuseUpstream = d }
}

// backend connects, runs f, and returns the upstream backend's PID; Close sends Terminate.
func (e *env) backend(t *testing.T, dsn string, f func(*pgx.Conn)) int32 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid int32
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if f != nil {
		f(conn)
	}
	return pid
}

// waitParked waits until the gateway keeps n upstream connections.
func waitParked(t *testing.T, gw *postgres.Gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := metric(t, gw, "jitgate_gateway_upstream_idle")
		if int(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v upstream connections kept, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A session that ends cleanly leaves its upstream connection, reset, to the grant's next
// session: same backend, none of the first session's state.
func TestReuseUpstream(t *testing.T) { relays(t, testReuseUpstream) }

func testReuseUpstream(t *testing.T, relay string) {
	e := newEnv(t, reuse(time.Minute), withRelay(relay))
	g, secret := e.grant(t, "read", time.Hour)
	ctx := context.Background()
	first := e.backend(t, e.dsn("alice", secret), func(c *pgx.Conn) {
		for _, q := range []string{"SET work_mem = '7MB'", "SET ROLE NONE", "CREATE TEMP TABLE scratch (x int)", "PREPARE p AS SELECT 1", "LISTEN chan", "SELECT pg_advisory_lock(77)"} {
			if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	})
	waitParked(t, e.gw, 1)
	second := e.backend(t, e.dsn("alice", secret), func(c *pgx.Conn) {
		var workMem string
		var scratch, prepared, listening, locks int
		if err := c.QueryRow(ctx, `SELECT current_setting('work_mem'), (SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't'),
			(SELECT count(*) FROM pg_prepared_statements WHERE name = 'p'), (SELECT count(*) FROM pg_listening_channels()),
			(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).Scan(&workMem, &scratch, &prepared, &listening, &locks); err != nil {
			t.Fatal(err)
		}
		if workMem == "7MB" || scratch != 0 || prepared != 0 || listening != 0 || locks != 0 {
			t.Errorf("state leaked into the next session: work_mem=%s temp=%d prepared=%d listening=%d locks=%d", workMem, scratch, prepared, listening, locks)
		}
	})
	if first != second {
		t.Fatalf("second session got backend %d, want the kept %d", second, first)
	}
	if got := metric(t, e.gw, "jitgate_gateway_upstream_reused_total"); got != 1 {
		t.Errorf("reused_total = %v, want 1", got)
	}
	// Each client session is still its own audited session, and the chain verifies.
	sessions, err := e.eng.ListSessions(e.bob, jitgate.SessionFilter{GrantID: g.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 2 {
		t.Fatalf("%d sessions recorded, want 2", len(sessions))
	}
	waitStatements(t, e, g.ID, 9)
	if res, err := audit.Verify(ctx, e.store); err != nil || !res.OK {
		t.Fatalf("verify: %+v %v", res, err)
	}
	e.checkRelay(t, relay)
}

// Only a connection left idle is kept: not one closed inside a transaction, not one another
// grant or other startup parameters would get, and never with reuse off.
func TestReuseOnlyWhenSafe(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, reuse(time.Minute))
	_, secret := e.grant(t, "read", time.Hour)
	dsn := e.dsn("alice", secret)
	inTx := e.backend(t, dsn, func(c *pgx.Conn) {
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
	})
	waitParked(t, e.gw, 0)
	again := e.backend(t, dsn, nil)
	if again == inTx {
		t.Fatal("a connection closed inside a transaction was reused")
	}
	waitParked(t, e.gw, 1)
	// Other startup parameters: a fresh backend (the kept one stays for its own kind).
	other := e.backend(t, dsn+"&application_name=other", nil)
	if other == again {
		t.Fatal("reused across startup parameters")
	}
	waitParked(t, e.gw, 2)
	// Another grant never gets them.
	_, secret2 := e.grant(t, "write", time.Hour)
	pid2 := e.backend(t, e.dsn("alice", secret2), nil)
	if pid2 == again || pid2 == other {
		t.Fatal("reused across grants")
	}
	waitParked(t, e.gw, 3)

	off := newEnv(t)
	_, secret = off.grant(t, "read", time.Hour)
	a := off.backend(t, off.dsn("alice", secret), nil)
	b := off.backend(t, off.dsn("alice", secret), nil)
	if a == b {
		t.Fatal("reused with reuse off")
	}
	waitParked(t, off.gw, 0)
}

// A revoke closes the grant's kept connections at once; a kept connection the server closed
// is passed over.
func TestReuseEndsWithGrant(t *testing.T) { relays(t, testReuseEndsWithGrant) }

func testReuseEndsWithGrant(t *testing.T, relay string) {
	ctx := context.Background()
	e := newEnv(t, reuse(time.Minute), withRelay(relay))
	g, secret := e.grant(t, "read", time.Hour)
	dsn := e.dsn("alice", secret)
	pid := e.backend(t, dsn, nil)
	waitParked(t, e.gw, 1)

	// The server ends the kept backend: the next session does not get a dead connection.
	admin, err := pgx.Connect(ctx, testdb.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	waitBackend(t, admin, pid, false)
	pid = e.backend(t, dsn, nil)
	waitParked(t, e.gw, 1)
	waitBackend(t, admin, pid, true)

	if _, err := e.eng.Revoke(e.bob, g.ID, "done"); err != nil {
		t.Fatal(err)
	}
	waitParked(t, e.gw, 0)
	waitBackend(t, admin, pid, false)
}

// waitBackend waits until the backend pid is (or is no longer) connected.
func waitBackend(t *testing.T, admin *pgx.Conn, pid int32, present bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		var n int
		if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if (n == 1) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d present=%v after 3s", pid, !present)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric reads one of the gateway's metrics; with a reason, the series with that reason label
// (0 if it has not been counted yet).
func metric(t *testing.T, gw *postgres.Gateway, name string, reason ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(gw)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(reason) > 0 && label(m, "reason") != reason[0] {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	if len(reason) == 0 {
		t.Fatalf("no metric %s", name)
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Kept connections close after the idle timeout, and at their grant's end even if that comes
// first.
func TestReuseTimesOut(t *testing.T) {
	e := newEnv(t, reuse(200*time.Millisecond), func(o *postgres.Options) { o.SweepEvery = 20 * time.Millisecond })
	_, secret := e.grant(t, "read", time.Hour)
	e.backend(t, e.dsn("alice", secret), nil)
	waitParked(t, e.gw, 1)
	time.Sleep(200 * time.Millisecond)
	waitParked(t, e.gw, 0)

	long := newEnv(t, reuse(time.Hour))
	g, secret := long.grant(t, "write", 2*time.Second)
	long.backend(t, long.dsn("alice", secret), nil)
	waitParked(t, long.gw, 1)
	time.Sleep(time.Until(g.EndsAt))
	waitParked(t, long.gw, 0)
}
