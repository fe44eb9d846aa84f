package access_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
)

// target is a fake target system: accounts keyed by name, with a verifier that can be told to
// find the access still there, and a login per grant.
type target struct {
	mu         sync.Mutex
	accounts   map[string]int64
	lingering  int // VerifyRevoked fails this many more times
	roles      map[string]bool
	concurrent int
	peak       int
	grants     int
	// revokeGate, when set, holds every Revoke until it is closed; each Revoke first sends on
	// revoking, if set.
	revokeGate chan struct{}
	revoking   chan int64
}

func (t *target) Manages(role string) bool { return t.roles[role] }
func (t *target) AccountFor(g *jitgate.Grant) string {
	return fmt.Sprintf("jit_%s_%d", g.User, g.ID)
}

func (t *target) enter() func() {
	t.mu.Lock()
	t.concurrent++
	t.peak = max(t.peak, t.concurrent)
	t.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // a remote call
	return func() { t.mu.Lock(); t.concurrent--; t.mu.Unlock() }
}

func (t *target) Grant(_ context.Context, g *jitgate.Grant) error {
	defer t.enter()()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.accounts[t.AccountFor(g)] = g.ID
	t.grants++
	return nil
}

func (t *target) Revoke(_ context.Context, g *jitgate.Grant) error {
	t.mu.Lock()
	gate, revoking := t.revokeGate, t.revoking
	t.mu.Unlock()
	if revoking != nil {
		revoking <- g.ID
	}
	if gate != nil {
		<-gate
	}
	defer t.enter()()
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accounts, t.AccountFor(g))
	return nil
}

func (t *target) VerifyRevoked(_ context.Context, g *jitgate.Grant) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lingering > 0 {
		t.lingering--
		return "", errors.New("1 session still runs as " + t.AccountFor(g))
	}
	if _, ok := t.accounts[t.AccountFor(g)]; ok {
		return "", errors.New("account still exists")
	}
	return "account " + t.AccountFor(g) + " absent", nil
}

func (t *target) Login(g *jitgate.Grant) (*jitgate.Login, error) {
	return &jitgate.Login{Kind: jitgate.KindPostgres, Host: "db", Port: "5432", User: t.AccountFor(g), Password: "derived"}, nil
}

func (t *target) ManagedAccounts(context.Context) ([]jitgate.ManagedAccount, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []jitgate.ManagedAccount
	for n, id := range t.accounts {
		out = append(out, jitgate.ManagedAccount{Name: n, GrantID: id})
	}
	return out, nil
}

func (t *target) RemoveAccount(_ context.Context, a jitgate.ManagedAccount) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.accounts, a.Name)
	return nil
}

func newTarget(t *testing.T, clk *clocktest.Clock) (*access.Engine, *target, func(string) context.Context) {
	tg := &target{accounts: map[string]int64{}, roles: map[string]bool{"read": true}}
	eng, _, dir := testenv.Build(t, testenv.Config, testdb.SQLite(t), clk, func(*policy.Set) map[string]jitgate.Provisioner {
		return map[string]jitgate.Provisioner{"app-db": tg}
	})
	return eng, tg, func(name string) context.Context { return testenv.User(t, dir, name) }
}

