package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/policy"
	pgprov "github.com/jitgate/jitgate/provision/postgres"
	"github.com/jitgate/jitgate/store"
)

// The upstream cluster's logins and the provisioning key of an expiry run.
const (
	loadUpstreamPassword = "jitgate-load-upstream"
	loadProvisionKey     = "jitgate-load-provision-key-0123456789abcdef"
	expiryUsers          = 100
)

// expiry measures grants ending together on the server processes: o.grants grants of which
// o.sessions have a live gateway session (half of them running a query, half idle, spread over
// the replicas' gateways) and, beside them, o.ephemeral grants of a `provision: ephemeral` role,
// each with its jit_ user in a throwaway PostgreSQL cluster (whose max_connections is raised
// for the sessions). Every grant ends at the same instant T: they are created, on the store
// directly, with durations that end at T, before the replicas start; the replicas then
// provision the users, the sessions are opened, and from T on the run records when every grant
// is expired, every client saw its session end, every session's end is recorded, every
// database backend of the sessions is gone, and every jit_ user is dropped and its revocation
// verified. With -kill, the last replica is SIGKILLed
// that long after T, and the checks of the chaos run follow.
func (o *options) expiry() error {
	ctx := context.Background()
	if o.kill > 0 && (o.store != "postgres" || o.replicas < 2) {
		return errors.New("-mode expiry -kill needs -store postgres and -replicas 2 or more")
	}
	if o.sessions > o.grants {
		return fmt.Errorf("-sessions %d is more than -grants %d", o.sessions, o.grants)
	}
	cl, err := testdb.StartCluster(fmt.Sprintf("max_connections=%d", o.sessions+o.ephemeral/10+100))
	if err != nil {
		return fmt.Errorf("the upstream cluster: %w", err)
	}
	o.cleanup = append(o.cleanup, func() { cl.Stop() })
	up, err := pgx.Connect(ctx, cl.SuperDSN)
	if err != nil {
		return err
	}
	defer up.Close(ctx)
	var create string
	if err := up.QueryRow(ctx, "SELECT format('CREATE ROLE jg_load LOGIN PASSWORD %L', $1::text)", loadUpstreamPassword).Scan(&create); err != nil {
		return err
	}
	if _, err := up.Exec(ctx, create+"; GRANT pg_read_all_data TO jg_load"); err != nil {
		return err
	}
	os.Setenv("JG_LOAD_PASSWORD", loadUpstreamPassword)
	os.Setenv("JG_LOAD_ADMIN_PASSWORD", testdb.ClusterPassword)
	os.Setenv("JITGATE_PROVISION_KEY", loadProvisionKey)
	roles := (o.grants + expiryUsers - 1) / expiryUsers
	ephRoles := (o.ephemeral + expiryUsers - 1) / expiryUsers
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  store: %q\n  admins: [admin]\n  provision_key_env: JITGATE_PROVISION_KEY\n", o.dsn)
	b.WriteString("gateway:\n  postgres:\n    addr: GATEWAY_ADDR\n    insecure_plaintext: true\n")
	b.WriteString("users:\n  - {name: admin, groups: [admins]}\n")
	for u := range expiryUsers {
		fmt.Fprintf(&b, "  - {name: u%03d, groups: [engineering]}\n", u)
	}
	b.WriteString("resources:\n")
	var resources []string
	if roles > 0 {
		resources = append(resources, "app-db")
		fmt.Fprintf(&b, "  - name: app-db\n    kind: postgres\n    address: %s\n    database: postgres\n    sslmode: disable\n    roles:\n", cl.Addr)
	}
	for r := range roles {
		fmt.Fprintf(&b, "      - {name: r%03d, grants: [pg_read_all_data], upstream: {user: jg_load, password_env: JG_LOAD_PASSWORD}}\n", r)
	}
	if ephRoles > 0 {
		resources = append(resources, "eph-db")
		fmt.Fprintf(&b, "  - name: eph-db\n    kind: postgres\n    address: %s\n    database: postgres\n    sslmode: disable\n", cl.Addr)
		b.WriteString("    credentials: {user: postgres, password_env: JG_LOAD_ADMIN_PASSWORD}\n    roles:\n")
		for r := range ephRoles {
			fmt.Fprintf(&b, "      - {name: e%03d, grants: [pg_read_all_data], provision: ephemeral}\n", r)
		}
	}
	if len(resources) == 0 {
		return errors.New("nothing to measure: -grants and -ephemeral are 0")
	}
	fmt.Fprintf(&b, `policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [%s]
    roles: ["*"]`, strings.Join(resources, ", "))
	b.WriteString(`
    max_duration: 4h
    approval:
      steps: [{approvers: {groups: [admins]}}]
    auto_approve: 'true'
`)
	o.cfg = o.dir + "/jitgate.yaml"
	if err := os.WriteFile(o.cfg, []byte(b.String()), 0o600); err != nil {
		return err
	}
	cfg, err := config.Parse("expiry.yaml", []byte(b.String()))
	if err != nil {
		return err
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return err
	}

	// The grants, created on the store directly (no replica runs yet), all ending at T.
	setup := o.setup
	if setup == 0 {
		// About twice what this machine took (2 ms a grant created, 12 ms a user created and
		// provisioned, 5 ms a session opened), plus 10 s.
		setup = 10*time.Second + time.Duration(o.grants)*4*time.Millisecond + time.Duration(o.ephemeral)*25*time.Millisecond +
			time.Duration(o.sessions)*10*time.Millisecond
	}
	st, err := store.Open(ctx, o.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	// The engine that creates the grants knows the provisioner (it marks the ephemeral grants'
	// users as due); it never runs it: the replicas do.
	provs := map[string]jitgate.Provisioner{}
	if res := set.Resource("eph-db"); res != nil {
		var install string
		if err := st.View(ctx, func(tx jitgate.Tx) (err error) { install, err = tx.InstallationID(); return err }); err != nil {
			return err
		}
		p, err := pgprov.New(res, install, testdb.ClusterPassword, []byte(loadProvisionKey))
		if err != nil {
			return err
		}
		defer p.Close()
		provs["eph-db"] = p
	}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory(), Provisioners: provs})
	dir := cfg.Directory()
	created := time.Now()
	end := created.Add(setup).Truncate(time.Second)
	grants := make([]*jitgate.Grant, 0, o.grants)
	submit := func(n int, resource, role string) (*jitgate.Grant, error) {
		u, _ := dir.LookupUser(ctx, fmt.Sprintf("u%03d", n%expiryUsers))
		r, err := eng.Submit(jitgate.NewContext(ctx, u), jitgate.NewRequest{Resource: resource, Role: role,
			Duration: time.Until(end), Reason: "load"})
		if err != nil {
			return nil, fmt.Errorf("grant %d: %w", n, err)
		}
		return &jitgate.Grant{ID: r.GrantID, User: u.Name}, nil
	}
	for n := range o.grants {
		g, err := submit(n, "app-db", fmt.Sprintf("r%03d", n/expiryUsers))
		if err != nil {
			return err
		}
		grants = append(grants, g)
	}
	for n := range o.ephemeral {
		if _, err := submit(n, "eph-db", fmt.Sprintf("e%03d", n/expiryUsers)); err != nil {
			return err
		}
	}
	fmt.Printf("expiry store=%s replicas=%d grants=%d sessions=%d ephemeral=%d created_in=%s ending_in=%s\n", o.store, o.replicas,
		o.grants, o.sessions, o.ephemeral, time.Since(created).Round(time.Millisecond), time.Until(end).Round(time.Millisecond))

	// The replicas provision the jit_ users.
	if err := o.startServers(); err != nil {
		return err
	}
	jitUsers := func() (int, error) {
		var n int
		err := up.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'jit\_%'`).Scan(&n)
		return n, err
	}
	for {
		n, err := jitUsers()
		if err != nil {
			return err
		}
		if n == o.ephemeral {
			break
		}
		if time.Until(end) < 3*time.Second {
			return fmt.Errorf("only %d of %d jit_ users provisioned 3 s before the end: raise -setup (was %s)", n, o.ephemeral, setup)
		}
		time.Sleep(100 * time.Millisecond)
	}
	provisioned := time.Since(created)

	// The sessions: the even ones run pg_sleep, the odd ones wait idle.
	type ended struct {
		after time.Duration
		code  string
	}
	var (
		mu      sync.Mutex
		ends    []ended
		conns   []*pgx.Conn
		openWG  sync.WaitGroup
		openMu  sync.Mutex
		openErr error
		next    atomic.Int64
	)
	for range 8 {
		openWG.Add(1)
		go func() {
			defer openWG.Done()
			for {
				n := int(next.Add(1) - 1)
				if n >= o.sessions {
					return
				}
				g := grants[n]
				u, _ := dir.LookupUser(ctx, g.User)
				in, err := eng.IssueLogin(jitgate.NewContext(ctx, u), g.ID, jitgate.KindPostgres)
				if err == nil {
					dsn := url.URL{Scheme: "postgres", User: url.UserPassword(g.User, in.Password),
						Host: o.gatewayAddrs[n%len(o.gatewayAddrs)], Path: "/app-db", RawQuery: "sslmode=disable"}
					var c *pgx.Conn
					if c, err = pgx.Connect(ctx, dsn.String()); err == nil {
						openMu.Lock()
						conns = append(conns, c)
						openMu.Unlock()
						go func() {
							var err error
							if n%2 == 0 {
								_, err = c.Exec(ctx, "SELECT pg_sleep(3600)")
							} else {
								err = c.PgConn().WaitForNotification(ctx)
							}
							code := "none"
							var pe *pgconn.PgError
							if errors.As(err, &pe) {
								code = pe.Code
							} else if err != nil {
								code = "closed"
							}
							mu.Lock()
							ends = append(ends, ended{time.Since(end), code})
							mu.Unlock()
						}()
						continue
					}
				}
				openMu.Lock()
				openErr = errors.Join(openErr, fmt.Errorf("session %d: %w", n, err))
				openMu.Unlock()
				return
			}
		}()
	}
	openWG.Wait()
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	if openErr != nil {
		return openErr
	}
	for {
		var busy int
		if err := up.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = 'jg_load' AND query = 'SELECT pg_sleep(3600)' AND state = 'active'`).Scan(&busy); err != nil {
			return err
		}
		if busy == (o.sessions+1)/2 {
			break
		}
		if time.Until(end) < 2*time.Second {
			return fmt.Errorf("only %d of %d sessions' queries running 2 s before the end: raise -setup (was %s)", busy, (o.sessions+1)/2, setup)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("expiry ready_in=%s (users provisioned in %s) slack_before_end=%s\n", time.Since(created).Round(time.Millisecond),
		provisioned.Round(time.Millisecond), time.Until(end).Round(time.Millisecond))
	if o.kill > 0 {
		victim := o.servers[len(o.servers)-1]
		time.AfterFunc(time.Until(end)+o.kill, func() {
			victim.dead.Store(true)
			victim.cmd.Process.Kill()
			fmt.Fprintf(os.Stderr, "load: SIGKILLed %s %s after the end\n", victim.url, o.kill)
		})
	}

	// From the end on: poll until everything is done.
	time.Sleep(time.Until(end))
	admin := jitgate.NewOperatorContext(ctx, "load")
	var allExpired, allClosed, allRecorded, allDropped, allVerified, upstreamGone time.Duration
	var verified int
	for deadline := end.Add(5 * time.Minute); allExpired == 0 || allClosed == 0 || allRecorded == 0 || allDropped == 0 || allVerified == 0 || upstreamGone == 0; {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done 5 minutes after the end: expired %s, closed %s, recorded %s, dropped %s, verified %s (%d), upstream gone %s",
				allExpired, allClosed, allRecorded, allDropped, allVerified, verified, upstreamGone)
		}
		if upstreamGone == 0 {
			// The sessions' connections to the database: every backend gone (its process
			// exits a moment after the gateway closes the connection).
			var n int
			if err := up.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = 'jg_load'`).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				upstreamGone = time.Since(end)
			}
		}
		if allExpired == 0 {
			_, gs, err := eng.Counts(admin)
			if err != nil {
				return err
			}
			if gs[jitgate.GrantActive] == 0 {
				allExpired = time.Since(end)
			}
		}
		if allClosed == 0 {
			mu.Lock()
			if len(ends) == o.sessions {
				allClosed = time.Nanosecond // the last client's, below
				for _, e := range ends {
					allClosed = max(allClosed, e.after)
				}
			}
			mu.Unlock()
		}
		if allRecorded == 0 {
			live, err := eng.ListSessions(admin, jitgate.SessionFilter{Live: true, Limit: 1})
			if err != nil {
				return err
			}
			if len(live) == 0 {
				allRecorded = time.Since(end)
			}
		}
		if allDropped == 0 {
			n, err := jitUsers()
			if err != nil {
				return err
			}
			if n == 0 {
				allDropped = time.Since(end)
			}
		}
		if allVerified == 0 {
			if verified, err = o.countVerified(ctx); err != nil {
				return err
			}
			if verified == o.ephemeral {
				allVerified = time.Since(end)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	lat := make([]time.Duration, len(ends))
	codes := map[string]int{}
	for i, e := range ends {
		lat[i] = e.after
		codes[e.code]++
	}
	mu.Unlock()
	slices.Sort(lat)
	q := func(f float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(f*float64(len(lat)-1))].Round(time.Millisecond)
	}
	var codeList []string
	for c, n := range codes {
		codeList = append(codeList, fmt.Sprintf("%s:%d", c, n))
	}
	slices.Sort(codeList)
	users := "users_dropped=- users_verified=-" // no ephemeral users: nothing to wait for
	if o.ephemeral > 0 {
		users = fmt.Sprintf("users_dropped=%s users_verified=%s", allDropped.Round(time.Millisecond), allVerified.Round(time.Millisecond))
	}
	fmt.Printf("expiry store=%s replicas=%d grants=%d sessions=%d ephemeral=%d kill=%s all_expired=%s sessions_closed=%s (p50 %s, p99 %s; %s) sessions_recorded=%s %s upstream_backends_gone=%s\n",
		o.store, o.replicas, o.grants, o.sessions, o.ephemeral, o.kill, allExpired.Round(time.Millisecond), allClosed.Round(time.Millisecond),
		q(0.5), q(0.99), strings.Join(codeList, ","), allRecorded.Round(time.Millisecond), users, upstreamGone.Round(time.Millisecond))
	out, err := exec.Command(o.bin, "audit", "--verify", "--config", o.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Audit chain OK") {
		return fmt.Errorf("audit verify: %v: %s", err, out)
	}
	twice, err := o.provisionedTwice(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("expiry audit=ok provisioning_done_twice=%d\n", twice)
	if twice > 0 {
		return fmt.Errorf("%d grants provisioned or deprovisioned twice", twice)
	}
	return nil
}

// sqlStore opens the run's store for the checks' queries.
func (o *options) sqlStore() (*sql.DB, error) {
	if path, ok := strings.CutPrefix(o.dsn, "sqlite:"); ok {
		return sql.Open("sqlite", path)
	}
	return sql.Open("pgx", o.dsn)
}

// countVerified counts the grants whose jit_ user was dropped and found gone.
func (o *options) countVerified(ctx context.Context) (int, error) {
	db, err := o.sqlStore()
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM grants WHERE prov_state = 'revoked' AND prov_verified_at IS NOT NULL`).Scan(&n)
	return n, err
}

// provisionedTwice counts the grants with more than one provisioning or verified revocation
// in the audit log.
func (o *options) provisionedTwice(ctx context.Context) (int, error) {
	db, err := o.sqlStore()
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT grant_id, action FROM audit_events
		WHERE action IN ('grant.provisioned', 'grant.revocation_verified', 'grant.deprovisioned')
		GROUP BY grant_id, action HAVING count(*) > 1) twice`).Scan(&n)
	return n, err
}
