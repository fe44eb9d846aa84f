package access_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

func agentRead(d time.Duration) jitgate.NewRequest {
	return jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: d, Reason: "INC-7: look at failed payments"}
}

// The full owner-approval loop on both stores: triage-bot (alice's agent, in the sre group)
// asks; alice is the approver of the owner step and sees the request in her inbox; the agent's
// request, grant and audit name its owner; nobody else approves at that step.
func TestAgentRequestApprovedByOwner(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		env := testenv.New(t, b)
		bot := env.As(t, "triage-bot")
		r := must(env.Engine.Submit(bot, agentRead(10*time.Minute)))(t)
		if r.State != jitgate.RequestPending || r.Policy != "agents-read" || r.RequesterOwner != "alice" {
			t.Fatalf("request %+v", r)
		}
		// The approvers told are the owner only.
		pend := env.EventsOf(jitgate.EventRequestPending)
		if len(pend) != 1 || !slices.Equal(pend[0].Notify, []string{"alice"}) {
			t.Fatalf("pending notified %v", pend)
		}
		// Not bob (sre, no owner step), not the agent itself, not another agent.
		for _, who := range []string{"bob", "ci-bot", "triage-bot"} {
			_, err := env.Engine.Review(env.As(t, who), r.ID, jitgate.Approve, "")
			wantCode(t, err, jitgate.EFORBIDDEN)
		}
		inbox := must(env.Engine.ListRequests(env.As(t, "alice"), access.RequestQuery{ToReview: true}))(t)
		if len(inbox) != 1 || inbox[0].ID != r.ID {
			t.Fatalf("alice's inbox %v", inbox)
		}
		if inbox := must(env.Engine.ListRequests(env.As(t, "bob"), access.RequestQuery{ToReview: true}))(t); len(inbox) != 0 {
			t.Fatalf("bob's inbox %v", inbox)
		}
		r = must(env.Engine.Review(env.As(t, "alice"), r.ID, jitgate.Approve, "ok"))(t)
		if r.State != jitgate.RequestApproved {
			t.Fatalf("after owner approval: %s", r.State)
		}
		g := must(env.Engine.GetGrant(bot, r.GrantID))(t)
		if g.User != "triage-bot" || g.Owner != "alice" || g.State != jitgate.GrantActive {
			t.Fatalf("grant %+v", g)
		}
		started := env.EventsOf(jitgate.EventGrantStarted)
		if len(started) != 1 || !slices.Equal(started[0].Notify, []string{"triage-bot", "alice"}) {
			t.Fatalf("grant.started notified %v", started)
		}
		// The owner sees the agent's grants and may revoke them; another agent may not see them.
		if gs := must(env.Engine.ListGrants(env.As(t, "alice"), access.GrantQuery{}))(t); len(gs) != 1 {
			t.Fatalf("alice sees %d grants", len(gs))
		}
		_, err := env.Engine.GetGrant(env.As(t, "ci-bot"), g.ID)
		wantCode(t, err, jitgate.ENOTFOUND)
		must(env.Engine.Revoke(env.As(t, "alice"), g.ID, "done"))(t)
		var created *jitgate.AuditEvent
		for _, ev := range auditEvents(t, env) {
			if ev.Action == jitgate.ActionRequestCreated && ev.RequestID == r.ID {
				created = ev
			}
		}
		if created == nil || created.Actor != "triage-bot" || created.Details["owner"] != "alice" {
			t.Fatalf("request.created %+v", created)
		}
		verifyAudit(t, env)
	})
}

// Two steps: the owner, then sre. An agent in sre never counts, even on another agent's request.
func TestAgentTwoStepsAndAgentsNeverApprove(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	r := must(env.Engine.Submit(env.As(t, "triage-bot"), jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: 10 * time.Minute, Reason: "fix"}))(t)
	_, err := env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, "")
	wantCode(t, err, jitgate.EFORBIDDEN) // step 1 is the owner's
	r = must(env.Engine.Review(env.As(t, "alice"), r.ID, jitgate.Approve, ""))(t)
	if r.Step != 1 || r.State != jitgate.RequestPending {
		t.Fatalf("after step 1: %+v", r)
	}
	// ci-bot would be "another approver" but is an agent; triage-bot is in sre.
	for _, who := range []string{"ci-bot", "triage-bot"} {
		_, err := env.Engine.Review(env.As(t, who), r.ID, jitgate.Approve, "")
		if jitgate.ErrorCode(err) != jitgate.EFORBIDDEN || !strings.Contains(err.Error(), "agents never approve") {
			t.Fatalf("%s: %v", who, err)
		}
	}
	r = must(env.Engine.Review(env.As(t, "bob"), r.ID, jitgate.Approve, ""))(t)
	if r.State != jitgate.RequestApproved {
		t.Fatalf("after step 2: %s", r.State)
	}
	// An agent may not deny either, nor review a people's request.
	p := must(env.Engine.Submit(env.As(t, "alice"), read(time.Hour)))(t)
	_, err = env.Engine.Review(env.As(t, "triage-bot"), p.ID, jitgate.Deny, "no")
	wantCode(t, err, jitgate.EFORBIDDEN)
	// Nor revoke a grant that is not its own.
	bg := must(env.Engine.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "db down", BreakGlass: true}))(t)
	_, err = env.Engine.Revoke(env.As(t, "triage-bot"), bg.GrantID, "")
	wantCode(t, err, jitgate.ENOTFOUND)
}

