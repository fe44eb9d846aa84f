// Package testenv builds a complete engine for tests: the fixture config below, a manual clock,
// a store on the given backend and a recording provisioner.
package testenv

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// Config is the fixture configuration. alice and oscar request; bob, dave and erin (sre)
// approve reads (bob may also request them); writes need two of sre or security (erin is in both); admin access needs one
// sre and then one security approver; oscar is on call, so his short reads are auto-approved.
const Config = `
server:
  admins: [carol]
users:
  - {name: alice, groups: [engineering]}
  - {name: oscar, groups: [engineering, oncall]}
  - {name: bob, groups: [sre]}
  - {name: dave, groups: [sre]}
  - {name: erin, groups: [sre, security]}
  - {name: frank, groups: [security]}
  - {name: carol, groups: [admins]}
agents:
  # triage-bot shares the sre group with the approvers of engineers-read, and ci-bot the
  # engineering group with its requesters: neither may approve or request through them.
  - {name: triage-bot, owner: alice, groups: [sre]}
  - {name: ci-bot, owner: bob, groups: [engineering]}
resources:
  - name: app-db
    kind: postgres
    address: 127.0.0.1:5432
    database: app
    credentials: {user: jitgate_admin, password_env: APP_DB_ADMIN_PASSWORD}
    roles:
      - {name: read, description: read every table, grants: [pg_read_all_data]}
      - {name: write, grants: [app_writer]}
      - {name: admin, grants: [app_owner]}
policies:
  - name: engineers-read
    requesters: {groups: [engineering], users: [bob]}
    resources: [app-db]
    roles: [read]
    max_duration: 4h
    pending_ttl: 1h
    require_reason: true
    approval:
      steps:
        - approvers: {groups: [sre]}
    auto_approve: 'request.duration <= duration("30m") && "oncall" in requester.groups'
    break_glass: {allowed: true, max_duration: 1h}
  - name: engineers-write
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: [write]
    max_duration: 2h
    approval:
      steps:
        - approvers: {groups: [sre, security]}
          min: 2
  - name: engineers-admin
    requesters: {users: [alice]}
    resources: [app-db]
    roles: [admin]
    max_duration: 1h
    approval:
      steps:
        - approvers: {groups: [sre]}
        - approvers: {groups: [security]}
  - name: agents-read
    requesters: {agents: ["*"]}
    resources: [app-db]
    roles: [read]
    max_duration: 15m
    approval:
      steps:
        - approvers: {owner: true}
    auto_approve: 'requester.kind == "agent" && requester.owner == "bob" && request.duration <= duration("5m")'
  - name: agents-write
    requesters: {agents: [triage-bot]}
    resources: [app-db]
    roles: [write]
    max_duration: 15m
    approval:
      steps:
        - approvers: {owner: true}
        - approvers: {groups: [sre]}
`

// T0 is where the fixture clock starts.
var T0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// Env is a running fixture.
type Env struct {
	Engine   *access.Engine
	Store    *store.DB
	Clock    *clocktest.Clock
	Prov     *Provisioner
	Policies *policy.Set
	Dir      jitgate.Directory
	Backend  testdb.Backend

	mu     sync.Mutex
	Events []jitgate.Event
}

// Policies compiles the fixture config.
func Policies(tb testing.TB) (*config.Config, *policy.Set) {
	tb.Helper()
	return Compile(tb, Config)
}

// Compile parses and compiles a config given as text, named fixture.yaml in errors.
func Compile(tb testing.TB, src string) (*config.Config, *policy.Set) {
	tb.Helper()
	cfg, err := config.Parse("fixture.yaml", []byte(src))
	if err != nil {
		tb.Fatal(err)
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg, set
}

// New starts a fixture engine on backend b with clock at T0.
func New(tb testing.TB, b testdb.Backend) *Env {
	tb.Helper()
	return Open(tb, b, clocktest.New(T0), &Provisioner{})
}

// Open starts an engine on backend b with the given clock and provisioner (to "restart" an
// engine on the same database).
func Open(tb testing.TB, b testdb.Backend, clk *clocktest.Clock, prov *Provisioner) *Env {
	tb.Helper()
	cfg, set := Policies(tb)
	s, err := store.Open(context.Background(), b.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	env := &Env{Store: s, Clock: clk, Prov: prov, Policies: set, Dir: cfg.Directory(), Backend: b}
	env.Engine = access.New(access.Options{
		Store: s, Policies: set, Directory: env.Dir, Clock: clk,
		Provisioners: map[string]jitgate.Provisioner{"app-db": prov},
		Backoff:      func(n int) time.Duration { return time.Duration(n) * time.Second },
	})
	env.Engine.Subscribe(func(ev jitgate.Event) {
		env.mu.Lock()
		env.Events = append(env.Events, ev)
		env.mu.Unlock()
	})
	return env
}

// As returns a context whose caller is the named fixture user.
func (e *Env) As(tb testing.TB, name string) context.Context {
	tb.Helper()
	u, err := e.Dir.LookupUser(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return jitgate.NewContext(context.Background(), u)
}

// EventsOf returns the events of one kind seen so far.
func (e *Env) EventsOf(kind jitgate.EventKind) []jitgate.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []jitgate.Event
	for _, ev := range e.Events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// Provisioner records Grant and Revoke calls; FailNext makes the next calls fail.
type Provisioner struct {
	mu       sync.Mutex
	Grants   []int64
	Revokes  []int64
	failNext int
}

// FailNext makes the next n calls fail.
func (p *Provisioner) FailNext(n int) {
	p.mu.Lock()
	p.failNext = n
	p.mu.Unlock()
}

func (p *Provisioner) call(list *[]int64, id int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failNext > 0 {
		p.failNext--
		return errors.New("target unreachable")
	}
	*list = append(*list, id)
	return nil
}

// Manages reports true: the fake provisions every role.
func (p *Provisioner) Manages(string) bool { return true }

// Grant records g.
func (p *Provisioner) Grant(_ context.Context, g *jitgate.Grant) error {
	return p.call(&p.Grants, g.ID)
}

// Revoke records g.
func (p *Provisioner) Revoke(_ context.Context, g *jitgate.Grant) error {
	return p.call(&p.Revokes, g.ID)
}

// Calls returns copies of the recorded grant and revoke calls.
func (p *Provisioner) Calls() (grants, revokes []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.Grants...), append([]int64(nil), p.Revokes...)
}

// Build starts an engine for an arbitrary config text (named fixture.yaml in errors) on
// backend b, with the given clock (nil for the system clock) and provisioners built from the
// compiled resources by provs. It returns the engine, the compiled policies and the directory.
func Build(tb testing.TB, src string, b testdb.Backend, clk jitgate.Clock, provs func(set *policy.Set) map[string]jitgate.Provisioner) (*access.Engine, *policy.Set, jitgate.Directory) {
	tb.Helper()
	cfg, set := Compile(tb, src)
	s, err := store.Open(context.Background(), b.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	eng := access.New(access.Options{
		Store: s, Policies: set, Directory: &access.Directory{Static: cfg.Directory(), Store: s}, Clock: clk, Provisioners: provs(set),
		Backoff: func(n int) time.Duration { return time.Duration(n) * time.Second },
	})
	return eng, set, &access.Directory{Static: cfg.Directory(), Store: s}
}

// User returns a context whose caller is the named user of dir.
func User(tb testing.TB, dir jitgate.Directory, name string) context.Context {
	tb.Helper()
	u, err := dir.LookupUser(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return jitgate.NewContext(context.Background(), u)
}
