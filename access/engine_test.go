package access_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

func read(d time.Duration) jitgate.NewRequest {
	return jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: d, Reason: "INC-42: debug slow checkout"}
}

// must(f())(t) returns f's value, failing t on f's error.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := jitgate.ErrorCode(err); got != code {
		t.Fatalf("error = %v (%s), want %s", err, got, code)
	}
}

func tick(t *testing.T, env *testenv.Env) time.Time {
	t.Helper()
	return must(env.Engine.Tick(context.Background()))(t)
}

func grant(t *testing.T, env *testenv.Env, id int64) *jitgate.Grant {
	t.Helper()
	return must(env.Engine.GetGrant(env.As(t, "carol"), id))(t)
}

func request(t *testing.T, env *testenv.Env, id int64) *jitgate.Request {
	t.Helper()
	return must(env.Engine.GetRequest(env.As(t, "carol"), id))(t)
}

// verifyAudit checks the chain is intact and returns the actions in order.
func verifyAudit(t *testing.T, env *testenv.Env) []string {
	t.Helper()
	res := must(audit.Verify(context.Background(), env.Store))(t)
	if !res.OK {
		t.Fatalf("audit chain broken: %+v", res)
	}
	var evs []*jitgate.AuditEvent
	if err := env.Store.View(context.Background(), func(tx jitgate.Tx) error {
		var err error
		evs, err = tx.ListAudit(jitgate.AuditFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Action
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func TestApproveActivatesAndDurationCountsFromApproval(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
		if r.State != jitgate.RequestPending || !r.ExpiresAt.Equal(testenv.T0.Add(time.Hour)) {
			t.Fatalf("submitted: %+v", r)
		}
		if ev := env.EventsOf(jitgate.EventRequestPending); len(ev) != 1 || len(ev[0].Notify) != 3 {
			t.Fatalf("approvers notified: %+v", ev)
		}
		env.Clock.Advance(30 * time.Minute)
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, "ok"))(t)
		if r.State != jitgate.RequestApproved || r.GrantID == 0 || r.DecidedBy != "bob" {
			t.Fatalf("approved: %+v", r)
		}
		g := grant(t, env, r.GrantID)
		wantEnd := testenv.T0.Add(30*time.Minute + time.Hour) // from approval, not from the request
		if g.State != jitgate.GrantActive || !g.ActivatedAt.Equal(testenv.T0.Add(30*time.Minute)) || !g.EndsAt.Equal(wantEnd) {
			t.Fatalf("grant: %+v", g)
		}
		if g.Provision.State != jitgate.ProvisionStateGranting {
			t.Fatalf("provisioning not queued: %+v", g.Provision)
		}
		next := tick(t, env)
		if grants, _ := env.Prov.Calls(); len(grants) != 1 || grants[0] != g.ID {
			t.Fatalf("provisioner grants: %v", grants)
		}
		if !next.Equal(wantEnd) {
			t.Fatalf("scheduler's next wake = %v, want the grant's end %v", next, wantEnd)
		}
		env.Clock.Set(wantEnd.Add(-time.Second))
		tick(t, env)
		if g := grant(t, env, g.ID); g.State != jitgate.GrantActive {
			t.Fatalf("ended early: %+v", g)
		}
		env.Clock.Set(wantEnd)
		tick(t, env)
		g = grant(t, env, g.ID)
		if g.State != jitgate.GrantExpired || !g.EndedAt.Equal(wantEnd) || g.Provision.State != jitgate.ProvisionStateRevoked {
			t.Fatalf("after end: %+v", g)
		}
		if _, revokes := env.Prov.Calls(); len(revokes) != 1 {
			t.Fatalf("provisioner revokes: %v", revokes)
		}
		if ev := env.EventsOf(jitgate.EventGrantEnded); len(ev) != 1 || ev[0].Grant.EndReason != "expired" {
			t.Fatalf("ended events: %+v", ev)
		}
		acts := verifyAudit(t, env)
		for _, a := range []string{jitgate.ActionRequestCreated, jitgate.ActionRequestReviewed, jitgate.ActionGrantActivated,
			jitgate.ActionRequestApproved, jitgate.ActionGrantProvisioned, jitgate.ActionGrantExpired, jitgate.ActionGrantDeprovisioned} {
			if count(acts, a) != 1 {
				t.Errorf("audit has %d %s events: %v", count(acts, a), a, acts)
			}
		}
	})
}

