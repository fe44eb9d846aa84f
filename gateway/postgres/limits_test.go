package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/internal/gwtest"
)

// Wrong passwords are counted by reason, logged (not every one), audited as a burst, and a
// source that keeps guessing is answered more slowly.
func TestFailedLoginsAreAccounted(t *testing.T) {
	logs := &gwtest.SyncBuffer{}
	e := newEnv(t, func(o *postgres.Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		o.Limits = gateway.Limits{FailureThreshold: 5, MaxFailureDelay: 200 * time.Millisecond}
	})
	ctx := context.Background()
	const guesses = 20
	start := time.Now()
	for i := range guesses {
		_, err := pgx.Connect(ctx, e.dsn("alice", fmt.Sprintf("jgs_guess%d", i)))
		if sqlstate(err) != "28P01" {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	// Someone else's real credential counts as foreign, and is answered as unknown.
	_, secret := e.grant(t, "read", time.Hour)
	if _, err := pgx.Connect(ctx, e.dsn("bob", secret)); !strings.Contains(fmt.Sprint(err), "unknown credential") {
		t.Fatalf("foreign credential: %v", err)
	}
	// From the fifth failure on, each answer waited the 200ms cap: 17 of them, 3.4s at least.
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("%d failed logins took only %v: no slow-down", guesses+1, took)
	}
	if got := metric(t, e.gw, "jitgate_gateway_login_failures_total", jitgate.AuthUnknownCredential); got != guesses {
		t.Errorf("unknown_credential failures = %v, want %d", got, guesses)
	}
	if got := metric(t, e.gw, "jitgate_gateway_login_failures_total", jitgate.AuthForeignCredential); got != 1 {
		t.Errorf("foreign_credential failures = %v, want 1", got)
	}
	if got := metric(t, e.gw, "jitgate_gateway_login_failure_bursts_total"); got != 1 {
		t.Errorf("bursts = %v, want 1", got)
	}
	lines := strings.Count(logs.String(), "login failed")
	if lines < 3 || lines > 8 {
		t.Errorf("%d 'login failed' log lines for %d failures, want a rate-limited handful:\n%s", lines, guesses+1, logs.String())
	}
	if !strings.Contains(logs.String(), "burst of failed logins") {
		t.Errorf("no burst in the log:\n%s", logs.String())
	}
	// The burst is in the audit log.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var evs []*jitgate.AuditEvent
		err := e.store.View(ctx, func(tx jitgate.Tx) error {
			all, err := tx.ListAudit(jitgate.AuditFilter{})
			for _, ev := range all {
				if ev.Action == gateway.ActionLoginFailures {
					evs = append(evs, ev)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 1 && evs[0].Details["client"] == "127.0.0.1" && evs[0].Details["last_user"] == "alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit burst events: %+v", evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A real login still works from that source (slowed answers are for failures only).
	e.connect(t, secret).Close(ctx)
}

// A client that connects and says nothing holds one pre-authentication slot; past the cap for
// its address it is refused at once with 53300, while another address still gets in.
func TestUnauthenticatedCapPerSource(t *testing.T) {
	e := newEnv(t, func(o *postgres.Options) { o.Limits = gateway.Limits{MaxUnauthenticatedPerSource: 3} })
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	waitFor(t, func() bool { return metric(t, e.gw, "jitgate_gateway_unauthenticated") == 3 })
	ctx := context.Background()
	_, secret := e.grant(t, "read", time.Hour)
	_, err := pgx.Connect(ctx, e.dsn("alice", secret))
	if sqlstate(err) != "53300" {
		t.Fatalf("fourth connection from 127.0.0.1: %v, want 53300", err)
	}
	// From 127.0.0.2 (another source on the loopback network) a login still works.
	cfg, err := pgx.ParseConfig(e.dsn("alice", secret))
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	cfg.DialFunc = d.DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("from 127.0.0.2: %v", err)
	}
	conn.Close(ctx)
	if got := metric(t, e.gw, "jitgate_gateway_connections_refused_total", gateway.RefusedSource); got != 1 {
		t.Errorf("refused (source) = %v, want 1", got)
	}
	// The idle clients go away: their source may connect again.
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	waitFor(t, func() bool { return metric(t, e.gw, "jitgate_gateway_unauthenticated") == 0 })
	e.connect(t, secret).Close(ctx)
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lowFDChild is the environment variable that makes TestOutOfFileDescriptors's subprocess
// serve a gateway under a low descriptor limit.
const lowFDChild = "JITGATE_TEST_LOWFD_CHILD"

// A gateway that runs out of file descriptors keeps accepting once descriptors are free again:
// a subprocess with a low RLIMIT_NOFILE is flooded past it, and then a valid login works.
func TestOutOfFileDescriptors(t *testing.T) {
	if os.Getenv(lowFDChild) == "1" {
		serveLowFD(t)
		return
	}
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutOfFileDescriptors$", "-test.v")
	cmd.Env = append(os.Environ(), lowFDChild+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr gwtest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, stderr.String())
		}
	}()
	sc := bufio.NewScanner(stdout)
	var addr, secret string
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "LOWFD %s %s", &addr, &secret); err == nil {
			break
		}
	}
	if addr == "" {
		t.Fatalf("child printed no address:\n%s", stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	// Flood: far more connections than the child has descriptors, held open.
	var flood []net.Conn
	for range 200 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "too many open files") {
		if time.Now().After(deadline) {
			t.Fatalf("the child never ran out of descriptors:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range flood {
		c.Close()
	}
	// Once the flood is gone the same gateway logs a valid client in (it may take a moment for
	// the child to see the closes and its backoff to end).
	dsn := fmt.Sprintf("postgres://alice:%s@%s/app-db?sslmode=disable&connect_timeout=5", secret, addr)
	var err error
	for time.Now().Before(deadline.Add(10 * time.Second)) {
		var conn *pgx.Conn
		if conn, err = pgx.Connect(context.Background(), dsn); err == nil {
			var one int
			err = conn.QueryRow(context.Background(), "SELECT 1").Scan(&one)
			conn.Close(context.Background())
			if err == nil {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no login after the flood: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "accepting again") {
		t.Errorf("the child did not log its recovery:\n%s", stderr.String())
	}
}

// serveLowFD runs in the subprocess: a gateway with a valid credential, then a descriptor
// limit a few above what is open, until stdin closes.
func serveLowFD(t *testing.T) {
	e := newEnv(t, func(o *postgres.Options) {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		o.Limits = gateway.Limits{MaxUnauthenticatedPerSource: 10000, MaxUnauthenticated: 10000}
	})
	_, secret := e.grant(t, "read", time.Hour)
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(open) + 24), Max: uint64(len(open) + 24)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LOWFD %s %s\n", e.addr, secret)
	io.Copy(io.Discard, os.Stdin)
}
