package mcp

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/policy"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tool names.
const (
	ToolListResources   = "list_resources"
	ToolRequestAccess   = "request_access"
	ToolWaitForDecision = "wait_for_decision"
	ToolListGrants      = "list_grants"
	ToolReleaseAccess   = "release_access"
	ToolQuery           = "query"
)

func (s *Server) addTools() {
	tool(s, ToolListResources, `List the database roles you may request: for each, the resource, its kind (postgres or mysql), the role and what it allows, the longest duration you may ask for, whether a reason is required, and who must approve (or the rule that approves automatically). Call this first, and pick the narrowest role that does the job.`,
		s.listResources)
	tool(s, ToolRequestAccess, `Ask for one role on one resource for a bounded time, with a reason a reviewer can check (a ticket or incident id and what you will do). Returns the request and its state: "approved" (with the grant) when a policy rule approved it at once, otherwise "pending" until people decide; then call wait_for_decision with the request_id. You cannot approve your own or anyone's request.`,
		s.requestAccess)
	tool(s, ToolWaitForDecision, `Wait until a pending request is decided (approved, denied, cancelled or timed out), or until timeout passes (default 1m, at most 10m), sending progress while it waits. Returns the request's state; when approved, the grant (its id, start and end). If it is still pending when the wait ends, call again or tell the user who must approve.`,
		s.waitForDecision)
	tool(s, ToolListGrants, `List your grants: active and scheduled ones by default (with their ends), also ended ones with include_ended. A query needs an active grant on its resource.`,
		s.listGrants)
	tool(s, ToolReleaseAccess, `Give a grant back now, when the work is done: the access ends at once, for every session. Pass the grant_id (from request_access, wait_for_decision or list_grants) and optionally why.`,
		s.releaseAccess)
	tool(s, ToolQuery, `Run one SQL statement on a resource through the jitgate gateway, under your active grant there, with that grant's rights only (a write under a read role fails with the database's error). Returns the column names and rows as text (NULL as null), cut at max_rows (default 100, at most 1000) and max_bytes of values (default 64 KiB, at most 1 MiB) with a note when cut; ask for less (LIMIT, fewer columns) rather than more. Every statement is audited under your name and your owner's. Without an active grant the call fails: use request_access first.`,
		s.query)
}

// ---- list_resources ----

// ListResourcesInput takes no arguments.
type ListResourcesInput struct{}

// ResourceRole is one role the caller may request.
type ResourceRole struct {
	Resource    string `json:"resource"`
	Kind        string `json:"kind" jsonschema:"postgres or mysql (or webhook)"`
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	MaxDuration string `json:"max_duration" jsonschema:"the longest duration you may request"`
	// RequireReason says a request without a reason is refused.
	RequireReason bool     `json:"require_reason"`
	Approval      []string `json:"approval" jsonschema:"who must approve, step by step"`
	AutoApprove   string   `json:"auto_approve,omitempty" jsonschema:"the rule (CEL) under which a request is approved at once"`
}

// ListResourcesOutput is what the caller may request.
type ListResourcesOutput struct {
	You       Principal      `json:"you"`
	Resources []ResourceRole `json:"resources"`
	Note      string         `json:"note,omitempty"`
}

// Principal is who the tools act as.
type Principal struct {
	Name  string `json:"name"`
	Kind  string `json:"kind" jsonschema:"user or agent"`
	Owner string `json:"owner,omitempty" jsonschema:"the person who answers for this agent"`
}

func (s *Server) listResources(ctx context.Context, _ *sdk.CallToolRequest, _ ListResourcesInput) (ListResourcesOutput, link, error) {
	w, err := s.o.Backend.Whoami(ctx)
	if err != nil {
		return ListResourcesOutput{}, link{}, err
	}
	rs, err := s.o.Backend.Resources(ctx)
	if err != nil {
		return ListResourcesOutput{}, link{}, err
	}
	out := ListResourcesOutput{You: Principal{Name: w.User, Kind: w.Kind, Owner: w.Owner}, Resources: []ResourceRole{}}
	for _, r := range rs {
		approval := r.Approval
		if approval == nil {
			approval = []string{}
		}
		out.Resources = append(out.Resources, ResourceRole{Resource: r.Resource, Kind: r.Kind, Role: r.Role,
			Description: r.Description, MaxDuration: r.MaxDuration, RequireReason: r.RequireReason,
			Approval: approval, AutoApprove: r.AutoApprove})
	}
	if len(out.Resources) == 0 {
		out.Note = "no policy lets you request anything; ask your owner or a jitgate admin"
	}
	return out, link{}, nil
}

// ---- request_access ----

