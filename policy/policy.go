// Package policy compiles the config's policies into decisions: who may request which role for
// how long, which approval steps apply, who may approve at each step, and whether a request is
// approved automatically by its CEL condition. It is pure: no I/O, no clock of its own.
package policy

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
)

// Set is a compiled configuration: the resource catalog, the admins and the policies in file
// order.
type Set struct {
	policies  []*Policy
	resources map[string]*jitgate.Resource
	order     []string
	admins    []string
}

// Policy is one compiled policy.
type Policy struct {
	Name          string
	Requesters    config.Principals
	Resources     []string
	Roles         []string
	MaxDuration   time.Duration
	PendingTTL    time.Duration
	RequireReason bool
	Steps         []Step
	// AutoApprove is the CEL source of the auto-approval condition ("" if none).
	AutoApprove string
	// BreakGlass is the maximum break-glass duration; zero means break-glass is not allowed.
	BreakGlass time.Duration

	program cel.Program
}

// Step is one approval step: Min distinct approvers from Users, Groups and, with Owner, the
// requester's owner.
type Step struct {
	Users  []string
	Groups []string
	// Owner makes the owner of an agent requester an approver of the step.
	Owner bool
	Min   int
}

// Has reports whether u is an approver of the step for a request whose requester's owner is
// owner (empty when a person asked). An agent is never an approver, whatever its groups.
func (s *Step) Has(u *jitgate.User, owner string) bool {
	if u.IsAgent() {
		return false
	}
	if s.Owner && owner != "" && u.Name == owner {
		return true
	}
	if slices.Contains(s.Users, u.Name) {
		return true
	}
	return slices.ContainsFunc(s.Groups, u.InGroup)
}

// String describes the step's approvers, e.g. "1 of users [dave] or groups [sre]".
func (s *Step) String() string {
	var parts []string
	if s.Owner {
		parts = append(parts, "the requester's owner")
	}
	if len(s.Users) > 0 {
		parts = append(parts, "users "+strings.Join(s.Users, ", "))
	}
	if len(s.Groups) > 0 {
		parts = append(parts, "groups "+strings.Join(s.Groups, ", "))
	}
	return fmt.Sprintf("%d of %s", s.Min, strings.Join(parts, " or "))
}

// Request is the CEL variable `request`.
type Request struct {
	Resource   string        `cel:"resource"`
	Role       string        `cel:"role"`
	Duration   time.Duration `cel:"duration"`
	Reason     string        `cel:"reason"`
	Start      time.Time     `cel:"start"`
	BreakGlass bool          `cel:"break_glass"`
	Extension  bool          `cel:"extension"`
}

// Requester is the CEL variable `requester`.
type Requester struct {
	Name   string   `cel:"name"`
	Groups []string `cel:"groups"`
	// Kind is "user" or "agent".
	Kind string `cel:"kind"`
	// Owner is an agent's owner; empty for a person.
	Owner string `cel:"owner"`
}

// newEnv returns the CEL environment policies are compiled in: `request`, `requester` and
// `now` (a timestamp).
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Request](), reflect.TypeFor[Requester](), ext.ParseStructTags(true)),
		cel.Variable("request", cel.ObjectType("policy.Request")),
		cel.Variable("requester", cel.ObjectType("policy.Requester")),
		cel.Variable("now", cel.TimestampType),
		ext.Strings(),
	)
}