func TestPendingTTL(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	env.Clock.Advance(59 * time.Minute)
	tick(t, env)
	if got := request(t, env, r.ID); got.State != jitgate.RequestPending {
		t.Fatalf("timed out early: %s", got.State)
	}
	env.Clock.Advance(time.Minute)
	tick(t, env)
	got := request(t, env, r.ID)
	if got.State != jitgate.RequestTimedOut || got.DecidedBy != access.SystemActor {
		t.Fatalf("after TTL: %+v", got)
	}
	_, err := env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.ECONFLICT)
}

// A reviewer who arrives after the TTL but before the scheduler has run is refused, and the
// request is timed out there and then.
func TestReviewAfterTTLBeforeScheduler(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	env.Clock.Advance(2 * time.Hour)
	_, err := env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.ECONFLICT)
	if got := request(t, env, r.ID); got.State != jitgate.RequestTimedOut {
		t.Fatalf("state = %s", got.State)
	}
}

func TestScheduledStart(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		nr := read(time.Hour)
		nr.StartAt = testenv.T0.Add(2 * time.Hour)
		r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
		r = must(env.Engine.Review(env.As(t, "dave"), r.ID, jitgate.Approve, ""))(t)
		g := grant(t, env, r.GrantID)
		if g.State != jitgate.GrantScheduled || !g.StartsAt.Equal(nr.StartAt) || !g.EndsAt.Equal(nr.StartAt.Add(time.Hour)) {
			t.Fatalf("scheduled grant: %+v", g)
		}
		if next := tick(t, env); !next.Equal(nr.StartAt) {
			t.Fatalf("next wake = %v, want the start %v", next, nr.StartAt)
		}
		if grants, _ := env.Prov.Calls(); len(grants) != 0 {
			t.Fatal("provisioned before the start")
		}
		env.Clock.Set(nr.StartAt)
		tick(t, env)
		g = grant(t, env, g.ID)
		if g.State != jitgate.GrantActive || !g.ActivatedAt.Equal(nr.StartAt) || g.Provision.State != jitgate.ProvisionStateGranted {
			t.Fatalf("at start: %+v", g)
		}
		if ev := env.EventsOf(jitgate.EventGrantStarted); len(ev) != 1 {
			t.Fatalf("started events: %d", len(ev))
		}
	})
}

// A request approved after its requested start begins at approval and still gets its full
// duration.
func TestLateApprovalOfScheduledRequest(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	nr := read(time.Hour)
	nr.StartAt = testenv.T0.Add(10 * time.Minute)
	r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
	env.Clock.Advance(40 * time.Minute)
	r = must(env.Engine.Review(env.As(t, "dave"), r.ID, jitgate.Approve, ""))(t)
	g := grant(t, env, r.GrantID)
	if g.State != jitgate.GrantActive || !g.EndsAt.Equal(testenv.T0.Add(100*time.Minute)) {
		t.Fatalf("grant: %+v", g)
	}
}

