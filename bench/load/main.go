// Command load drives jitgate server processes, as deployed, with the load of a large
// organisation, and prints what it measured. bench/load.sh runs it; see bench/README.md.
//
//	go run ./bench/load -mode cycles -store postgres -replicas 2 -clients 16 -seconds 10
//	go run ./bench/load -mode revoke -replicas 2 -rounds 200
//	go run ./bench/load -mode expiry -store postgres -replicas 2 -ephemeral 0
//
// Modes:
//   - cycles: request cycles per second through the REST API: each of -clients clients
//     submits a request, has it approved by an approver (which activates the grant) and
//     revokes the grant, in a loop, spreading its calls over the replicas. One cycle is three
//     API calls and three store transactions.
//   - revoke: revoke-to-session-closed latency across replicas: for each of -rounds grants, a
//     session runs a query through replica B's PostgreSQL gateway while replica A revokes the
//     grant; the time from the revoke call to the query's end is recorded.
//   - expiry: -grants grants (default 10,000) ending at the same instant, -sessions of them
//     (default 1,000) with a live gateway session, and -ephemeral more (default 1,000) with a
//     per-grant jit_ user, on -replicas server processes and a throwaway PostgreSQL cluster as
//     the database: the time from the end until every grant is expired, every client saw its
//     session end, every session end is recorded, and every jit_ user is dropped and verified.
//     With -kill, the last replica is SIGKILLed that long after the end (see expiry.go).
//   - audit: an audit log of -events events (in-process, on the store directly): the time and
//     memory of a full verification, of a page view's verification of what is new since the
//     last (the engine's AuditCheck), and of reading the newest page of events.
//
// The servers are the jitgate binary (-bin, or built into a temporary directory) on a new
// SQLite file or a new PostgreSQL database on JITGATE_TEST_POSTGRES (default the local test
// server), dropped at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
)

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "cycles", "cycles, revoke, expiry or audit")
	flag.Int64Var(&o.events, "events", 1_000_000, "audit events (audit)")
	flag.IntVar(&o.grants, "grants", 10_000, "grants ending together (expiry)")
	flag.IntVar(&o.sessions, "sessions", 1_000, "expiry: how many of the grants have a live gateway session")
	flag.IntVar(&o.ephemeral, "ephemeral", 1_000, "expiry: grants of a provision: ephemeral role, ending with the others")
	flag.DurationVar(&o.setup, "setup", 0, "expiry: time from the first grant's creation to their common end (default: from the counts)")
	flag.DurationVar(&o.kill, "kill", 0, "cycles: SIGKILL the last replica this long into the run; expiry: this long after the grants' end; then check that nothing was lost or done twice")
	flag.StringVar(&o.store, "store", "postgres", "sqlite or postgres")
	flag.IntVar(&o.replicas, "replicas", 1, "server processes on the store (sqlite: 1)")
	flag.IntVar(&o.clients, "clients", 16, "concurrent API clients (cycles)")
	flag.DurationVar(&o.duration, "seconds", 10*time.Second, "how long to run (cycles), e.g. 10s")
	flag.IntVar(&o.rounds, "rounds", 200, "grants revoked (revoke)")
	flag.StringVar(&o.bin, "bin", "", "the jitgate binary (default: build it)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	mode, store, bin   string
	replicas, clients  int
	rounds             int
	events             int64
	grants             int
	sessions           int
	ephemeral          int
	setup              time.Duration
	kill               time.Duration
	hook               *hook
	duration           time.Duration
	dir, dsn, cfg      string
	upstream, database string
	servers            []*server
	admin, approver    string
	requesters         []string
	requesterNames     []string
	approverName       string
	cleanup            []func()
	gatewayAddrs       []string
}

type server struct {
	url  string
	cmd  *exec.Cmd
	log  *os.File
	dead atomic.Bool
}