func TestAgentLimits(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	bot := env.As(t, "ci-bot")
	// Auto-approved by CEL: bob's agent, 5 minutes at most.
	r := must(env.Engine.Submit(bot, agentRead(5*time.Minute)))(t)
	if r.State != jitgate.RequestApproved || r.DecidedBy != access.SystemActor {
		t.Fatalf("auto: %+v", r)
	}
	must(env.Engine.Revoke(bot, r.GrantID, "done"))(t)
	// Over the agents' 15-minute cap.
	_, err := env.Engine.Submit(bot, agentRead(16*time.Minute))
	wantCode(t, err, jitgate.EINVALID)
	// No break-glass for agents, even where the policy allows it for people.
	nr := agentRead(5 * time.Minute)
	nr.BreakGlass = true
	_, err = env.Engine.Submit(bot, nr)
	wantCode(t, err, jitgate.EFORBIDDEN)
	// Not through a people's policy via the engineering group.
	_, err = env.Engine.Submit(bot, jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Minute, Reason: "x"})
	wantCode(t, err, jitgate.EFORBIDDEN)
}

// An agent's owner mints its tokens; nobody else but an admin may, and agents do not sign in.
func TestAgentTokens(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	ctx := context.Background()
	secret, tk := must2(env.Engine.CreateToken(env.As(t, "alice"), "triage-bot", time.Hour, "mcp"))(t)
	u := must(env.Engine.Authenticate(ctx, secret))(t)
	if !u.IsAgent() || u.Owner != "alice" {
		t.Fatalf("token user %+v", u)
	}
	w := must(env.Engine.Whoami(jitgate.NewContext(ctx, u)))(t)
	if w.Kind != "agent" || w.Owner != "alice" || w.Admin {
		t.Fatalf("whoami %+v", w)
	}
	for _, c := range []struct{ who, target string }{{"bob", "triage-bot"}, {"alice", "ci-bot"}, {"alice", "bob"}, {"triage-bot", "triage-bot"}} {
		_, _, err := env.Engine.CreateToken(env.As(t, c.who), c.target, time.Hour, "")
		wantCode(t, err, jitgate.EFORBIDDEN)
	}
	must2(env.Engine.CreateToken(env.As(t, "carol"), "ci-bot", time.Hour, ""))(t)
	// The owner lists and revokes the agent's tokens.
	ts := must(env.Engine.ListTokens(env.As(t, "alice")))(t)
	if len(ts) != 1 || ts[0].ID != tk.ID {
		t.Fatalf("alice's tokens %v", ts)
	}
	must(env.Engine.RevokeToken(env.As(t, "alice"), tk.ID))(t)
	_, err := env.Engine.Authenticate(ctx, secret)
	wantCode(t, err, jitgate.EUNAUTHORIZED)
	_, _, err = env.Engine.SignIn(jitgate.NewSystemContext(ctx), "triage-bot", "oidc", time.Hour)
	wantCode(t, err, jitgate.EFORBIDDEN)
}

func TestRecordToolCall(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	bot := env.As(t, "triage-bot")
	must0(t, env.Engine.RecordToolCall(bot, access.ToolCall{Tool: "query", Arguments: `{"sql":"` + strings.Repeat("x", 5000) + `"}`, Error: "no active grant", GrantID: 0}))
	wantCode(t, env.Engine.RecordToolCall(bot, access.ToolCall{Tool: "bad name!"}), jitgate.EINVALID)
	wantCode(t, env.Engine.RecordToolCall(context.Background(), access.ToolCall{Tool: "query"}), jitgate.EUNAUTHORIZED)
	evs := auditEvents(t, env)
	ev := evs[len(evs)-1]
	if ev.Action != access.ActionToolCalled || ev.Actor != "triage-bot" || ev.Details["owner"] != "alice" ||
		ev.Details["outcome"] != "error" || ev.Details["kind"] != "agent" || len(ev.Details["arguments"]) > access.MaxToolArgs+40 {
		t.Fatalf("event %+v", ev)
	}
	verifyAudit(t, env)
}

func must2[A, B any](a A, b B, err error) func(t *testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func must0(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func auditEvents(t *testing.T, env *testenv.Env) []*jitgate.AuditEvent {
	t.Helper()
	var evs []*jitgate.AuditEvent
	if err := env.Store.View(context.Background(), func(tx jitgate.Tx) (err error) {
		evs, err = tx.ListAudit(jitgate.AuditFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}
