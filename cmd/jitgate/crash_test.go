package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/rogpeppe/go-internal/testscript"
)

// crashTrials runs N SIGKILL trials against the server in the script's config (see
// crash_trials.txtar): crashtrials N. Each trial starts the server, gets some access switched
// on, kills the server with SIGKILL at a random moment of one of three phases (activating an
// ephemeral user, revoking one, a query running through the gateway), lets the grant end
// while the server is down where the phase needs it, restarts the server, and checks that
// within 5 s of the restart no access is left: no jit_ role of an ended grant, no session the
// store calls live, no upstream backend of the killed gateway. The seed is printed; set
// JITGATE_CRASH_SEED to replay a run.
func crashTrials(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: crashtrials N")
	}
	var n int
	if _, err := fmt.Sscan(args[0], &n); err != nil || n < 1 {
		ts.Fatalf("crashtrials: N must be a positive number")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("JITGATE_CRASH_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	ts.Logf("crash trials: seed %d (JITGATE_CRASH_SEED replays it)", seed)
	ct := &crashTrial{ts: ts, rnd: rand.New(rand.NewPCG(seed, seed)), uniq: ts.Getenv("UNIQ"),
		url: ts.Getenv("JITGATE_SERVER"), token: ts.Getenv("OWNER"), cfg: ts.MkAbs("jitgate.yaml")}
	ct.bin = lookPath(ts, "jitgate")
	ctx := context.Background()
	db, err := pgx.Connect(ctx, testdb.PostgresURL())
	ts.Check(err)
	defer db.Close(ctx)
	ct.db = db
	phases := []func(int){ct.duringActivation, ct.duringRevoke, ct.duringQuery, ct.midCreate, ct.midDrop}
	for i := range n {
		phases[i%len(phases)](i + 1)
	}
}

type crashTrial struct {
	ts         *testscript.TestScript
	rnd        *rand.Rand
	uniq       string
	url, token string
	cfg, bin   string
	db         *pgx.Conn
	lastGrant  int64 // the newest grant's id: the store numbers them 1, 2, 3...
	srv        *exec.Cmd
	log        *os.File
}

func lookPath(ts *testscript.TestScript, name string) string {
	for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	ts.Fatalf("%s not on the script's PATH", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// start starts the server and waits until it is ready.
func (ct *crashTrial) start() {
	ts := ct.ts
	addr := strings.TrimPrefix(ct.url, "http://")
	cmd := exec.Command(ct.bin, "server", "--config", ct.cfg, "--http-addr", addr)
	cmd.Env = append(os.Environ(), "JITGATE_PROVISION_KEY="+ts.Getenv("JITGATE_PROVISION_KEY"), "HOME="+ts.Getenv("HOME"))
	var err error
	ct.log, err = os.OpenFile(ts.MkAbs("server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	ts.Check(err)
	cmd.Stdout, cmd.Stderr = ct.log, ct.log
	ts.Check(cmd.Start())
	ct.srv = cmd
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(ct.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("server not ready after 20s; see server.log")
}

// kill SIGKILLs the server.
func (ct *crashTrial) kill() {
	ct.ts.Check(ct.srv.Process.Signal(syscall.SIGKILL))
	ct.srv.Wait()
	ct.log.Close()
}

// stop ends the server cleanly.
func (ct *crashTrial) stop() {
	ct.srv.Process.Signal(syscall.SIGINT)
	ct.srv.Wait()
	ct.log.Close()
}

func (ct *crashTrial) client() *httpapi.Client { return httpapi.NewClient(ct.url, ct.token) }

func (ct *crashTrial) request(role string, d time.Duration) *jitgate.Grant {
	ctx := context.Background()
	r, err := ct.client().Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: role, Duration: d, Reason: "crash trial"})
	ct.ts.Check(err)
	if r.GrantID == 0 {
		ct.ts.Fatalf("request %d not approved: %s", r.ID, r.State)
	}
	g := ct.grant(r.GrantID)
	ct.lastGrant = g.ID
	return g
}

// blocker holds a transaction open on the test's own connection to the upstream PostgreSQL
// that makes the provisioner's next statement on role wait (sql is run in it), so that the
// server can be killed while its provisioning attempt certainly holds its lease. release
// rolls it back.
func (ct *crashTrial) blocker(sql string) (release func()) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.PostgresURL())
	ct.ts.Check(err)
	tx, err := conn.Begin(ctx)
	ct.ts.Check(err)
	_, err = tx.Exec(ctx, sql)
	ct.ts.Check(err)
	return func() {
		tx.Rollback(ctx)
		conn.Close(ctx)
	}
}

// waitBlocked waits until a backend waits for a lock running a statement that mentions role.
func (ct *crashTrial) waitBlocked(trial int, role string) {
	ct.within(trial, 10*time.Second, "the provisioner waiting on the blocker for "+role, func() bool {
		return ct.backends(`wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, role) > 0
	})
}

// midCreate kills the server while its provisioner's CREATE ROLE for a new grant waits (the
// lease held): after the restart the grant must not stay "granting" for the lease's minute,
// and its revoke must then remove the user.
func (ct *crashTrial) midCreate(trial int) {
	ctx := context.Background()
	ct.start()
	role := fmt.Sprintf("jit_%s_%d", ct.uniq, ct.lastGrant+1)
	release := ct.blocker("CREATE ROLE " + pgx.Identifier{role}.Sanitize())
	g := ct.request("eph", time.Hour)
	if ct.jitRole(g) != role {
		release()
		ct.ts.Fatalf("trial %d: grant %d, expected %s", trial, g.ID, role)
	}
	ct.waitBlocked(trial, role)
	time.Sleep(time.Duration(ct.rnd.IntN(50)) * time.Millisecond)
	ct.kill()
	release()
	ct.start()
	defer ct.stop()
	ct.within(trial, 5*time.Second, "killed mid-CREATE ROLE: the grant provisioned", func() bool {
		got := ct.grant(g.ID)
		return got.Provision.State == jitgate.ProvisionStateGranted && ct.roleExists(role)
	})
	_, err := ct.client().Revoke(ctx, g.ID, "crash trial")
	ct.ts.Check(err)
	ct.within(trial, 5*time.Second, role+" absent after the revoke", func() bool { return !ct.roleExists(role) })
	ct.ts.Logf("trial %d: killed mid-CREATE ROLE; provisioned after restart, then revoked", trial)
}

// midDrop kills the server while its provisioner's revoke waits on the grant's user (the
// lease held, a query running through the gateway): after the restart the user is gone
// within 5 s, not after the lease's minute.
func (ct *crashTrial) midDrop(trial int) {
	ctx := context.Background()
	ct.start()
	g, role, done := ct.busyEphemeralGrant(trial)
	release := ct.blocker("ALTER ROLE " + pgx.Identifier{role}.Sanitize() + " CONNECTION LIMIT 7")
	_, err := ct.client().Revoke(ctx, g.ID, "crash trial")
	ct.ts.Check(err)
	ct.waitBlocked(trial, role)
	time.Sleep(time.Duration(ct.rnd.IntN(50)) * time.Millisecond)
	ct.kill()
	release()
	<-done
	ct.start()
	defer ct.stop()
	ct.within(trial, 5*time.Second, "killed mid-revoke: "+role+" absent, its backends gone, no live session", func() bool {
		return !ct.roleExists(role) && ct.backends(`usename = $1`, role) == 0 && ct.noLiveSessions()
	})
	ct.ts.Logf("trial %d: killed while the revoke of %s waited; gone after restart", trial, role)
}

// grant reads a grant's current state.
func (ct *crashTrial) grant(id int64) *jitgate.Grant {
	g, err := ct.client().GetGrant(context.Background(), id)
	ct.ts.Check(err)
	return g
}

func (ct *crashTrial) jitRole(g *jitgate.Grant) string {
	return fmt.Sprintf("jit_%s_%d", ct.uniq, g.ID)
}

func (ct *crashTrial) roleExists(role string) bool {
	var ok bool
	ct.ts.Check(ct.db.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&ok))
	return ok
}

// backends counts upstream backends that match the condition (a query on pg_stat_activity).
func (ct *crashTrial) backends(where string, args ...any) int {
	var n int
	ct.ts.Check(ct.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE `+where, args...).Scan(&n))
	return n
}

// within waits up to d for ok, failing the trial with what (and how long it took) if not.
func (ct *crashTrial) within(trial int, d time.Duration, what string, ok func() bool) {
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			ct.ts.Fatalf("trial %d: %s not true %s after the restart", trial, what, d)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// noLiveSessions reports whether the store has no live session.
func (ct *crashTrial) noLiveSessions() bool {
	ss, err := ct.client().Sessions(context.Background(), jitgate.SessionFilter{Live: true})
	ct.ts.Check(err)
	return len(ss) == 0
}

// sleepPast waits until t has passed (real time: the server is down).
func sleepPast(t time.Time) { time.Sleep(time.Until(t) + 200*time.Millisecond) }

// duringActivation kills the server while it creates a grant's ephemeral user; the grant ends
// while the server is down.
func (ct *crashTrial) duringActivation(trial int) {
	ct.start()
	g := ct.request("eph", 2*time.Second)
	time.Sleep(time.Duration(ct.rnd.IntN(300)) * time.Millisecond)
	ct.kill()
	sleepPast(g.EndsAt)
	ct.start()
	defer ct.stop()
	role := ct.jitRole(g)
	ct.within(trial, 5*time.Second, "activation killed: "+role+" absent and the grant ended", func() bool {
		got := ct.grant(g.ID)
		return !ct.roleExists(role) && got.State == jitgate.GrantExpired &&
			(got.Provision.State == jitgate.ProvisionStateRevoked || got.Provision.State == jitgate.ProvisionStateNone)
	})
	ct.ts.Logf("trial %d: killed during activation; clean after restart", trial)
}

// duringRevoke kills the server while it revokes a grant with an ephemeral user and a query
// running through the gateway: the kill comes a random few milliseconds after the revoke is
// sent, so it lands before the revoke commits, while its provisioning attempt holds its lease
// (dropping the user), or just after.
func (ct *crashTrial) duringRevoke(trial int) {
	ctx := context.Background()
	ct.start()
	g, role, done := ct.busyEphemeralGrant(trial)
	go ct.client().Revoke(ctx, g.ID, "crash trial")
	time.Sleep(time.Duration(ct.rnd.IntN(40)) * time.Millisecond)
	ct.kill()
	<-done
	ct.start()
	defer ct.stop()
	got := ct.grant(g.ID)
	outcome := "after the revoke committed"
	if got.State == jitgate.GrantActive {
		// The kill came first: the grant stands. Revoke it now; the same must hold.
		outcome = "before the revoke committed"
		_, err := ct.client().Revoke(ctx, g.ID, "crash trial, again")
		ct.ts.Check(err)
	}
	ct.within(trial, 5*time.Second, "revoke killed: "+role+" absent, its backends gone, no live session", func() bool {
		return !ct.roleExists(role) && ct.backends(`usename = $1`, role) == 0 && ct.noLiveSessions()
	})
	ct.ts.Logf("trial %d: killed during a revoke (%s, provisioning %s); clean after restart", trial, outcome, got.Provision.State)
}

// duringQuery kills the server while a query of a plain-role grant runs through the gateway;
// the grant ends while the server is down.
func (ct *crashTrial) duringQuery(trial int) {
	ct.start()
	g := ct.request("read", 5*time.Second)
	app := fmt.Sprintf("crash-%s-%d", ct.uniq, trial)
	done := ct.query(g, app)
	ct.within(trial, 10*time.Second, "the query running", func() bool { return ct.backends(`application_name = $1 AND state = 'active'`, app) == 1 })
	time.Sleep(time.Duration(ct.rnd.IntN(500)) * time.Millisecond)
	ct.kill()
	<-done
	sleepPast(g.EndsAt)
	ct.start()
	defer ct.stop()
	ct.within(trial, 5*time.Second, "query killed: its upstream backend gone, no live session", func() bool {
		return ct.backends(`application_name = $1`, app) == 0 && ct.noLiveSessions()
	})
	ct.ts.Logf("trial %d: killed during a gateway query; clean after restart", trial)
}

// busyEphemeralGrant gets an hour's grant of the ephemeral role, waits for its user, and starts
// a long query through the gateway under it; done is closed when the query returns.
func (ct *crashTrial) busyEphemeralGrant(trial int) (g *jitgate.Grant, role string, done <-chan struct{}) {
	g = ct.request("eph", time.Hour)
	role = ct.jitRole(g)
	ct.within(trial, 10*time.Second, role+" created", func() bool {
		return ct.grant(g.ID).Provision.State == jitgate.ProvisionStateGranted
	})
	app := fmt.Sprintf("crash-%s-%d", ct.uniq, trial)
	done = ct.query(g, app)
	ct.within(trial, 10*time.Second, "the query running", func() bool { return ct.backends(`application_name = $1 AND state = 'active'`, app) == 1 })
	return g, role, done
}

// query runs a long query through the gateway under g, as application app; done is closed
// when it returns (the kill ends it).
func (ct *crashTrial) query(g *jitgate.Grant, app string) <-chan struct{} {
	ctx := context.Background()
	cr, err := ct.client().Credentials(ctx, g.ID)
	ct.ts.Check(err)
	if cr.Via != access.ViaGateway {
		ct.ts.Fatalf("credentials via %s, want the gateway", cr.Via)
	}
	dsn := fmt.Sprintf("postgres://%s:%s@%s:%s/%s?sslmode=disable&application_name=%s", cr.User, cr.Password, cr.Host, cr.Port, cr.Database, app)
	conn, err := pgx.Connect(ctx, dsn)
	ct.ts.Check(err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		conn.Exec(ctx, "SELECT pg_sleep(60)")
	}()
	return done
}
