package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
)

func agent(name, owner string, groups ...string) *jitgate.User {
	return &jitgate.User{Name: name, Groups: groups, Kind: jitgate.PrincipalAgent, Owner: owner}
}

var (
	triage = agent("triage-bot", "alice", "sre")
	cibot  = agent("ci-bot", "bob", "engineering")
)

// Agents match only the policies that name them under requesters.agents, never a people's
// policy through a group they share with people.
func TestAgentsMatchOnlyAgentPolicies(t *testing.T) {
	_, set := testenv.Policies(t)
	cases := []struct {
		u        *jitgate.User
		role     string
		policy   string
		forbided bool
	}{
		{cibot, "read", "agents-read", false}, // in engineering, yet not engineers-read
		{triage, "read", "agents-read", false},
		{triage, "write", "agents-write", false},
		{cibot, "write", "", true}, // agents-write names triage-bot only
		{triage, "admin", "", true},
		{alice, "read", "engineers-read", false},
	}
	for _, c := range cases {
		p, err := set.Match(c.u, "app-db", c.role)
		if c.forbided {
			if jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
				t.Errorf("%s %s: %v, %v; want EFORBIDDEN", c.u.Name, c.role, p, err)
			}
			continue
		}
		if err != nil || p.Name != c.policy {
			t.Errorf("%s %s: %v, %v; want %s", c.u.Name, c.role, p, err, c.policy)
		}
	}
}

// An agent's request is routed to its owner's approval step: the owner approves it, nobody
// else does at that step, and an agent never approves, whatever its groups.
func TestAgentRequestRoutedToOwnerStep(t *testing.T) {
	_, set := testenv.Policies(t)
	p, err := set.Match(triage, "app-db", "write")
	if err != nil {
		t.Fatal(err)
	}
	if !p.CanApprove(alice, triage.Name, triage.Owner, 0) {
		t.Error("alice owns triage-bot but may not approve step 1")
	}
	for _, u := range []*jitgate.User{bob, erin, carolUser(), cibot} {
		if p.CanApprove(u, triage.Name, triage.Owner, 0) {
			t.Errorf("%s may approve the owner step of triage-bot's request", u.Name)
		}
	}
	if p.CanApprove(alice, triage.Name, triage.Owner, 1) || !p.CanApprove(bob, triage.Name, triage.Owner, 1) {
		t.Error("step 2 is sre's, not the owner's")
	}
	// triage-bot is in sre, the approvers of engineers-read and of step 2 here.
	if set.Policy("engineers-read").IsApprover(triage) || p.CanApprove(triage, "ci-bot", "bob", 1) {
		t.Error("an agent in an approver group counts as an approver")
	}
	if got := p.Steps[0].String(); got != "1 of the requester's owner" {
		t.Errorf("step string %q", got)
	}
	// Explain names the owner as the eligible approver of the owner step.
	users := []*jitgate.User{alice, bob, erin, triage, cibot}
	ex, err := set.Explain(triage, users, "app-db", "write", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.Steps[0].Owner || strings.Join(ex.Steps[0].Eligible, ",") != "alice" || strings.Join(ex.Steps[1].Eligible, ",") != "bob,erin" {
		t.Errorf("explanation %+v", ex.Steps)
	}
}

func carolUser() *jitgate.User { return user("carol", "admins") }

// CEL sees requester.kind and requester.owner.
func TestCELSeesKindAndOwner(t *testing.T) {
	_, set := testenv.Policies(t)
	p := set.Policy("agents-read")
	in := func(u *jitgate.User, d time.Duration) policy.Input {
		return policy.Input{Requester: u, Resource: "app-db", Role: "read", Duration: d, Now: now}
	}
	for _, c := range []struct {
		in   policy.Input
		want bool
	}{
		{in(cibot, 5*time.Minute), true},   // bob's agent, short
		{in(cibot, 6*time.Minute), false},  // too long
		{in(triage, 5*time.Minute), false}, // alice's agent
	} {
		got, err := p.AutoApproved(c.in)
		if err != nil || got != c.want {
			t.Errorf("%s %s: %v, %v; want %v", c.in.Requester.Name, c.in.Duration, got, err, c.want)
		}
	}
	if err := p.Check(in(cibot, 16*time.Minute)); jitgate.ErrorCode(err) != jitgate.EINVALID {
		t.Errorf("16m for an agent: %v", err)
	}
	// A person's kind is "user" and their owner empty.
	_, set2 := testenv.Compile(t, strings.Replace(testenv.Config,
		`'request.duration <= duration("30m") && "oncall" in requester.groups'`,
		`'requester.kind == "user" && requester.owner == "" && "oncall" in requester.groups'`, 1))
	if ok, err := set2.Policy("engineers-read").AutoApproved(policy.Input{Requester: oscar, Resource: "app-db", Role: "read", Duration: time.Hour, Now: now}); !ok || err != nil {
		t.Errorf("person: %v, %v", ok, err)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	for _, c := range []struct{ name, from, to, want string }{
		{"agent approver", "- approvers: {owner: true}\n        - approvers: {groups: [sre]}",
			"- approvers: {owner: true}\n        - approvers: {agents: [triage-bot]}", "agents never approve"},
		{"agent as approver user", "- approvers: {groups: [security]}\n  - name: agents-read",
			"- approvers: {users: [triage-bot]}\n  - name: agents-read", `"triage-bot" is an agent`},
		{"owner step for people", "requesters: {users: [alice]}\n    resources: [app-db]\n    roles: [admin]\n    max_duration: 1h\n    approval:\n      steps:\n        - approvers: {groups: [sre]}",
			"requesters: {users: [alice]}\n    resources: [app-db]\n    roles: [admin]\n    max_duration: 1h\n    approval:\n      steps:\n        - approvers: {owner: true}", "people have no owner"},
		{"owner of requesters", `requesters: {agents: [triage-bot]}`, `requesters: {agents: [triage-bot], owner: true}`, "belongs in an approval step"},
		{"unknown agent", `requesters: {agents: [triage-bot]}`, `requesters: {agents: [nobot]}`, `unknown agent "nobot"`},
		{"agent without owner", `{name: ci-bot, owner: bob, groups: [engineering]}`, `{name: ci-bot, groups: [engineering]}`, "every agent needs a user"},
		{"agent owned by agent", `{name: ci-bot, owner: bob,`, `{name: ci-bot, owner: triage-bot,`, "an agent's owner is a person"},
		{"unknown owner", `{name: ci-bot, owner: bob,`, `{name: ci-bot, owner: zed,`, `unknown user "zed"`},
		{"name clash", `{name: ci-bot, owner: bob,`, `{name: alice, owner: bob,`, "users and agents share one namespace"},
		{"agent admin", "admins: [carol]", "admins: [carol, triage-bot]", "agents are never admins"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(testenv.Config, c.from) {
				t.Fatalf("fixture lacks %q", c.from)
			}
			_, err := config.Parse("fixture.yaml", []byte(strings.Replace(testenv.Config, c.from, c.to, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "fixture.yaml:") {
				t.Fatalf("err %v; want %q with file:line", err, c.want)
			}
		})
	}
}