func run(o options) (err error) {
	if o.store == "sqlite" && o.replicas != 1 {
		return errors.New("a SQLite store has one server: -replicas 1")
	}
	if o.mode != "cycles" && o.mode != "revoke" && o.mode != "audit" && o.mode != "expiry" {
		return fmt.Errorf("unknown -mode %q", o.mode)
	}
	if o.mode == "revoke" && (o.store != "postgres" || o.replicas < 2) {
		return errors.New("-mode revoke needs -store postgres and -replicas 2 or more")
	}
	if o.dir, err = os.MkdirTemp("", "jitgate-load-"); err != nil {
		return err
	}
	defer func() {
		for i := len(o.cleanup) - 1; i >= 0; i-- {
			o.cleanup[i]()
		}
		if err == nil {
			os.RemoveAll(o.dir)
		} else {
			fmt.Fprintf(os.Stderr, "load: server logs kept in %s\n", o.dir)
		}
	}()
	if o.mode == "audit" {
		if err := o.openStore(); err != nil {
			return err
		}
		return o.auditLog()
	}
	if o.bin == "" {
		o.bin = filepath.Join(o.dir, "jitgate")
		build := exec.Command("go", "build", "-o", o.bin, "./cmd/jitgate")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	if err := o.openStore(); err != nil {
		return err
	}
	if o.mode == "expiry" {
		return o.expiry()
	}
	if o.kill > 0 {
		if o.mode != "cycles" || o.replicas < 2 {
			return errors.New("-kill needs -mode cycles or expiry and -replicas 2 or more")
		}
		if o.hook, err = startHook(); err != nil {
			return err
		}
		o.cleanup = append(o.cleanup, o.hook.close)
		os.Setenv("JITGATE_LOAD_HOOK_SECRET", hookSecret)
	}
	if err := o.writeConfig(); err != nil {
		return err
	}
	if err := o.mintTokens(); err != nil {
		return err
	}
	if err := o.startServers(); err != nil {
		return err
	}
	if o.mode == "cycles" {
		return o.cycles()
	}
	return o.revokes()
}

// openStore makes a new SQLite file or PostgreSQL database for the run.
func (o *options) openStore() error {
	if o.store == "sqlite" {
		o.dsn = "sqlite:" + filepath.Join(o.dir, "jitgate.db")
		return nil
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.PostgresURL())
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", testdb.PostgresURL(), err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("jg_load_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	o.cleanup = append(o.cleanup, func() {
		c, err := pgx.Connect(ctx, testdb.PostgresURL())
		if err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	u, _ := url.Parse(testdb.PostgresURL())
	u.Path = "/" + name
	o.dsn = u.String()
	if o.mode == "revoke" {
		if o.upstream, o.database, err = testdb.PrepareUpstream(); err != nil {
			return err
		}
	}
	return nil
}

func (o *options) writeConfig() error {
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  store: %q\n  admins: [admin]\n", o.dsn)
	if o.mode == "revoke" {
		// Each replica's gateway listens on its own port (set per process below).
		b.WriteString("gateway:\n  postgres:\n    addr: GATEWAY_ADDR\n    insecure_plaintext: true\n")
	}
	if o.hook != nil {
		// Every message to a local receiver, to count deliveries.
		fmt.Fprintf(&b, "notifications:\n  webhooks:\n    - {url: %q, secret_env: JITGATE_LOAD_HOOK_SECRET}\n", o.hook.url)
	}
	b.WriteString("users:\n  - {name: admin, groups: [admins]}\n  - {name: approver, groups: [sre]}\n")
	for i := range o.clients {
		name := fmt.Sprintf("user%02d", i)
		o.requesterNames = append(o.requesterNames, name)
		fmt.Fprintf(&b, "  - {name: %s, groups: [engineering]}\n", name)
	}
	addr, db := "127.0.0.1:5432", "test"
	if o.upstream != "" {
		addr, db = o.upstream, o.database
	}
	fmt.Fprintf(&b, `resources:
  - name: app-db
    kind: postgres
    address: %s
    database: %s
    sslmode: disable
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: jg_gw_read}}
policies:
  - name: engineers
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: [read]
    max_duration: 4h
    approval:
      steps: [{approvers: {groups: [sre]}}]
`, addr, db)
	if o.mode == "revoke" {
		b.WriteString("    auto_approve: 'true'\n")
	}
	o.cfg = filepath.Join(o.dir, "jitgate.yaml")
	return os.WriteFile(o.cfg, []byte(b.String()), 0o600)
}

// mintTokens creates the users' API tokens directly on the store, as an operator.
func (o *options) mintTokens() error {
	mint := func(user string) (string, error) {
		cfg := o.cfg
		if o.mode == "revoke" {
			cfg = o.configFor(0)
		}
		out, err := exec.Command(o.bin, "token", "create", "--user", user, "--ttl", "2h", "--config", cfg).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("token for %s: %s", user, ee.Stderr)
			}
			return "", err
		}
		return strings.TrimSpace(string(out)), nil
	}
	var err error
	if o.admin, err = mint("admin"); err != nil {
		return err
	}
	if o.approver, err = mint("approver"); err != nil {
		return err
	}
	for _, u := range o.requesterNames {
		tok, err := mint(u)
		if err != nil {
			return err
		}
		o.requesters = append(o.requesters, tok)
	}
	return nil
}

// configFor writes replica i's config: the shared one with its own gateway address.
func (o *options) configFor(i int) string {
	if o.mode != "revoke" && o.mode != "expiry" {
		return o.cfg
	}
	for len(o.gatewayAddrs) <= i {
		o.gatewayAddrs = append(o.gatewayAddrs, freeAddr())
	}
	data, _ := os.ReadFile(o.cfg)
	p := filepath.Join(o.dir, fmt.Sprintf("replica%d.yaml", i))
	os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "GATEWAY_ADDR", o.gatewayAddrs[i])), 0o600)
	return p
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (o *options) startServers() error {
	for i := range o.replicas {
		addr := freeAddr()
		log, err := os.Create(filepath.Join(o.dir, fmt.Sprintf("server%d.log", i)))
		if err != nil {
			return err
		}
		cmd := exec.Command(o.bin, "server", "--config", o.configFor(i), "--http-addr", addr, "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return err
		}
		s := &server{url: "http://" + addr, cmd: cmd, log: log}
		o.servers = append(o.servers, s)
		o.cleanup = append(o.cleanup, func() {
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			log.Close()
		})
	}
	for _, s := range o.servers {
		if err := waitReady(s.url); err != nil {
			return err
		}
	}
	return nil
}

