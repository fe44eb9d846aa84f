package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
	pgprov "github.com/jitgate/jitgate/provision/postgres"
)

// lab is an engine on a SQLite store, on the real clock, with a PostgreSQL provisioner for the
// machine's own PostgreSQL. Its users have a random prefix, so its jit_ roles meet no one else's.
type lab struct {
	eng    *access.Engine
	prov   *pgprov.Provisioner
	admin  *pgx.Conn
	dir    jitgate.Directory
	prefix string
	users  []string
}

func newLab(t *testing.T, users int) *lab {
	t.Helper()
	testdb.Postgres(t) // skips, or fails with CI=true, when PostgreSQL is unreachable
	u, err := url.Parse(testdb.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{prefix: "t" + hex.EncodeToString(b)}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server: {provision_key_env: UNUSED}\nusers:\n")
	for i := range users {
		l.users = append(l.users, fmt.Sprintf("%su%02d", l.prefix, i))
		fmt.Fprintf(&cfg, "  - {name: %s}\n", l.users[i])
	}
	fmt.Fprintf(&cfg, `resources:
  - name: %s
    kind: postgres
    address: %s
    database: %s
    sslmode: disable
    credentials: {user: %s}
    roles: [{name: read, grants: [pg_read_all_data], provision: ephemeral}]
policies:
  - name: auto
    requesters: {users: [%s]}
    resources: [%s]
    roles: [read]
    max_duration: 1h
    approval: {steps: [{approvers: {users: [%s]}}]}
    auto_approve: 'true'
`, l.prefix, u.Host, strings.TrimPrefix(u.Path, "/"), u.User.Username(), strings.Join(l.users, ", "), l.prefix, l.users[0])
	pw, _ := u.User.Password()
	l.eng, _, l.dir = testenv.Build(t, cfg.String(), testdb.SQLite(t), nil, func(set *policy.Set) map[string]jitgate.Provisioner {
		if l.prov, err = pgprov.New(set.Resource(l.prefix), "install-"+l.prefix, pw, testKey); err != nil {
			t.Fatal(err)
		}
		return map[string]jitgate.Provisioner{l.prefix: l.prov}
	})
	t.Cleanup(l.prov.Close)
	if l.admin, err = pgx.Connect(context.Background(), testdb.PostgresURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave nothing behind, whatever the test did.
		l.admin.Exec(context.Background(), `DO $$ DECLARE r text; BEGIN
			FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'jit\_`+l.prefix+`%' LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$`)
		l.admin.Close(context.Background())
	})
	return l
}