// Compile compiles cfg's policies. A CEL condition that does not parse, does not type-check or
// is not boolean is an error naming its file:line.
func Compile(cfg *config.Config) (*Set, error) {
	env, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: CEL environment: %w", err)
	}
	s := &Set{resources: map[string]*jitgate.Resource{}, admins: slices.Clone(cfg.Server.Admins)}
	for _, r := range cfg.DomainResources() {
		s.resources[r.Name] = r
		s.order = append(s.order, r.Name)
	}
	for i, cp := range cfg.Policies {
		p := &Policy{
			Name:          cp.Name,
			Requesters:    cp.Requesters,
			Resources:     cp.Resources,
			Roles:         cp.Roles,
			MaxDuration:   cp.MaxDurationValue,
			PendingTTL:    cp.PendingTTLValue,
			RequireReason: cp.RequireReason,
			AutoApprove:   strings.TrimSpace(cp.AutoApprove),
		}
		for _, st := range cp.Approval.Steps {
			p.Steps = append(p.Steps, Step{Users: st.Approvers.Users, Groups: st.Approvers.Groups, Owner: st.Approvers.Owner, Min: st.Min})
		}
		if cp.BreakGlass != nil && cp.BreakGlass.Allowed {
			p.BreakGlass = cp.BreakGlass.MaxDurationValue
		}
		if p.AutoApprove != "" {
			path := fmt.Sprintf("policies.%d.auto_approve", i)
			ast, iss := env.Compile(p.AutoApprove)
			if iss.Err() != nil {
				return nil, cfg.Errorf(path, "%s", celIssues(iss))
			}
			if ast.OutputType() != cel.BoolType {
				return nil, cfg.Errorf(path, "condition must be a bool, not %s", ast.OutputType())
			}
			if p.program, err = env.Program(ast, cel.EvalOptions(cel.OptOptimize)); err != nil {
				return nil, cfg.Errorf(path, "%v", err)
			}
		}
		s.policies = append(s.policies, p)
	}
	return s, nil
}

// Policies returns the policies in file order.
func (s *Set) Policies() []*Policy { return s.policies }

// Policy returns the named policy, or nil.
func (s *Set) Policy(name string) *Policy {
	for _, p := range s.policies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Resource returns the named resource, or nil.
func (s *Set) Resource(name string) *jitgate.Resource { return s.resources[name] }

// Resources returns every resource in file order.
func (s *Set) Resources() []*jitgate.Resource {
	out := make([]*jitgate.Resource, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.resources[n])
	}
	return out
}

// IsAdmin reports whether the named user is an admin.
func (s *Set) IsAdmin(name string) bool { return slices.Contains(s.admins, name) }

// covers reports whether p's requesters, resources and roles match.
func (p *Policy) covers(u *jitgate.User, resource, role string) bool {
	return p.IsRequester(u) && matches(p.Resources, resource) && matches(p.Roles, role)
}

// IsRequester reports whether u is among the policy's requesters. People match by user and
// group; agents only by name (or "*") under requesters.agents.
func (p *Policy) IsRequester(u *jitgate.User) bool {
	if u.IsAgent() {
		return slices.Contains(p.Requesters.Agents, u.Name) || slices.Contains(p.Requesters.Agents, "*")
	}
	return slices.Contains(p.Requesters.Users, u.Name) || slices.ContainsFunc(p.Requesters.Groups, u.InGroup)
}

func matches(list []string, name string) bool {
	return slices.Contains(list, name) || slices.Contains(list, "*")
}

// Match returns the first policy, in file order, whose requesters, resources and roles match.
// It returns ENOTFOUND for an unknown resource or role and EFORBIDDEN when no policy matches.
func (s *Set) Match(u *jitgate.User, resource, role string) (*Policy, error) {
	res := s.resources[resource]
	if res == nil {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "unknown resource %q", resource)
	}
	if res.Role(role) == nil {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "resource %q has no role %q", resource, role)
	}
	for _, p := range s.policies {
		if p.covers(u, resource, role) {
			return p, nil
		}
	}
	return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "no policy lets %s request %s/%s", u.Name, resource, role)
}

// Input is what a policy decides on.
type Input struct {
	Requester  *jitgate.User
	Resource   string
	Role       string
	Duration   time.Duration
	Reason     string
	Start      time.Time // zero: as soon as approved
	BreakGlass bool
	Extension  bool
	Now        time.Time
}

// MaxReasonLen caps a request's reason, in characters (Unicode code points).
const MaxReasonLen = 2000