// RequestAccessInput is one request.
type RequestAccessInput struct {
	Resource string `json:"resource" jsonschema:"the resource name, from list_resources"`
	Role     string `json:"role" jsonschema:"the role name, from list_resources"`
	Duration string `json:"duration" jsonschema:"how long, e.g. 15m or 1h; at most the role's max_duration; the clock starts at approval"`
	Reason   string `json:"reason" jsonschema:"why, for the reviewer: a ticket or incident id and what you will do"`
}

// RequestView is a request as the tools show it.
type RequestView struct {
	RequestID int64  `json:"request_id"`
	State     string `json:"state" jsonschema:"pending, approved, denied, cancelled or timed_out"`
	Resource  string `json:"resource"`
	Role      string `json:"role"`
	Duration  string `json:"duration"`
	Policy    string `json:"policy"`
	// Step is the approval step the request waits on (1-based), of Steps.
	Step         int        `json:"step,omitempty"`
	Steps        int        `json:"steps"`
	ExpiresAt    string     `json:"expires_at,omitempty" jsonschema:"when a pending request times out"`
	DecidedBy    string     `json:"decided_by,omitempty"`
	DecisionNote string     `json:"decision_note,omitempty"`
	Grant        *GrantView `json:"grant,omitempty"`
	Next         string     `json:"next" jsonschema:"what to do next"`
}

// GrantView is a grant as the tools show it.
type GrantView struct {
	GrantID   int64  `json:"grant_id"`
	Resource  string `json:"resource"`
	Role      string `json:"role"`
	State     string `json:"state" jsonschema:"scheduled, active, expired or revoked"`
	StartsAt  string `json:"starts_at"`
	EndsAt    string `json:"ends_at"`
	EndReason string `json:"end_reason,omitempty"`
}

func (s *Server) requestAccess(ctx context.Context, _ *sdk.CallToolRequest, in RequestAccessInput) (RequestView, link, error) {
	if err := checkName("resource", in.Resource); err != nil {
		return RequestView{}, link{}, err
	}
	if err := checkName("role", in.Role); err != nil {
		return RequestView{}, link{}, err
	}
	if strings.TrimSpace(in.Duration) == "" {
		return RequestView{}, link{}, toolErrorf("duration is required, e.g. 15m")
	}
	d, err := jitgate.ParseDuration(in.Duration)
	if err != nil || d <= 0 {
		return RequestView{}, link{}, toolErrorf("duration %q is not a duration: write e.g. 15m, 1h or 1h30m", clipText(in.Duration, 32))
	}
	if n := utf8.RuneCountInString(in.Reason); n > policy.MaxReasonLen {
		return RequestView{}, link{}, toolErrorf("reason is %d characters long; the limit is %d", n, policy.MaxReasonLen)
	}
	r, err := s.o.Backend.Submit(ctx, jitgate.NewRequest{Resource: in.Resource, Role: in.Role, Duration: d, Reason: in.Reason})
	if err != nil {
		return RequestView{}, link{}, err
	}
	v, ln, err := s.requestView(ctx, r)
	return v, ln, err
}

// requestView describes r, with its grant once approved, and what to do next.
func (s *Server) requestView(ctx context.Context, r *jitgate.Request) (RequestView, link, error) {
	v := RequestView{RequestID: r.ID, State: string(r.State), Resource: r.Resource, Role: r.Role,
		Duration: jitgate.FormatDuration(r.Duration), Policy: r.Policy, Steps: r.Steps,
		DecidedBy: r.DecidedBy, DecisionNote: r.DecisionNote}
	ln := link{request: r.ID, grant: r.GrantID}
	switch r.State {
	case jitgate.RequestPending:
		v.Step = r.Step + 1
		v.ExpiresAt = stamp(r.ExpiresAt)
		v.Next = fmt.Sprintf("pending approval (step %d of %d): call wait_for_decision with request_id %d", r.Step+1, r.Steps, r.ID)
	case jitgate.RequestApproved:
		if r.GrantID != 0 {
			g, err := s.o.Backend.GetGrant(ctx, r.GrantID)
			if err != nil {
				return v, ln, err
			}
			gv := grantView(g)
			v.Grant = &gv
		}
		v.Next = fmt.Sprintf("approved: run statements with query (resource %s); call release_access with grant_id %d when done", r.Resource, r.GrantID)
		if v.Grant != nil && v.Grant.State == string(jitgate.GrantScheduled) {
			v.Next = fmt.Sprintf("approved, starting at %s: query works from then on", v.Grant.StartsAt)
		}
	default:
		v.Next = fmt.Sprintf("%s: no access was given; do not retry the same request unchanged", r.State)
	}
	return v, ln, nil
}