func TestExtension(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		alice := env.As(t, "alice")
		r := must(env.Engine.Submit(alice, read(time.Hour)))(t)
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
		gid := r.GrantID
		env.Clock.Advance(50 * time.Minute)

		// Beyond the cap: 1h + 3h30m > 4h.
		_, err := env.Engine.Extend(alice, gid, 210*time.Minute, "more")
		wantCode(t, err, jitgate.EINVALID)
		// Only the owner extends.
		_, err = env.Engine.Extend(env.As(t, "bob"), gid, time.Hour, "more")
		wantCode(t, err, jitgate.EFORBIDDEN)
		_, err = env.Engine.Extend(env.As(t, "frank"), gid, time.Hour, "more")
		wantCode(t, err, jitgate.ENOTFOUND)

		ext := must(env.Engine.Extend(alice, gid, 2*time.Hour, "still debugging"))(t)
		if ext.State != jitgate.RequestPending || ext.ExtendsGrant != gid {
			t.Fatalf("extension request: %+v", ext)
		}
		// A pending extension cannot outlive the grant.
		if !ext.ExpiresAt.Equal(testenv.T0.Add(time.Hour)) {
			t.Fatalf("extension expires at %v", ext.ExpiresAt)
		}
		_, err = env.Engine.Extend(alice, gid, time.Hour, "again")
		wantCode(t, err, jitgate.ECONFLICT)
		ext = must(env.Engine.Review(env.As(t, "dave"), ext.ID, jitgate.Approve, ""))(t)
		if ext.State != jitgate.RequestApproved || ext.GrantID != gid {
			t.Fatalf("extension approved: %+v", ext)
		}
		g := grant(t, env, gid)
		if !g.EndsAt.Equal(testenv.T0.Add(3*time.Hour)) || g.Extensions != 1 {
			t.Fatalf("extended grant: %+v", g)
		}
		if ev := env.EventsOf(jitgate.EventGrantExtended); len(ev) != 1 || !ev[0].Grant.EndsAt.Equal(g.EndsAt) {
			t.Fatalf("extended events: %+v", ev)
		}
		// Exactly at the cap is fine: 3h + 1h = 4h.
		ext = must(env.Engine.Extend(alice, gid, time.Hour, "last one"))(t)
		// A pending extension is cancelled when its grant ends.
		must(env.Engine.Revoke(alice, gid, "done early"))(t)
		if got := request(t, env, ext.ID); got.State != jitgate.RequestCancelled {
			t.Fatalf("pending extension after revoke: %s", got.State)
		}
		verifyAudit(t, env)
	})
}

func TestRevoke(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
		tick(t, env)
		// A user unrelated to the grant neither sees nor revokes it.
		_, err := env.Engine.Revoke(env.As(t, "frank"), r.GrantID, "")
		wantCode(t, err, jitgate.ENOTFOUND)
		env.Clock.Advance(10 * time.Minute)
		g := must(env.Engine.Revoke(env.As(t, "dave"), r.GrantID, "INC-42 closed"))(t)
		if g.State != jitgate.GrantRevoked || g.EndedBy != "dave" || g.EndReason != "INC-42 closed" ||
			!g.EndedAt.Equal(testenv.T0.Add(10*time.Minute)) {
			t.Fatalf("revoked: %+v", g)
		}
		if ev := env.EventsOf(jitgate.EventGrantEnded); len(ev) != 1 || ev[0].Grant.ID != g.ID {
			t.Fatalf("ended events: %+v", ev)
		}
		tick(t, env)
		if _, revokes := env.Prov.Calls(); len(revokes) != 1 {
			t.Fatalf("revokes: %v", revokes)
		}
		_, err = env.Engine.Revoke(env.As(t, "alice"), r.GrantID, "")
		wantCode(t, err, jitgate.ECONFLICT)
		// The old grant is over, so a new request for the same role is allowed.
		must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	})
}