func (l *lab) roleExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	if err := l.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// run starts the scheduler until the test ends.
func (l *lab) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The whole path through the engine: approval creates the user, the owner gets its login, a
// live connection is killed at the grant's end, the user is gone, and the receipt says so.
func TestEngineGrantToReceipt(t *testing.T) {
	l := newLab(t, 1)
	l.run(t)
	owner := testenv.User(t, l.dir, l.users[0])
	r, err := l.eng.Submit(owner, jitgate.NewRequest{Resource: l.prefix, Role: "read", Duration: 2 * time.Second, Reason: "incident 7"})
	if err != nil {
		t.Fatal(err)
	}
	var g *jitgate.Grant
	waitFor(t, "provisioning", 5*time.Second, func() bool {
		g, err = l.eng.GetGrant(owner, r.GrantID)
		return err == nil && g.Provision.State == jitgate.ProvisionStateGranted
	})
	in, err := l.eng.IssueLogin(owner, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if in.Via != access.ViaDirect || in.User != l.prov.AccountFor(g) || !in.ExpiresAt.Equal(g.EndsAt) {
		t.Fatalf("login %+v", in)
	}
	c, err := pgx.Connect(context.Background(), loginDSN(&in.Login, in.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	busy := make(chan time.Time, 1)
	go func() { c.Exec(context.Background(), `SELECT pg_sleep(30)`); busy <- time.Now() }()
	select {
	case at := <-busy:
		if late := at.Sub(g.EndsAt); late > 2*time.Second {
			t.Fatalf("the connection outlived the grant by %s", late)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not killed at the grant's end")
	}
	waitFor(t, "the receipt", 5*time.Second, func() bool {
		g, err = l.eng.GetGrant(owner, r.GrantID)
		return err == nil && !g.Provision.VerifiedAt.IsZero()
	})
	if l.roleExists(t, in.User) {
		t.Fatal("the user still exists")
	}
	evs, err := l.eng.AuditEvents(jitgate.NewOperatorContext(context.Background(), "op"), jitgate.AuditFilter{GrantID: g.ID})
	if err != nil {
		t.Fatal(err)
	}
	var receipt *jitgate.AuditEvent
	for _, e := range evs {
		if e.Action == jitgate.ActionRevocationVerified {
			receipt = e
		}
	}
	if receipt == nil || !strings.Contains(receipt.Details["receipt"], "absent from pg_roles") || receipt.Details["time_to_revoke"] == "" {
		t.Fatalf("receipt event %+v", receipt)
	}
	t.Logf("time to revoke (ended → verified gone): %s", receipt.Details["time_to_revoke"])
	if _, err := l.eng.IssueLogin(owner, g.ID); jitgate.ErrorCode(err) != jitgate.ECONFLICT {
		t.Fatalf("login after the end: %v", err)
	}
}

// The reconciler removes a planted jit_ role that no live grant explains, and keeps a live one.
func TestReconcilerRemovesOrphans(t *testing.T) {
	l := newLab(t, 1)
	ctx := context.Background()
	owner := testenv.User(t, l.dir, l.users[0])
	r, err := l.eng.Submit(owner, jitgate.NewRequest{Resource: l.prefix, Role: "read", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	g, _ := l.eng.GetGrant(owner, r.GrantID)
	live := l.prov.AccountFor(g)
	// Orphans: a grant this store never issued, and a stranger squatting on a live grant's id.
	// And a role another jitgate installation made, which must be left alone.
	for _, o := range []struct{ name, grant, install string }{
		{"jit_" + l.prefix + "ghost_999", "999", "install-" + l.prefix},
		{"jit_" + l.prefix + "mallory_" + fmt.Sprint(g.ID), fmt.Sprint(g.ID), "install-" + l.prefix},
		{"jit_" + l.prefix + "theirs_5", "5", "another-installation"},
	} {
		exec(t, l.admin, fmt.Sprintf(`CREATE ROLE %s LOGIN`, pgx.Identifier{o.name}.Sanitize()),
			fmt.Sprintf(`COMMENT ON ROLE %s IS 'jitgate-managed install=%s grant=%s resource=%s user=x'`, pgx.Identifier{o.name}.Sanitize(), o.install, o.grant, l.prefix))
	}
	n, err := l.eng.Reconcile(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Reconcile = %d, %v", n, err)
	}
	if !l.roleExists(t, live) || l.roleExists(t, "jit_"+l.prefix+"ghost_999") || l.roleExists(t, "jit_"+l.prefix+"mallory_"+fmt.Sprint(g.ID)) ||
		!l.roleExists(t, "jit_"+l.prefix+"theirs_5") {
		t.Fatal("wrong roles removed")
	}
	evs, _ := l.eng.AuditEvents(jitgate.NewOperatorContext(ctx, "op"), jitgate.AuditFilter{})
	var reasons []string
	for _, e := range evs {
		if e.Action == jitgate.ActionDriftRepaired {
			reasons = append(reasons, e.Details["account"]+": "+e.Details["reason"])
		}
	}
	slices.Sort(reasons)
	if len(reasons) != 2 || !strings.Contains(reasons[0], "does not exist in jitgate's store") || !strings.Contains(reasons[1], "belongs to "+l.users[0]) {
		t.Fatalf("drift events: %q", reasons)
	}
	if n, err := l.eng.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("second pass = %d, %v", n, err)
	}
}

// TestTimeToRevoke100 ends 100 grants at the same second and measures, for each, the time
// from its scheduled end to the verified removal of its user. It logs the median and the
// worst; JITGATE_REVOKE_GRANTS sets another count.
func TestTimeToRevoke100(t *testing.T) {
	n := 100
	if v := os.Getenv("JITGATE_REVOKE_GRANTS"); v != "" {
		fmt.Sscan(v, &n)
	}
	l := newLab(t, n)
	l.run(t)
	start := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	ids := make([]int64, n)
	for i, name := range l.users {
		r, err := l.eng.Submit(testenv.User(t, l.dir, name), jitgate.NewRequest{Resource: l.prefix, Role: "read",
			Duration: 2 * time.Second, StartAt: start, Reason: "load"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = r.GrantID
	}
	op := jitgate.NewOperatorContext(context.Background(), "op")
	var lat []time.Duration
	waitFor(t, "every revocation to be verified", 60*time.Second, func() bool {
		lat = lat[:0]
		for i, id := range ids {
			g, err := l.eng.GetGrant(testenv.User(t, l.dir, l.users[i]), id)
			if err != nil || g.Provision.VerifiedAt.IsZero() {
				return false
			}
			lat = append(lat, g.Provision.VerifiedAt.Sub(g.EndsAt))
		}
		return true
	})
	slices.Sort(lat)
	t.Logf("%d grants ending together: time from grant end to verified gone: median %s, worst %s",
		n, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	var left int
	l.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'jit\_`+l.prefix+`%'`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d users left", left)
	}
	if res, err := l.eng.VerifyAudit(op); err != nil || !res.OK {
		t.Fatalf("audit verify: %+v %v", res, err)
	}
}
