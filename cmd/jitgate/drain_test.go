package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/gwtest"
	"github.com/jitgate/jitgate/internal/testdb"
)

const drainConfig = `server:
  store: %s
  admins: [carol]
gateway:
  postgres:
    addr: %s
    insecure_plaintext: true
users:
  - {name: alice, groups: [engineering]}
  - {name: carol, groups: [sre]}
resources:
  - name: app-db
    kind: postgres
    address: %s
    database: %s
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: jg_gw_read}}
policies:
  - name: engineers
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: [read]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

// drainReplica is one `jitgate server` process of TestGracefulShutdownDrains.
type drainReplica struct {
	t         *testing.T
	name      string
	url, gw   string
	cmd       *exec.Cmd
	log       gwtest.SyncBuffer
	exited    chan error
	exitError error
}

func startDrainReplica(t *testing.T, bin, name, dsn, upstream, database string) *drainReplica {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "jitgate.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, drainConfig, dsn, gw, upstream, database), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &drainReplica{t: t, name: name, url: "http://" + addr, gw: gw, exited: make(chan error, 1)}
	r.cmd = exec.Command(bin, "server", "--config", cfg, "--http-addr", addr)
	r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("replica %s log:\n%s", name, r.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(r.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready after 20 s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits until the replica's log has text.
func (r *drainReplica) waitLog(text string) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.log.String(), text) {
		if time.Now().After(deadline) {
			r.t.Fatalf("replica %s never logged %q", r.name, text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits until the process has exited, and fails unless it exited cleanly.
func (r *drainReplica) waitExit(within time.Duration) {
	r.t.Helper()
	select {
	case err := <-r.exited:
		if err != nil {
			r.t.Fatalf("replica %s exited with %v", r.name, err)
		}
	case <-time.After(within):
		r.t.Fatalf("replica %s still runs %s later", r.name, within)
	}
}

// running reports whether the process still runs.
func (r *drainReplica) running() bool {
	select {
	case err := <-r.exited:
		r.exitError = err
		return false
	default:
		return true
	}
}

// A replica told to stop (SIGTERM) drains: its listeners close at once, so a load balancer
// sends new connections to the other replica, but its live gateway sessions go on and are cut
// only when their grant ends: here by a revoke made on the other replica, which reaches the
// draining one through the store's change notices. A second signal ends the drain at once.
func TestGracefulShutdownDrains(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs two server processes")
	}
	upstream, database := testdb.GatewayUpstream(t)
	dsn := testdb.Postgres(t).DSN
	bin := filepath.Join(t.TempDir(), "jitgate")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	a := startDrainReplica(t, bin, "A", dsn, upstream, database)
	b := startDrainReplica(t, bin, "B", dsn, upstream, database)
	cfgA := a.cmd.Args[3]
	out, err := exec.Command(bin, "token", "create", "--user", "alice", "--config", cfgA).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	token := strings.TrimSpace(string(out))
	ctx := context.Background()

	// session opens a gateway session on replica r under a new grant.
	session := func(r *drainReplica) (*pgx.Conn, int64) {
		t.Helper()
		c := httpapi.NewClient(r.url, token)
		req, err := c.Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "drain test"})
		if err != nil {
			t.Fatal(err)
		}
		cred, err := c.Credentials(ctx, req.GrantID)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", cred.User, cred.Password, r.gw, cred.Database))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn, req.GrantID
	}
	query := func(conn *pgx.Conn) error {
		var n int
		return conn.QueryRow(ctx, "SELECT count(*) FROM jg_gw.items").Scan(&n)
	}

	// 1. Drained into the other replica's care.
	connA, grantA := session(a)
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a.waitLog("draining")
	if !a.running() {
		t.Fatalf("replica A exited (%v) with a live session", a.exitError)
	}
	if err := query(connA); err != nil {
		t.Fatalf("the live session on the draining replica failed: %v", err)
	}
	if c, err := net.DialTimeout("tcp", a.gw, time.Second); err == nil {
		c.Close()
		t.Fatal("the draining replica's gateway still accepts connections")
	}
	if resp, err := http.Get(a.url + "/readyz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the draining replica still answers /readyz: %s", resp.Status)
	}
	time.Sleep(300 * time.Millisecond) // a little more than nothing: the session must outlive the signal
	if err := query(connA); err != nil {
		t.Fatalf("the live session on the draining replica failed: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := connA.Exec(ctx, "SELECT pg_sleep(30)")
		ended <- err
	}()
	testdb.WaitUpstreamQuery(t, "SELECT pg_sleep(30)", true, 10*time.Second)
	if _, err := httpapi.NewClient(b.url, token).Revoke(ctx, grantA, "drain test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" || !strings.Contains(pe.Message, "revoked") {
			t.Fatalf("the session ended with %v, want 57P01 naming the revoke", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the draining replica's session still runs 10 s after the revoke on the other replica")
	}
	a.waitExit(10 * time.Second)
	for _, want := range []string{"draining", "drained: every gateway session has ended", "stopped"} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("replica A's log lacks %q", want)
		}
	}

	// 2. A second signal ends the drain at once.
	connB, _ := session(b)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	b.waitLog("draining")
	if err := query(connB); err != nil {
		t.Fatalf("the live session on the draining replica failed: %v", err)
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	b.waitExit(10 * time.Second)
	err = query(connB)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" || !strings.Contains(pe.Message, "jitgate is shutting down") {
		t.Fatalf("after the second signal the session got %v, want its end", err)
	}
	for _, want := range []string{"second signal: ending the live gateway sessions now", "drain over: ending the sessions still live"} {
		if !strings.Contains(b.log.String(), want) {
			t.Errorf("replica B's log lacks %q", want)
		}
	}
}
