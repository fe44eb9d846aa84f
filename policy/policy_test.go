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

var now = testenv.T0

func user(name string, groups ...string) *jitgate.User {
	return &jitgate.User{Name: name, Groups: groups}
}

var (
	alice = user("alice", "engineering")
	oscar = user("oscar", "engineering", "oncall")
	bob   = user("bob", "sre")
	erin  = user("erin", "sre", "security")
	frank = user("frank", "security")
)

func TestMatch(t *testing.T) {
	_, set := testenv.Policies(t)
	cases := []struct {
		u        *jitgate.User
		res, rol string
		policy   string
		code     string
	}{
		{alice, "app-db", "read", "engineers-read", ""},
		{bob, "app-db", "read", "engineers-read", ""}, // named as a user
		{alice, "app-db", "write", "engineers-write", ""},
		{oscar, "app-db", "admin", "", jitgate.EFORBIDDEN}, // admin names alice only
		{frank, "app-db", "read", "", jitgate.EFORBIDDEN},
		{alice, "nope", "read", "", jitgate.ENOTFOUND},
		{alice, "app-db", "nope", "", jitgate.ENOTFOUND},
	}
	for _, c := range cases {
		p, err := set.Match(c.u, c.res, c.rol)
		if jitgate.ErrorCode(err) != c.code || (p != nil && p.Name != c.policy) {
			t.Errorf("%s %s/%s: policy %v err %v; want %q %q", c.u.Name, c.res, c.rol, p, err, c.policy, c.code)
		}
	}
	if _, err := set.Match(frank, "app-db", "read"); !strings.Contains(err.Error(), "no policy lets frank request app-db/read") {
		t.Errorf("message: %v", err)
	}
}

// The first matching policy in file order decides, even when a later one is more generous.
func TestFirstMatchWins(t *testing.T) {
	src := strings.Replace(testenv.Config, "policies:\n", `policies:
  - name: oncall-read
    requesters: {groups: [oncall]}
    resources: ["*"]
    roles: [read]
    max_duration: 15m
    approval:
      steps: [{approvers: {users: [bob]}}]
`, 1)
	_, set := testenv.Compile(t, src)
	if p, _ := set.Match(oscar, "app-db", "read"); p.Name != "oncall-read" || p.MaxDuration != 15*time.Minute {
		t.Fatalf("oscar: %+v", p)
	}
	if p, _ := set.Match(alice, "app-db", "read"); p.Name != "engineers-read" {
		t.Fatalf("alice: %+v", p)
	}
}

func TestCheckAndAutoApprove(t *testing.T) {
	_, set := testenv.Policies(t)
	read := set.Policy("engineers-read")
	in := func(u *jitgate.User, d time.Duration, reason string) policy.Input {
		return policy.Input{Requester: u, Resource: "app-db", Role: "read", Duration: d, Reason: reason, Now: now}
	}
	cases := []struct {
		name string
		in   policy.Input
		code string
		auto bool
	}{
		{"oncall short", in(oscar, 30*time.Minute, "x"), "", true},
		{"oncall long", in(oscar, 31*time.Minute, "x"), "", false},
		{"not oncall", in(alice, 10*time.Minute, "x"), "", false},
		{"max duration exactly", in(alice, 4*time.Hour, "x"), "", false},
		{"over max", in(alice, 4*time.Hour+time.Second, "x"), jitgate.EINVALID, false},
		{"no reason", in(alice, time.Hour, " "), jitgate.EINVALID, false},
		{"negative", in(alice, -time.Hour, "x"), jitgate.EINVALID, false},
		{"break-glass", func() policy.Input { i := in(oscar, time.Hour, "db down"); i.BreakGlass = true; return i }(), "", false},
		{"break-glass over cap", func() policy.Input { i := in(alice, 61*time.Minute, "x"); i.BreakGlass = true; return i }(), jitgate.EINVALID, false},
		{"break-glass no reason", func() policy.Input { i := in(alice, time.Hour, ""); i.BreakGlass = true; return i }(), jitgate.EINVALID, false},
		{"break-glass with start", func() policy.Input {
			i := in(alice, time.Hour, "x")
			i.BreakGlass, i.Start = true, now.Add(time.Hour)
			return i
		}(), jitgate.EINVALID, false},
		{"future start", func() policy.Input { i := in(alice, time.Hour, "x"); i.Start = now.Add(24 * time.Hour); return i }(), "", false},
		{"past start", func() policy.Input { i := in(alice, time.Hour, "x"); i.Start = now.Add(-2 * time.Minute); return i }(), jitgate.EINVALID, false},
		{"reason too long", in(alice, time.Hour, strings.Repeat("x", policy.MaxReasonLen+1)), jitgate.EINVALID, false},
		// The limit counts characters, not bytes: 2,000 three-byte characters are fine.
		{"reason at the limit in characters", in(alice, time.Hour, strings.Repeat("€", policy.MaxReasonLen)), "", false},
		{"reason over the limit in characters", in(alice, time.Hour, strings.Repeat("€", policy.MaxReasonLen+1)), jitgate.EINVALID, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := read.Check(c.in); jitgate.ErrorCode(err) != c.code {
				t.Fatalf("Check: %v, want %q", err, c.code)
			}
			auto, err := read.AutoApproved(c.in)
			if err != nil || auto != c.auto {
				t.Fatalf("AutoApproved = %v, %v; want %v", auto, err, c.auto)
			}
		})
	}
	if err := set.Policy("engineers-write").Check(policy.Input{Requester: alice, Duration: time.Hour, BreakGlass: true, Reason: "x"}); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("break-glass where not allowed: %v", err)
	}
}