// A revoke whose verification still finds the access is an alert, is retried, and the receipt
// is written once verification passes.
func TestUnverifiedRevocationIsRetried(t *testing.T) {
	clk := clocktest.New(testenv.T0)
	eng, tg, as := newTarget(t, clk)
	ctx := context.Background()
	var alerts []jitgate.Event
	eng.Subscribe(func(ev jitgate.Event) {
		if ev.Kind == jitgate.EventRevocationUnverified {
			alerts = append(alerts, ev)
		}
	})
	r, err := eng.Submit(as("oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	eng.Tick(ctx)
	in, err := eng.IssueLogin(as("oscar"), r.GrantID)
	if err != nil || in.Via != access.ViaDirect || in.User != tg.AccountFor(in.Grant) || !in.ExpiresAt.Equal(in.Grant.EndsAt) {
		t.Fatalf("IssueLogin = %+v, %v", in, err)
	}
	if _, err := eng.IssueLogin(as("bob"), r.GrantID); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("someone else's login: %v", err)
	}
	tg.lingering = 1
	if _, err := eng.Revoke(as("bob"), r.GrantID, "done"); err != nil {
		t.Fatal(err)
	}
	eng.Tick(ctx)
	g, _ := eng.GetGrant(as("oscar"), r.GrantID)
	if g.Provision.State != jitgate.ProvisionStateRevoking || !strings.Contains(g.Provision.LastError, "revocation not verified: 1 session still runs") || len(alerts) != 1 {
		t.Fatalf("after a failed verification: %+v, %d alerts", g.Provision, len(alerts))
	}
	clk.Advance(3 * time.Second)
	eng.Tick(ctx)
	g, _ = eng.GetGrant(as("oscar"), r.GrantID)
	if g.Provision.State != jitgate.ProvisionStateRevoked || g.Provision.Receipt != "account "+tg.AccountFor(g)+" absent" || g.TimeToRevoke() != 3*time.Second {
		t.Fatalf("after the retry: %+v (time to revoke %s)", g.Provision, g.TimeToRevoke())
	}
	evs, _ := eng.AuditEvents(as("carol"), jitgate.AuditFilter{GrantID: g.ID})
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
		if e.Action == jitgate.ActionRevocationVerified && e.Details["time_to_revoke"] != "3s" {
			t.Errorf("receipt details %v", e.Details)
		}
	}
	got := strings.Join(actions, " ")
	if !strings.Contains(got, "grant.revoked grant.revocation_unverified grant.revocation_verified") {
		t.Fatalf("audit: %s", got)
	}
}