// Closing the engine, letting the grant's end pass and starting a new engine on the same
// store revokes the grant at once.
func TestRestartCatchUp(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
		tick(t, env)
		env.Store.Close()

		env.Clock.Advance(3 * time.Hour)
		env2 := testenv.Open(t, b, env.Clock, env.Prov)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- env2.Engine.Run(ctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for {
			g := grant(t, env2, r.GrantID)
			if g.State == jitgate.GrantExpired && g.Provision.State == jitgate.ProvisionStateRevoked {
				if !g.EndedAt.Equal(testenv.T0.Add(3 * time.Hour)) {
					t.Errorf("ended at %v", g.EndedAt)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not revoked after restart: %+v", g)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, revokes := env.Prov.Calls(); len(revokes) != 1 {
			t.Fatalf("revokes: %v", revokes)
		}
	})
}

// Run sleeps until the next due time on the injected clock and wakes when it is moved.
func TestRunWakesAtDueTime(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
	ended := make(chan struct{}, 1)
	env.Engine.Subscribe(func(ev jitgate.Event) {
		if ev.Kind == jitgate.EventGrantEnded {
			ended <- struct{}{}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go env.Engine.Run(ctx)
	// Wait until the scheduler sleeps, then move time to the grant's end.
	for deadline := time.Now().Add(5 * time.Second); env.Clock.Waiters() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("scheduler never slept")
		}
		time.Sleep(time.Millisecond)
	}
	env.Clock.Advance(time.Hour)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("grant did not end when the clock reached its end")
	}
}

func TestSelfApprovalRefused(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "bob"), read(time.Hour)))(t)
	_, err := env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EFORBIDDEN)
	if ev := env.EventsOf(jitgate.EventRequestPending); len(ev) != 1 || len(ev[0].Notify) != 2 {
		t.Fatalf("bob must not be asked to approve his own request: %+v", ev[0].Notify)
	}
	r = must(env.Engine.Review(env.As(t, "erin"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestApproved {
		t.Fatalf("state %s", r.State)
	}
}

func TestReviewRules(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	// frank is in security, not sre: not an approver of this policy.
	_, err := env.Engine.Review(env.As(t, "frank"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EFORBIDDEN)
	_, err = env.Engine.GetRequest(env.As(t, "frank"), r.ID)
	wantCode(t, err, jitgate.ENOTFOUND)
	_, err = env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Deny, "  ")
	wantCode(t, err, jitgate.EINVALID)
	_, err = env.Engine.Review(env.As(t, "bob"), r.ID, "maybe", "")
	wantCode(t, err, jitgate.EINVALID)
	_, err = env.Engine.Review(context.Background(), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EUNAUTHORIZED)

	// One eligible deny denies.
	r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Deny, "use the replica"))(t)
	if r.State != jitgate.RequestDenied || r.DecidedBy != "bob" || r.DecisionNote != "use the replica" {
		t.Fatalf("denied: %+v", r)
	}
	_, err = env.Engine.Review(env.As(t, "dave"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.ECONFLICT)
	if ev := env.EventsOf(jitgate.EventRequestDecided); len(ev) != 1 || ev[0].Notify[0] != "alice" {
		t.Fatalf("requester not told: %+v", ev)
	}
}

func TestSubmitRules(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	alice := env.As(t, "alice")
	cases := []struct {
		name string
		ctx  context.Context
		nr   jitgate.NewRequest
		code string
	}{
		{"no policy for the role", env.As(t, "frank"), read(time.Hour), jitgate.EFORBIDDEN},
		{"unknown resource", alice, jitgate.NewRequest{Resource: "nope", Role: "read", Duration: time.Hour, Reason: "x"}, jitgate.ENOTFOUND},
		{"unknown role", alice, jitgate.NewRequest{Resource: "app-db", Role: "drop", Duration: time.Hour, Reason: "x"}, jitgate.ENOTFOUND},
		{"over max duration", alice, read(5 * time.Hour), jitgate.EINVALID},
		{"zero duration", alice, read(0), jitgate.EINVALID},
		{"reason required", alice, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour}, jitgate.EINVALID},
		{"start in the past", alice, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x", StartAt: testenv.T0.Add(-time.Hour)}, jitgate.EINVALID},
		{"break-glass not allowed", alice, jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "x", BreakGlass: true}, jitgate.EFORBIDDEN},
		{"break-glass over its cap", alice, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 2 * time.Hour, Reason: "x", BreakGlass: true}, jitgate.EINVALID},
		{"not signed in", context.Background(), read(time.Hour), jitgate.EUNAUTHORIZED},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := env.Engine.Submit(c.ctx, c.nr)
			wantCode(t, err, c.code)
		})
	}
	must(env.Engine.Submit(alice, read(time.Hour)))(t)
	_, err := env.Engine.Submit(alice, read(time.Hour))
	wantCode(t, err, jitgate.ECONFLICT) // one pending request per role
}