// Check validates in against the policy: duration within the cap (the break-glass cap for
// break-glass), reason present where required (always for break-glass), break-glass allowed,
// start not in the past. Errors are EINVALID or EFORBIDDEN with a message naming the rule.
func (p *Policy) Check(in Input) error {
	if in.Duration <= 0 {
		return jitgate.Errorf(jitgate.EINVALID, "duration must be positive")
	}
	if n := utf8.RuneCountInString(in.Reason); n > MaxReasonLen {
		return jitgate.Errorf(jitgate.EINVALID, "reason is %d characters long; the limit is %d", n, MaxReasonLen)
	}
	noReason := strings.TrimSpace(in.Reason) == ""
	if in.BreakGlass {
		if p.BreakGlass == 0 {
			return jitgate.Errorf(jitgate.EFORBIDDEN, "policy %s does not allow break-glass", p.Name)
		}
		if noReason {
			return jitgate.Errorf(jitgate.EINVALID, "break-glass needs a reason")
		}
		if !in.Start.IsZero() {
			return jitgate.Errorf(jitgate.EINVALID, "break-glass starts at once; it takes no start time")
		}
		if in.Duration > p.BreakGlass {
			return jitgate.Errorf(jitgate.EINVALID, "duration %s exceeds policy %s's break-glass maximum of %s", fd(in.Duration), p.Name, fd(p.BreakGlass))
		}
		return nil
	}
	if in.Duration > p.MaxDuration {
		return jitgate.Errorf(jitgate.EINVALID, "duration %s exceeds policy %s's maximum of %s", fd(in.Duration), p.Name, fd(p.MaxDuration))
	}
	if p.RequireReason && noReason {
		return jitgate.Errorf(jitgate.EINVALID, "policy %s requires a reason", p.Name)
	}
	if !in.Start.IsZero() && in.Start.Before(in.Now.Add(-time.Minute)) {
		return jitgate.Errorf(jitgate.EINVALID, "start %s is in the past", in.Start.UTC().Format(time.RFC3339))
	}
	return nil
}

// AutoApproved evaluates the policy's auto-approval condition. A policy without one, and a
// break-glass request, is never auto-approved. An evaluation error (e.g. a missing group) is
// returned, and callers treat it as "not approved": the request then waits for people.
func (p *Policy) AutoApproved(in Input) (bool, error) {
	if p.program == nil || in.BreakGlass {
		return false, nil
	}
	groups := in.Requester.Groups
	if groups == nil {
		groups = []string{}
	}
	out, _, err := p.program.Eval(map[string]any{
		"request": Request{
			Resource: in.Resource, Role: in.Role, Duration: in.Duration, Reason: in.Reason,
			Start: in.Start, BreakGlass: in.BreakGlass, Extension: in.Extension,
		},
		"requester": Requester{Name: in.Requester.Name, Groups: groups, Kind: in.Requester.KindName(), Owner: in.Requester.Owner},
		"now":       in.Now,
	})
	if err != nil {
		return false, fmt.Errorf("policy %s: auto_approve: %w", p.Name, err)
	}
	b, ok := out.Value().(bool)
	return ok && b, nil
}

// CanApprove reports whether u may approve at step (0-based) of a request by requester, whose
// owner is owner (empty when a person asked). The requester never approves their own request,
// and an agent never approves anything.
func (p *Policy) CanApprove(u *jitgate.User, requester, owner string, step int) bool {
	if u.Name == requester || step < 0 || step >= len(p.Steps) {
		return false
	}
	return p.Steps[step].Has(u, owner)
}

// IsApprover reports whether u is an approver at any step through the users and groups the
// policy names (an owner's right to approve is per request; see IsApproverFor).
func (p *Policy) IsApprover(u *jitgate.User) bool { return p.IsApproverFor(u, "") }

// IsApproverFor reports whether u is an approver at any step of a request whose requester's
// owner is owner.
func (p *Policy) IsApproverFor(u *jitgate.User, owner string) bool {
	for i := range p.Steps {
		if p.Steps[i].Has(u, owner) {
			return true
		}
	}
	return false
}

// celIssues formats CEL compile errors on one line each: "column N: message".
func celIssues(iss *cel.Issues) string {
	var msgs []string
	for _, e := range iss.Errors() {
		msgs = append(msgs, fmt.Sprintf("column %d: %s", e.Location.Column()+1, e.Message))
	}
	return strings.Join(msgs, "; ")
}

func fd(d time.Duration) string { return jitgate.FormatDuration(d) }