// Many grants ending together are revoked concurrently, not one after another.
func TestProvisioningRunsConcurrently(t *testing.T) {
	clk := clocktest.New(testenv.T0)
	eng, tg, as := newTarget(t, clk)
	ctx := context.Background()
	for _, u := range []string{"oscar", "alice", "bob"} {
		if _, err := eng.Submit(as(u), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x", BreakGlass: u != "oscar"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if tg.peak < 2 {
		t.Fatalf("peak concurrency %d", tg.peak)
	}
}

// A provisioner that hangs (a target system that does not answer) holds up no grant's end:
// Run expires grants while a revoke call is still waiting.
func TestSlowProvisioningDoesNotHoldUpExpiry(t *testing.T) {
	clk := clocktest.New(testenv.T0)
	eng, tg, as := newTarget(t, clk)
	ctx := context.Background()
	first, err := eng.Submit(as("oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := eng.Submit(as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 20 * time.Minute, Reason: "x", BreakGlass: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	tg.mu.Lock()
	tg.revokeGate, tg.revoking = gate, make(chan int64, 2)
	tg.mu.Unlock()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { eng.Run(rctx); close(done) }()
	defer func() { close(gate); cancel(); <-done }()
	state := func(id int64) jitgate.GrantState {
		g, err := eng.GetGrant(as("carol"), id)
		if err != nil {
			t.Fatal(err)
		}
		return g.State
	}
	clk.Set(testenv.T0.Add(10*time.Minute + time.Second))
	select {
	case id := <-tg.revoking:
		if id != first.GrantID {
			t.Fatalf("revoking grant %d, want %d", id, first.GrantID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first grant's revoke never started")
	}
	clk.Set(testenv.T0.Add(20*time.Minute + time.Second))
	for deadline := time.Now().Add(10 * time.Second); state(second.GrantID) != jitgate.GrantExpired; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second grant is still active while the first one's revoke hangs")
		}
	}
	if s := state(first.GrantID); s != jitgate.GrantExpired {
		t.Fatalf("first grant %s", s)
	}
}

// An extension re-grants (a refresh, so the target learns the new end) while the grant stays
// granted and its login keeps working.
func TestExtensionRefreshesProvisioning(t *testing.T) {
	clk := clocktest.New(testenv.T0)
	eng, tg, as := newTarget(t, clk)
	ctx := context.Background()
	r, err := eng.Submit(as("oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	eng.Tick(ctx)
	ext, err := eng.Extend(as("oscar"), r.GrantID, 10*time.Minute, "more")
	if err != nil {
		t.Fatal(err)
	}
	if ext.State == jitgate.RequestPending {
		if _, err := eng.Review(as("bob"), ext.ID, jitgate.Approve, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	g, _ := eng.GetGrant(as("oscar"), r.GrantID)
	if g.Provision.State != jitgate.ProvisionStateGranted || g.Provision.NextAt.IsZero() {
		t.Fatalf("after the extension: %+v", g.Provision)
	}
	if _, err := eng.IssueLogin(as("oscar"), g.ID); err != nil {
		t.Fatalf("login while the refresh is due: %v", err)
	}
	eng.Tick(ctx)
	g, _ = eng.GetGrant(as("oscar"), r.GrantID)
	if tg.grants != 2 || g.Provision.State != jitgate.ProvisionStateGranted || !g.Provision.NextAt.IsZero() {
		t.Fatalf("after the refresh: %d grant calls, %+v", tg.grants, g.Provision)
	}
}

// A server instance that died mid-provisioning (its lease a minute long) and with a live
// gateway session leaves both behind; a live instance takes them over at once: the attempt is
// due now and runs, the session is ended as "server stopped" with its recorded statements
// counted, and the takeover is audited.
func TestDeadInstanceIsTakenOver(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		ctx := context.Background()
		g := must(env.Engine.Submit(env.As(t, "oscar"), read(10*time.Minute)))(t)
		gr := must(env.Engine.GetGrant(env.As(t, "carol"), g.GrantID))(t)
		// What a process killed mid-revoke leaves: its instance record, a claim with a long
		// lease, a live session with two statements recorded.
		dead := &jitgate.Instance{ID: "deadbeef00000001", Host: "old-host", PID: 4242, StartedAt: testenv.T0, HeartbeatAt: time.Now().UTC()}
		var sess *jitgate.Session
		if err := env.Store.Tx(ctx, func(tx jitgate.Tx) error {
			if err := tx.PutInstance(dead); err != nil {
				return err
			}
			gr.Provision.State = jitgate.ProvisionStateGranting
			gr.Provision.NextAt = env.Clock.Now().Add(time.Minute)
			gr.Provision.ClaimedBy = dead.ID
			if err := tx.UpdateGrant(gr); err != nil {
				return err
			}
			sess = &jitgate.Session{GrantID: gr.ID, User: "oscar", Resource: "app-db", Role: "read", StartedAt: env.Clock.Now(), Instance: dead.ID}
			if err := tx.InsertSession(sess); err != nil {
				return err
			}
			return tx.AppendAudit(&jitgate.AuditEvent{Time: env.Clock.Now(), Actor: "oscar", Action: jitgate.ActionSessionStatements,
				GrantID: gr.ID, SessionID: sess.ID, Statements: []jitgate.Statement{{N: 1, SQL: "SELECT 1"}, {N: 2, SQL: "SELECT 2"}}})
		}); err != nil {
			t.Fatal(err)
		}
		if due := tickDue(t, env); len(due.Provision) != 0 {
			t.Fatalf("the claimed attempt is due before the takeover: %+v", due)
		}
		if err := env.Engine.RecoverDeadInstances(ctx); err != nil {
			t.Fatal(err)
		}
		if due := tickDue(t, env); len(due.Provision) != 1 {
			t.Fatalf("after the takeover the attempt is not due now: %+v", due)
		}
		tick(t, env)
		if got := grant(t, env, gr.ID); got.Provision.State != jitgate.ProvisionStateGranted || got.Provision.ClaimedBy != "" {
			t.Fatalf("provisioning after the takeover: %+v", got.Provision)
		}
		live := must(env.Engine.ListSessions(env.As(t, "carol"), jitgate.SessionFilter{Live: true}))(t)
		if len(live) != 0 {
			t.Fatalf("the dead instance's session is still live: %+v", live)
		}
		all := must(env.Engine.ListSessions(env.As(t, "carol"), jitgate.SessionFilter{GrantID: gr.ID}))(t)
		if len(all) != 1 || all[0].EndReason != access.SessionEndServerStopped || all[0].Statements != 2 {
			t.Fatalf("ended session: %+v", all)
		}
		actions := verifyAudit(t, env)
		if count(actions, access.ActionInstanceRecovered) != 1 || count(actions, jitgate.ActionSessionEnded) != 1 {
			t.Fatalf("audit: %v", actions)
		}
		// A second look finds nothing more to do.
		if err := env.Engine.RecoverDeadInstances(ctx); err != nil {
			t.Fatal(err)
		}
		if actions := verifyAudit(t, env); count(actions, access.ActionInstanceRecovered) != 1 {
			t.Fatalf("recovered twice: %v", actions)
		}
	})
}

func tickDue(t *testing.T, env *testenv.Env) *jitgate.DueWork {
	t.Helper()
	var due *jitgate.DueWork
	if err := env.Store.View(context.Background(), func(tx jitgate.Tx) (err error) {
		due, err = tx.Due(env.Clock.Now(), 100)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return due
}