func TestCanApprove(t *testing.T) {
	_, set := testenv.Policies(t)
	admin := set.Policy("engineers-admin")
	cases := []struct {
		u    *jitgate.User
		step int
		want bool
	}{
		{bob, 0, true}, {bob, 1, false}, {erin, 0, true}, {erin, 1, true}, {frank, 0, false}, {frank, 1, true},
		{alice, 0, false}, {bob, 2, false}, {bob, -1, false},
	}
	for _, c := range cases {
		if got := admin.CanApprove(c.u, "alice", "", c.step); got != c.want {
			t.Errorf("%s at step %d: %v", c.u.Name, c.step, got)
		}
	}
	// The requester never approves their own request, whatever their groups.
	if set.Policy("engineers-read").CanApprove(bob, "bob", "", 0) {
		t.Error("bob approves his own request")
	}
}

func TestCELErrorsNameFileLine(t *testing.T) {
	cases := []struct{ expr, want string }{
		{`request.durations < duration("1h")`, "column 8: undefined field 'durations'"},
		{`request.duration <`, "Syntax error"},
		{`request.reason`, "condition must be a bool, not string"},
		{`requester.groups.exists(g, g == 1)`, "no matching overload"},
	}
	for _, c := range cases {
		src := strings.Replace(testenv.Config, `auto_approve: 'request.duration <= duration("30m") && "oncall" in requester.groups'`,
			"auto_approve: '"+c.expr+"'", 1)
		cfg, err := config.Parse("fixture.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		_, err = policy.Compile(cfg)
		if err == nil || !strings.Contains(err.Error(), "fixture.yaml:38: policies.0.auto_approve:") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.expr, err)
		}
	}
}

func TestCELVariables(t *testing.T) {
	src := strings.Replace(testenv.Config, `auto_approve: 'request.duration <= duration("30m") && "oncall" in requester.groups'`,
		`auto_approve: 'request.resource == "app-db" && request.role == "read" && requester.name == "alice" && request.reason.contains("INC-") && now.getHours() < 12 && !request.extension'`, 1)
	_, set := testenv.Compile(t, src)
	p := set.Policy("engineers-read")
	in := policy.Input{Requester: alice, Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "INC-7", Now: now}
	if ok, err := p.AutoApproved(in); !ok || err != nil {
		t.Fatalf("morning: %v %v", ok, err)
	}
	in.Now = now.Add(5 * time.Hour)
	if ok, _ := p.AutoApproved(in); ok {
		t.Fatal("afternoon approved")
	}
	in.Now, in.Extension = now, true
	if ok, _ := p.AutoApproved(in); ok {
		t.Fatal("extension approved")
	}
}

func TestExplain(t *testing.T) {
	cfg, set := testenv.Policies(t)
	users, _ := cfg.Directory().Users(t.Context())
	ex, err := set.Explain(oscar, users, "app-db", "read", 20*time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.MayRequest || ex.Policy != "engineers-read" || !ex.AutoApproved || ex.MaxDuration != 4*time.Hour ||
		len(ex.Steps) != 1 || strings.Join(ex.Steps[0].Eligible, ",") != "bob,dave,erin" ||
		strings.Join(ex.Requesters, ",") != "alice,bob,oscar" {
		t.Fatalf("explain: %+v", ex)
	}
	ex, _ = set.Explain(frank, users, "app-db", "read", 0, now)
	if ex.MayRequest || !strings.Contains(ex.Reason, "no policy") {
		t.Fatalf("explain frank: %+v", ex)
	}
	if got := set.Requestable(alice); len(got) != 3 {
		t.Fatalf("alice may request %d roles", len(got))
	}
}

func BenchmarkDecision(b *testing.B) {
	_, set := testenv.Policies(b)
	in := policy.Input{Requester: oscar, Resource: "app-db", Role: "read", Duration: 20 * time.Minute, Reason: "x", Now: now}
	b.ReportAllocs()
	for b.Loop() {
		p, err := set.Match(oscar, "app-db", "read")
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Check(in); err != nil {
			b.Fatal(err)
		}
		if ok, err := p.AutoApproved(in); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