func waitReady(u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(u + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server %s not ready after 30s", u)
}

// cycles runs the request-cycle load and prints cycles per second and call latencies.
func (o *options) cycles() error {
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	client := func(srv, token string) *httpapi.Client {
		c := httpapi.NewClient(srv, token)
		c.HTTP = &http.Client{Transport: transport, Timeout: 30 * time.Second}
		return c
	}
	var (
		done   atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
		errs   atomic.Int64
		first  error
		wg     sync.WaitGroup
		timing = func(d time.Duration) { mu.Lock(); lat = append(lat, d); mu.Unlock() }
	)
	start, cpu0 := time.Now(), o.sampleCPU()
	if o.kill > 0 {
		victim := o.servers[len(o.servers)-1]
		time.AfterFunc(o.kill, func() {
			victim.dead.Store(true)
			victim.cmd.Process.Kill()
			fmt.Fprintf(os.Stderr, "load: SIGKILLed %s after %s\n", victim.url, o.kill)
		})
	}
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				// Each call of a cycle on the next replica: a cycle crosses replicas.
				req := client(o.pick(i+k), o.requesters[i])
				appr := client(o.pick(i+k+1), o.approver)
				rev := client(o.pick(i+k+2), o.requesters[i])
				t0 := time.Now()
				r, err := req.Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "load"})
				t1 := time.Now()
				if err == nil {
					r, err = appr.Review(ctx, r.ID, jitgate.Approve, "")
				}
				t2 := time.Now()
				if err == nil {
					_, err = rev.Revoke(ctx, r.GrantID, "load")
				}
				t3 := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if errs.Add(1) == 1 {
						mu.Lock()
						first = err
						mu.Unlock()
					}
					// A cycle cut short (its replica died) may have left a pending request or a
					// live grant that the next submit would conflict with: clear them.
					o.tidy(ctx, client(o.pick(i+k+3), o.requesters[i]))
					continue
				}
				done.Add(1)
				timing(t1.Sub(t0))
				timing(t2.Sub(t1))
				timing(t3.Sub(t2))
			}
		}()
	}
	wg.Wait()
	elapsed, cpu1 := time.Since(start), o.sampleCPU()
	if first != nil {
		fmt.Fprintf(os.Stderr, "load: %d failed cycles; the first: %v\n", errs.Load(), first)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	fmt.Printf("cycles store=%s replicas=%d clients=%d seconds=%.1f cycles=%d failed=%d rate=%.1f/s call_p50=%s call_p99=%s %s\n",
		o.store, o.replicas, o.clients, elapsed.Seconds(), done.Load(), errs.Load(), float64(done.Load())/elapsed.Seconds(), p(0.5), p(0.99),
		perCycle(cpu0, cpu1, done.Load()))
	if errs.Load() > 0 && done.Load() == 0 {
		return errors.New("no cycle succeeded")
	}
	if o.kill > 0 {
		return o.checkAfterKill()
	}
	return nil
}

