package policy

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/jitgate/jitgate"
)

// Explanation says how a request for a role would be decided.
type Explanation struct {
	User     string `json:"user"`
	Resource string `json:"resource"`
	Role     string `json:"role"`
	// MayRequest is false when no policy covers the user; Reason then says so.
	MayRequest bool   `json:"may_request"`
	Reason     string `json:"reason,omitempty"`
	Policy     string `json:"policy,omitempty"`
	// Requesters are the users (resolved from the policy's users and groups) who may request.
	Requesters    []string          `json:"requesters,omitempty"`
	MaxDuration   time.Duration     `json:"max_duration,omitempty"`
	PendingTTL    time.Duration     `json:"pending_ttl,omitempty"`
	RequireReason bool              `json:"require_reason,omitempty"`
	Steps         []StepExplanation `json:"steps,omitempty"`
	AutoApprove   string            `json:"auto_approve,omitempty"`
	// AutoApproved says whether a request of Duration by User now would be approved at once.
	AutoApproved bool          `json:"auto_approved"`
	Duration     time.Duration `json:"duration,omitempty"`
	BreakGlass   time.Duration `json:"break_glass_max,omitempty"`
}

// MarshalJSON renders durations as strings such as "4h".
func (ex Explanation) MarshalJSON() ([]byte, error) {
	type plain Explanation
	return json.Marshal(struct {
		plain
		MaxDuration string `json:"max_duration,omitempty"`
		PendingTTL  string `json:"pending_ttl,omitempty"`
		Duration    string `json:"duration,omitempty"`
		BreakGlass  string `json:"break_glass_max,omitempty"`
	}{plain(ex), fmtDur(ex.MaxDuration), fmtDur(ex.PendingTTL), fmtDur(ex.Duration), fmtDur(ex.BreakGlass)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (ex *Explanation) UnmarshalJSON(b []byte) error {
	type plain Explanation
	var v struct {
		*plain
		MaxDuration string `json:"max_duration,omitempty"`
		PendingTTL  string `json:"pending_ttl,omitempty"`
		Duration    string `json:"duration,omitempty"`
		BreakGlass  string `json:"break_glass_max,omitempty"`
	}
	v.plain = (*plain)(ex)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	for _, f := range []struct {
		s string
		d *time.Duration
	}{{v.MaxDuration, &ex.MaxDuration}, {v.PendingTTL, &ex.PendingTTL}, {v.Duration, &ex.Duration}, {v.BreakGlass, &ex.BreakGlass}} {
		if f.s == "" {
			continue
		}
		d, err := jitgate.ParseDuration(f.s)
		if err != nil {
			return err
		}
		*f.d = d
	}
	return nil
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return jitgate.FormatDuration(d)
}

// StepExplanation lists a step's approvers and the users who qualify (the requester excluded).
type StepExplanation struct {
	Min    int      `json:"min"`
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// Owner says the requester's owner approves at this step too.
	Owner    bool     `json:"owner,omitempty"`
	Eligible []string `json:"eligible"`
}

// Explain says how the policy set decides a request by u for resource/role of duration d
// (the policy's maximum when d is zero) at now, resolving groups against users.
func (s *Set) Explain(u *jitgate.User, users []*jitgate.User, resource, role string, d time.Duration, now time.Time) (*Explanation, error) {
	ex := &Explanation{User: u.Name, Resource: resource, Role: role}
	p, err := s.Match(u, resource, role)
	if jitgate.ErrorCode(err) == jitgate.EFORBIDDEN {
		ex.Reason = jitgate.ErrorMessage(err)
		return ex, nil
	}
	if err != nil {
		return nil, err
	}
	ex.MayRequest = true
	ex.Policy = p.Name
	ex.MaxDuration, ex.PendingTTL, ex.RequireReason = p.MaxDuration, p.PendingTTL, p.RequireReason
	ex.AutoApprove, ex.BreakGlass = p.AutoApprove, p.BreakGlass
	for _, x := range users {
		if p.IsRequester(x) {
			ex.Requesters = append(ex.Requesters, x.Name)
		}
	}
	for i := range p.Steps {
		st := &p.Steps[i]
		se := StepExplanation{Min: st.Min, Users: st.Users, Groups: st.Groups, Owner: st.Owner, Eligible: []string{}}
		for _, x := range users {
			if x.Name != u.Name && st.Has(x, u.Owner) {
				se.Eligible = append(se.Eligible, x.Name)
			}
		}
		slices.Sort(se.Eligible)
		ex.Steps = append(ex.Steps, se)
	}
	if d == 0 {
		d = p.MaxDuration
	}
	ex.Duration = d
	ex.AutoApproved, _ = p.AutoApproved(Input{Requester: u, Resource: resource, Role: role, Duration: d, Now: now})
	return ex, nil
}

// Requestable is one role a user may request, and the policy that covers it.
type Requestable struct {
	Resource    *jitgate.Resource
	Role        *jitgate.Role
	Policy      *Policy
	AutoApprove bool
}

// Requestable lists every resource role u may request, in config order.
func (s *Set) Requestable(u *jitgate.User) []Requestable {
	var out []Requestable
	for _, name := range s.order {
		res := s.resources[name]
		for i := range res.Roles {
			if p, err := s.Match(u, res.Name, res.Roles[i].Name); err == nil {
				out = append(out, Requestable{Resource: res, Role: &res.Roles[i], Policy: p, AutoApprove: p.AutoApprove != ""})
			}
		}
	}
	return out
}