func grantView(g *jitgate.Grant) GrantView {
	return GrantView{GrantID: g.ID, Resource: g.Resource, Role: g.Role, State: string(g.State),
		StartsAt: stamp(g.StartsAt), EndsAt: stamp(g.EndsAt), EndReason: g.EndReason}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// ---- wait_for_decision ----

// WaitInput names the request to wait on.
type WaitInput struct {
	RequestID int64  `json:"request_id" jsonschema:"the request_id from request_access"`
	Timeout   string `json:"timeout,omitempty" jsonschema:"how long to wait at most, e.g. 2m (default 1m, at most 10m)"`
}

func (s *Server) waitForDecision(ctx context.Context, req *sdk.CallToolRequest, in WaitInput) (RequestView, link, error) {
	if in.RequestID <= 0 {
		return RequestView{}, link{}, toolErrorf("request_id must be a positive request id, from request_access")
	}
	wait := DefaultWait
	if in.Timeout != "" {
		d, err := jitgate.ParseDuration(in.Timeout)
		if err != nil || d <= 0 || d > MaxWait {
			return RequestView{}, link{request: in.RequestID}, toolErrorf("timeout %q: want a duration from 1s to %s, e.g. 2m", clipText(in.Timeout, 32), jitgate.FormatDuration(MaxWait))
		}
		wait = d
	}
	var token any
	if req != nil && req.Params != nil {
		token = req.Params.GetProgressToken()
	}
	start := time.Now()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(s.o.PollInterval)
	defer tick.Stop()
	for {
		r, err := s.o.Backend.GetRequest(ctx, in.RequestID)
		if err != nil {
			return RequestView{}, link{request: in.RequestID}, err
		}
		if r.State != jitgate.RequestPending {
			return s.requestView(ctx, r)
		}
		if token != nil && req.Session != nil {
			waited := time.Since(start)
			_ = req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{ProgressToken: token,
				Progress: waited.Seconds(), Total: wait.Seconds(),
				Message: fmt.Sprintf("request %d waits for approval step %d of %d (%s waited)", r.ID, r.Step+1, r.Steps, waited.Round(time.Second))})
		}
		select {
		case <-ctx.Done():
			return RequestView{}, link{request: in.RequestID}, toolErrorf("the wait was cancelled; request %d is still pending", in.RequestID)
		case <-deadline.C:
			v, ln, err := s.requestView(ctx, r)
			v.Next = fmt.Sprintf("still pending after %s: call wait_for_decision again, or tell your user who must approve (policy %s, step %d of %d)",
				jitgate.FormatDuration(wait), r.Policy, r.Step+1, r.Steps)
			return v, ln, err
		case <-tick.C:
		}
	}
}

// ---- list_grants ----

// ListGrantsInput selects grants.
type ListGrantsInput struct {
	IncludeEnded bool `json:"include_ended,omitempty" jsonschema:"also list expired and revoked grants (the last 50)"`
}

// ListGrantsOutput lists grants, newest first.
type ListGrantsOutput struct {
	Grants []GrantView `json:"grants"`
}

func (s *Server) listGrants(ctx context.Context, _ *sdk.CallToolRequest, in ListGrantsInput) (ListGrantsOutput, link, error) {
	gs, err := s.o.Backend.ListGrants(ctx, access.GrantQuery{Mine: true, Active: !in.IncludeEnded, Limit: 50})
	if err != nil {
		return ListGrantsOutput{}, link{}, err
	}
	out := ListGrantsOutput{Grants: []GrantView{}}
	for _, g := range gs {
		out.Grants = append(out.Grants, grantView(g))
	}
	return out, link{}, nil
}

// ---- release_access ----

// ReleaseInput names the grant to give back.
type ReleaseInput struct {
	GrantID int64  `json:"grant_id" jsonschema:"the grant to end now"`
	Reason  string `json:"reason,omitempty" jsonschema:"why, e.g. done"`
}

func (s *Server) releaseAccess(ctx context.Context, _ *sdk.CallToolRequest, in ReleaseInput) (GrantView, link, error) {
	ln := link{grant: in.GrantID}
	if in.GrantID <= 0 {
		return GrantView{}, ln, toolErrorf("grant_id must be a positive grant id, from list_grants")
	}
	reason := strings.TrimSpace(in.Reason)
	if reason == "" {
		reason = "released by the agent"
	}
	g, err := s.o.Backend.Revoke(ctx, in.GrantID, reason)
	if err != nil {
		return GrantView{}, ln, err
	}
	s.forget(s.callerName(ctx), g.ID)
	return grantView(g), link{request: g.RequestID, grant: g.ID}, nil
}