// tidy cancels the caller's pending requests and revokes its live grants.
func (o *options) tidy(ctx context.Context, c *httpapi.Client) {
	if rs, err := c.ListRequests(ctx, access.RequestQuery{Mine: true, State: jitgate.RequestPending}); err == nil {
		for _, r := range rs {
			c.Cancel(ctx, r.ID)
		}
	}
	if gs, err := c.ListGrants(ctx, access.GrantQuery{Mine: true, Active: true}); err == nil {
		for _, g := range gs {
			c.Revoke(ctx, g.ID, "load: tidy")
		}
	}
}

// pick returns the url of the n-th replica, skipping killed ones.
func (o *options) pick(n int) string {
	for k := range len(o.servers) {
		if s := o.servers[(n+k)%len(o.servers)]; !s.dead.Load() {
			return s.url
		}
	}
	return o.servers[0].url
}

// revokes measures revoke-on-A to session-closed-on-B latency.
func (o *options) revokes() error {
	ctx := context.Background()
	user := o.requesters[0]
	a := httpapi.NewClient(o.servers[0].url, user)
	b := httpapi.NewClient(o.servers[1].url, user)
	watch, err := pgx.Connect(ctx, testdb.PostgresURL())
	if err != nil {
		return err
	}
	defer watch.Close(ctx)
	var lat []time.Duration
	for round := range o.rounds {
		r, err := a.Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "load"})
		if err != nil {
			return err
		}
		cr, err := b.Credentials(ctx, r.GrantID)
		if err != nil {
			return err
		}
		if cr.Via != "gateway" {
			return fmt.Errorf("credentials via %s, want replica B's gateway", cr.Via)
		}
		u := url.URL{Scheme: "postgres", User: url.UserPassword(cr.User, cr.Password), Host: net.JoinHostPort(cr.Host, cr.Port),
			Path: "/" + cr.Database, RawQuery: "sslmode=disable"}
		conn, err := pgx.Connect(ctx, u.String())
		if err != nil {
			return fmt.Errorf("round %d: through B's gateway: %w", round, err)
		}
		marker := fmt.Sprintf("load-%d-%d", time.Now().UnixNano(), round)
		ended := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(30) /* "+marker+" */")
			ended <- err
		}()
		for deadline := time.Now().Add(10 * time.Second); ; {
			var n int
			if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, marker).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("round %d: the query never started upstream", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t0 := time.Now()
		if _, err := a.Revoke(ctx, r.GrantID, "load"); err != nil {
			return err
		}
		select {
		case err := <-ended:
			if err == nil {
				return fmt.Errorf("round %d: the query finished instead of being cut", round)
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("round %d: B's session still runs 10 s after the revoke on A", round)
		}
		lat = append(lat, time.Since(t0))
		conn.Close(ctx)
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))].Round(10 * time.Microsecond) }
	fmt.Printf("revoke replicas=%d rounds=%d p50=%s p90=%s p99=%s max=%s\n", o.replicas, len(lat), q(0.5), q(0.9), q(0.99), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}