func TestAutoApprove(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "oscar"), read(30*time.Minute)))(t)
	if r.State != jitgate.RequestApproved || r.DecidedBy != access.SystemActor || r.GrantID == 0 {
		t.Fatalf("auto-approval: %+v", r)
	}
	// Longer than the condition allows: waits for a person.
	must(env.Engine.Revoke(env.As(t, "oscar"), r.GrantID, ""))(t)
	r = must(env.Engine.Submit(env.As(t, "oscar"), read(31*time.Minute)))(t)
	if r.State != jitgate.RequestPending {
		t.Fatalf("state %s", r.State)
	}
	// Not on call: waits.
	r = must(env.Engine.Submit(env.As(t, "alice"), read(10*time.Minute)))(t)
	if r.State != jitgate.RequestPending {
		t.Fatalf("state %s", r.State)
	}
}

// erin is in both sre and security; she counts once toward the write policy's quorum of 2.
func TestApproverInTwoGroupsCountsOnce(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	nr := jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "migration"}
	r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
	r = must(env.Engine.Review(env.As(t, "erin"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestPending {
		t.Fatalf("one person in two groups approved alone: %s", r.State)
	}
	_, err := env.Engine.Review(env.As(t, "erin"), r.ID, jitgate.Approve, "again")
	wantCode(t, err, jitgate.ECONFLICT)
	r = must(env.Engine.Review(env.As(t, "frank"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestApproved || r.DecisionNote != "approved by erin, frank" {
		t.Fatalf("after a second person: %+v", r)
	}
}

// Steps run in order and one person approves at most one step.
func TestMultiStep(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	nr := jitgate.NewRequest{Resource: "app-db", Role: "admin", Duration: time.Hour}
	r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
	// frank (security) cannot approve step 1 (sre) ahead of time.
	_, err := env.Engine.Review(env.As(t, "frank"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EFORBIDDEN)
	r = must(env.Engine.Review(env.As(t, "erin"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestPending || r.Step != 1 {
		t.Fatalf("after step 1: %+v", r)
	}
	if ev := env.EventsOf(jitgate.EventRequestPending); len(ev) != 2 || len(ev[1].Notify) != 2 {
		t.Fatalf("step 2 approvers not asked: %+v", ev)
	}
	// erin is also in security, but approved step 1 already.
	_, err = env.Engine.Review(env.As(t, "erin"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EFORBIDDEN)
	inbox := must(env.Engine.ListRequests(env.As(t, "frank"), access.RequestQuery{ToReview: true}))(t)
	if len(inbox) != 1 || inbox[0].ID != r.ID {
		t.Fatalf("frank's inbox: %+v", inbox)
	}
	if inbox := must(env.Engine.ListRequests(env.As(t, "erin"), access.RequestQuery{ToReview: true}))(t); len(inbox) != 0 {
		t.Fatalf("erin's inbox: %+v", inbox)
	}
	r = must(env.Engine.Review(env.As(t, "frank"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestApproved {
		t.Fatalf("after step 2: %+v", r)
	}
}

func TestBreakGlass(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		nr := read(time.Hour)
		nr.BreakGlass = true
		r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
		if r.State != jitgate.RequestApproved || !r.PostReviewOpen || r.DecidedBy != "alice" {
			t.Fatalf("break-glass request: %+v", r)
		}
		g := grant(t, env, r.GrantID)
		if g.State != jitgate.GrantActive || !g.BreakGlass || !g.EndsAt.Equal(testenv.T0.Add(time.Hour)) {
			t.Fatalf("break-glass grant: %+v", g)
		}
		ev := env.EventsOf(jitgate.EventBreakGlass)
		if len(ev) != 1 || len(ev[0].Notify) != 3 { // bob, dave, erin
			t.Fatalf("approvers alerted: %+v", ev)
		}
		inbox := must(env.Engine.ListRequests(env.As(t, "bob"), access.RequestQuery{ToReview: true}))(t)
		if len(inbox) != 1 || inbox[0].ID != r.ID {
			t.Fatalf("post-review not in bob's inbox: %+v", inbox)
		}
		_, err := env.Engine.Review(env.As(t, "alice"), r.ID, jitgate.Approve, "")
		wantCode(t, err, jitgate.EFORBIDDEN)
		// The after-the-fact review rejects it: the grant is revoked at once.
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Deny, "not an emergency"))(t)
		if r.PostReviewOpen {
			t.Fatal("post-review still open")
		}
		g = grant(t, env, r.GrantID)
		if g.State != jitgate.GrantRevoked || g.EndedBy != "bob" {
			t.Fatalf("grant after rejected review: %+v", g)
		}
		acts := verifyAudit(t, env)
		if count(acts, jitgate.ActionBreakGlass) != 1 || count(acts, jitgate.ActionPostReview) != 1 {
			t.Fatalf("audit: %v", acts)
		}
	})
}

// A provisioner that fails twice and then succeeds is retried with backoff, and its failure
// is visible on the grant meanwhile.
func TestProvisionerRetry(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		env.Prov.FailNext(2)
		r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
		r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
		next := tick(t, env)
		g := grant(t, env, r.GrantID)
		if g.Provision.State != jitgate.ProvisionStateGranting || g.Provision.Attempts != 1 ||
			g.Provision.LastError != "target unreachable" || !next.Equal(testenv.T0.Add(time.Second)) {
			t.Fatalf("after first failure: %+v, next %v", g.Provision, next)
		}
		env.Clock.Advance(time.Second)
		next = tick(t, env)
		g = grant(t, env, r.GrantID)
		if g.Provision.Attempts != 2 || !next.Equal(testenv.T0.Add(3*time.Second)) { // backoff 2s
			t.Fatalf("after second failure: %+v, next %v", g.Provision, next)
		}
		env.Clock.Advance(2 * time.Second)
		tick(t, env)
		g = grant(t, env, r.GrantID)
		if g.Provision.State != jitgate.ProvisionStateGranted || g.Provision.LastError != "" || g.Provision.Attempts != 3 {
			t.Fatalf("after success: %+v", g.Provision)
		}
		if grants, _ := env.Prov.Calls(); len(grants) != 1 {
			t.Fatalf("successful grants: %v", grants)
		}
		if acts := verifyAudit(t, env); count(acts, jitgate.ActionProvisionFailed) != 2 {
			t.Fatalf("audit: %v", acts)
		}
	})
}

// Revoking while the provisioner is still failing to grant switches the work to a revoke.
func TestRevokeWhileGranting(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	env.Prov.FailNext(1)
	r := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
	tick(t, env)
	must(env.Engine.Revoke(env.As(t, "alice"), r.GrantID, ""))(t)
	tick(t, env)
	g := grant(t, env, r.GrantID)
	grants, revokes := env.Prov.Calls()
	if g.Provision.State != jitgate.ProvisionStateRevoked || len(grants) != 0 || len(revokes) != 1 {
		t.Fatalf("provision %+v, grants %v, revokes %v", g.Provision, grants, revokes)
	}
}

// Two approvers racing to the quorum of 2 activate exactly one grant, on both stores.
func TestApproversRacingAtQuorum(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		nr := jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "migration"}
		for round := range 5 {
			r := must(env.Engine.Submit(env.As(t, "alice"), nr))(t)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, who := range []string{"bob", "frank"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = env.Engine.Review(env.As(t, who), r.ID, jitgate.Approve, "")
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			r = request(t, env, r.ID)
			if r.State != jitgate.RequestApproved {
				t.Fatalf("round %d: state %s after two approvals", round, r.State)
			}
			grants := must(env.Engine.ListGrants(env.As(t, "carol"), access.GrantQuery{Active: true}))(t)
			if len(grants) != 1 {
				t.Fatalf("round %d: %d active grants", round, len(grants))
			}
			must(env.Engine.Revoke(env.As(t, "alice"), grants[0].ID, ""))(t)
		}
		acts := verifyAudit(t, env)
		if n := count(acts, jitgate.ActionGrantActivated); n != 5 {
			t.Fatalf("%d activations for 5 requests", n)
		}
	})
}

// Two schedulers on one PostgreSQL database activate and expire each grant exactly once.
func TestTwoSchedulersOnePostgres(t *testing.T) {
	b := testdb.Postgres(t)
	env1 := testenv.New(t, b)
	env2 := testenv.Open(t, b, env1.Clock, env1.Prov)
	start := testenv.T0.Add(time.Hour)
	for _, who := range []string{"alice", "oscar", "bob"} {
		nr := read(time.Hour)
		nr.StartAt = start
		r := must(env1.Engine.Submit(env1.As(t, who), nr))(t)
		must(env1.Engine.Review(env1.As(t, "dave"), r.ID, jitgate.Approve, ""))(t)
	}
	race := func() {
		var wg sync.WaitGroup
		for _, env := range []*testenv.Env{env1, env2, env1, env2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := env.Engine.Tick(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	env1.Clock.Set(start)
	race()
	env1.Clock.Set(start.Add(time.Hour))
	race()
	acts := verifyAudit(t, env1)
	if count(acts, jitgate.ActionGrantActivated) != 3 || count(acts, jitgate.ActionGrantExpired) != 3 ||
		count(acts, jitgate.ActionGrantProvisioned) != 3 || count(acts, jitgate.ActionGrantDeprovisioned) != 3 {
		t.Fatalf("audit: %v", acts)
	}
	grants, revokes := env1.Prov.Calls()
	if len(grants) != 3 || len(revokes) != 3 {
		t.Fatalf("provisioner calls: grants %v revokes %v", grants, revokes)
	}
}

// A limit counts only what the caller may see: newer requests and grants of policies frank
// does not approve for never crowd his list or his inbox out.
func TestListsFilterBeforeTheLimit(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		frank := env.As(t, "frank") // security: approves writes (step 1) and admin (step 2)
		write := must(env.Engine.Submit(env.As(t, "alice"), jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "fix"}))(t)
		admin := must(env.Engine.Submit(env.As(t, "alice"), jitgate.NewRequest{Resource: "app-db", Role: "admin", Duration: time.Hour, Reason: "keys"}))(t)
		for _, u := range []string{"oscar", "bob"} { // reads: sre approves, frank may not see them
			must(env.Engine.Submit(env.As(t, u), read(time.Hour)))(t)
		}
		list := must(env.Engine.ListRequests(frank, access.RequestQuery{Limit: 1}))(t)
		if len(list) != 1 || list[0].ID != admin.ID {
			t.Fatalf("frank's newest visible request: %+v, want request %d", list, admin.ID)
		}
		// The admin request waits for sre first, so frank's inbox skips it for the write.
		inbox := must(env.Engine.ListRequests(frank, access.RequestQuery{ToReview: true, Limit: 1}))(t)
		if len(inbox) != 1 || inbox[0].ID != write.ID {
			t.Fatalf("frank's inbox: %+v, want request %d", inbox, write.ID)
		}
		// Grants: frank sees the write grant once approved, however many newer reads exist.
		must(env.Engine.Review(env.As(t, "erin"), write.ID, jitgate.Approve, ""))(t)
		must(env.Engine.Review(frank, write.ID, jitgate.Approve, ""))(t)
		for _, u := range []string{"oscar", "bob"} {
			rs := must(env.Engine.ListRequests(env.As(t, "carol"), access.RequestQuery{State: jitgate.RequestPending}))(t)
			for _, r := range rs {
				if r.Requester == u {
					must(env.Engine.Review(env.As(t, "dave"), r.ID, jitgate.Approve, ""))(t)
				}
			}
		}
		gs := must(env.Engine.ListGrants(frank, access.GrantQuery{Limit: 1}))(t)
		if len(gs) != 1 || gs[0].Role != "write" {
			t.Fatalf("frank's newest visible grant: %+v", gs)
		}
		// alice sees only her own, and an admin everything.
		if all := must(env.Engine.ListGrants(env.As(t, "alice"), access.GrantQuery{}))(t); len(all) != 1 {
			t.Fatalf("alice sees %d grants", len(all))
		}
		if all := must(env.Engine.ListGrants(env.As(t, "carol"), access.GrantQuery{}))(t); len(all) != 3 {
			t.Fatalf("carol sees %d grants", len(all))
		}
	})
}

// Only jitgate itself starts sign-in sessions and records users: not a user who happens to be
// named like it, not an operator.
func TestSystemContextIsExplicit(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	ctx := context.Background()
	for name, caller := range map[string]context.Context{
		"a user named jitgate": jitgate.NewContext(ctx, &jitgate.User{Name: jitgate.SystemActor}),
		"an operator":          jitgate.NewOperatorContext(ctx, "op"),
	} {
		if _, _, err := env.Engine.SignIn(caller, "alice", "test", time.Hour); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
			t.Errorf("%s: SignIn = %v, want EFORBIDDEN", name, err)
		}
		if err := env.Engine.RememberUser(caller, &jitgate.User{Name: "mallory", Groups: []string{"sre"}}, "oidc"); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
			t.Errorf("%s: RememberUser = %v, want EFORBIDDEN", name, err)
		}
		if _, err := env.Engine.IssueCLICode(caller, "alice", "c", time.Minute); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
			t.Errorf("%s: IssueCLICode = %v, want EFORBIDDEN", name, err)
		}
		if _, _, err := env.Engine.TakeCLICode(caller, "x"); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
			t.Errorf("%s: TakeCLICode = %v, want EFORBIDDEN", name, err)
		}
	}
	if _, _, err := env.Engine.SignIn(jitgate.NewSystemContext(ctx), "alice", "test", time.Hour); err != nil {
		t.Fatalf("system SignIn: %v", err)
	}
}

// A CLI sign-in code is traded once, and not after it expires (engine clock); codes are kept
// by hash, so the code itself is not what the store holds.
func TestCLICodes(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		sys := jitgate.NewSystemContext(context.Background())
		code, err := env.Engine.IssueCLICode(sys, "alice", "challenge-1", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		late, err := env.Engine.IssueCLICode(sys, "bob", "challenge-2", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var stored string
		if err := env.Store.SQL().QueryRow(`SELECT hash FROM cli_codes WHERE user_name = 'alice'`).Scan(&stored); err != nil || stored != jitgate.HashToken(code) {
			t.Fatalf("stored %q (%v), want the code's hash", stored, err)
		}
		user, challenge, err := env.Engine.TakeCLICode(sys, code)
		if err != nil || user != "alice" || challenge != "challenge-1" {
			t.Fatalf("trade: %q %q %v", user, challenge, err)
		}
		if _, _, err := env.Engine.TakeCLICode(sys, code); jitgate.ErrorCode(err) != jitgate.EUNAUTHORIZED {
			t.Fatalf("a second trade: %v", err)
		}
		env.Clock.Advance(2 * time.Minute)
		if _, _, err := env.Engine.TakeCLICode(sys, late); jitgate.ErrorCode(err) != jitgate.EUNAUTHORIZED || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("an expired code: %v", err)
		}
	})
}
