package jitgate

import "time"

// RequestState is where a request is in its life.
type RequestState string

// Request states. A request starts pending and ends in exactly one of the other four.
const (
	RequestPending   RequestState = "pending"
	RequestApproved  RequestState = "approved"
	RequestDenied    RequestState = "denied"
	RequestCancelled RequestState = "cancelled"
	RequestTimedOut  RequestState = "timed_out"
)

// Valid reports whether s is a known request state.
func (s RequestState) Valid() bool {
	switch s {
	case RequestPending, RequestApproved, RequestDenied, RequestCancelled, RequestTimedOut:
		return true
	}
	return false
}

// CanTransition reports whether a request may move from s to next. Only pending requests move;
// every other state is final.
func (s RequestState) CanTransition(next RequestState) bool {
	return s == RequestPending && next != RequestPending && next.Valid()
}

// Request is one ask for one role on one resource for a bounded time.
type Request struct {
	ID        int64  `json:"id"`
	Requester string `json:"requester"`
	// RequesterOwner is the owner of an agent requester, as it was when the request was
	// filed; empty when a person asked.
	RequesterOwner string        `json:"requester_owner,omitempty"`
	Resource       string        `json:"resource"`
	Role           string        `json:"role"`
	Duration       time.Duration `json:"duration"`
	Reason         string        `json:"reason"`
	// StartAt is the requested start; zero means "as soon as approved".
	StartAt time.Time `json:"start_at,omitzero"`
	// BreakGlass marks an emergency request that activated without prior approval.
	BreakGlass bool `json:"break_glass,omitempty"`
	// ExtendsGrant, when non-zero, makes this an extension request: its approval moves that
	// grant's end by Duration.
	ExtendsGrant int64 `json:"extends_grant,omitempty"`

	State RequestState `json:"state"`
	// Policy is the name of the policy that decided this request.
	Policy string `json:"policy"`
	// Step is the index of the approval step the request is waiting on (0-based).
	Step int `json:"step"`
	// Steps is how many approval steps the policy requires.
	Steps int `json:"steps"`

	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when a pending request times out (the policy's pending TTL).
	ExpiresAt time.Time `json:"expires_at"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// DecidedBy names who or what decided: an approver, "jitgate" (automatic approval,
	// time-out) or the requester (cancel, break-glass).
	DecidedBy string `json:"decided_by,omitempty"`
	// DecisionNote says why it ended as it did, e.g. "auto-approved by policy engineers-read".
	DecisionNote string `json:"decision_note,omitempty"`
	// PostReviewOpen is true for a break-glass request until an approver reviews it after the
	// fact.
	PostReviewOpen bool `json:"post_review_open,omitempty"`
	// GrantID is the grant this request created or extended, once approved.
	GrantID int64 `json:"grant_id,omitempty"`

	Reviews []*Review `json:"reviews,omitempty"`

	// Version increases with every update; the store uses it to refuse lost updates.
	Version int64 `json:"-"`
}

// Decision is an approver's answer.
type Decision string

// Decisions.
const (
	Approve Decision = "approve"
	Deny    Decision = "deny"
)

// Review is one approver's approve or deny, with a comment.
type Review struct {
	ID        int64     `json:"id"`
	RequestID int64     `json:"request_id"`
	Reviewer  string    `json:"reviewer"`
	Step      int       `json:"step"`
	Decision  Decision  `json:"decision"`
	Comment   string    `json:"comment,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// PostHoc marks the after-the-fact review of a break-glass request.
	PostHoc bool `json:"post_hoc,omitempty"`
}

// GrantState is where a grant is in its life.
type GrantState string

// Grant states: scheduled → active → expired | revoked; a scheduled grant may also be revoked
// before it starts, or expire without activating if its whole window passed while jitgate was
// down.
const (
	GrantScheduled GrantState = "scheduled"
	GrantActive    GrantState = "active"
	GrantExpired   GrantState = "expired"
	GrantRevoked   GrantState = "revoked"
)

// Valid reports whether s is a known grant state.
func (s GrantState) Valid() bool {
	switch s {
	case GrantScheduled, GrantActive, GrantExpired, GrantRevoked:
		return true
	}
	return false
}

// Live reports whether a grant in state s has not ended yet.
func (s GrantState) Live() bool { return s == GrantScheduled || s == GrantActive }

// CanTransition reports whether a grant may move from s to next.
func (s GrantState) CanTransition(next GrantState) bool {
	switch s {
	case GrantScheduled:
		return next == GrantActive || next == GrantExpired || next == GrantRevoked
	case GrantActive:
		return next == GrantExpired || next == GrantRevoked
	}
	return false
}

// ProvisionState says whether a grant's target matches its state.
type ProvisionState string

// Provisioning states. Granting and revoking are work still to do (retried with backoff until
// they succeed); granted and revoked are done; none means the resource has no provisioner.
const (
	ProvisionStateNone     ProvisionState = "none"
	ProvisionStateGranting ProvisionState = "granting"
	ProvisionStateGranted  ProvisionState = "granted"
	ProvisionStateRevoking ProvisionState = "revoking"
	ProvisionStateRevoked  ProvisionState = "revoked"
)

// RequesterLabel names the requester for people to read: "triage-bot (agent of alice)" for an
// agent, the plain name for a person.
func (r *Request) RequesterLabel() string { return agentLabel(r.Requester, r.RequesterOwner) }

// HolderLabel names the grant's holder as RequesterLabel does.
func (g *Grant) HolderLabel() string { return agentLabel(g.User, g.Owner) }

// Answerable lists who hears of r's decision: its requester and, for an agent, its owner.
func (r *Request) Answerable() []string { return withOwner(r.Requester, r.RequesterOwner) }

// Holders lists who hears of g: its holder and, for an agent's grant, the agent's owner.
func (g *Grant) Holders() []string { return withOwner(g.User, g.Owner) }

func withOwner(name, owner string) []string {
	if owner != "" {
		return []string{name, owner}
	}
	return []string{name}
}

func agentLabel(name, owner string) string {
	if owner == "" {
		return name
	}
	return name + " (agent of " + owner + ")"
}

// Grant is the time-bound access an approved request creates.
type Grant struct {
	ID        int64  `json:"id"`
	RequestID int64  `json:"request_id"`
	User      string `json:"user"`
	// Owner is the owner of an agent holder (from its request); empty for a person.
	Owner      string     `json:"owner,omitempty"`
	Resource   string     `json:"resource"`
	Role       string     `json:"role"`
	Policy     string     `json:"policy"`
	State      GrantState `json:"state"`
	BreakGlass bool       `json:"break_glass,omitempty"`

	// StartsAt is when the grant activates (or activated); EndsAt when it ends. EndsAt moves
	// when an extension is approved.
	StartsAt    time.Time `json:"starts_at"`
	EndsAt      time.Time `json:"ends_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	// EndReason says why the grant ended: "expired", or the revoker's reason.
	EndReason string `json:"end_reason,omitempty"`
	// EndedBy names who revoked it, or "jitgate" for expiry.
	EndedBy    string `json:"ended_by,omitempty"`
	Extensions int    `json:"extensions,omitempty"`

	Provision ProvisionStatus `json:"provision"`

	// Version increases with every update; the store uses it to refuse lost updates.
	Version int64 `json:"-"`
}

// ProvisionStatus is the state of a grant's provisioning, with the last failure while the
// provisioner keeps retrying.
type ProvisionStatus struct {
	State    ProvisionState `json:"state"`
	Attempts int            `json:"attempts,omitempty"`
	// LastError is the provisioner's last error message while it is failing.
	LastError string `json:"last_error,omitempty"`
	// NextAt is when the next attempt is due; zero when there is nothing to do.
	NextAt time.Time `json:"next_at,omitzero"`
	// VerifiedAt is when the provisioner re-read the target after revoking and found the access
	// gone; Receipt says what it checked. Both are empty for provisioners that cannot verify.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	Receipt    string    `json:"receipt,omitempty"`
	// ClaimedBy is the server instance running the current attempt (its lease runs to
	// NextAt); empty when no attempt is running. Another instance takes the attempt over at
	// once when that instance is found dead.
	ClaimedBy string `json:"-"`
}

// TimeToRevoke is how long the access outlived the grant: from the moment it should have
// ended (its scheduled end, or the revocation if that came first) to the verified removal.
// A grant that ended while jitgate was down counts the downtime. It is zero until the
// revocation is verified.
func (g *Grant) TimeToRevoke() time.Duration {
	if g.Provision.VerifiedAt.IsZero() || g.EndedAt.IsZero() {
		return 0
	}
	return g.Provision.VerifiedAt.Sub(g.StopAt())
}

// StopAt is when the grant's access should have stopped: its scheduled end, or its
// revocation if that came first.
func (g *Grant) StopAt() time.Time {
	if !g.EndedAt.IsZero() && g.EndedAt.Before(g.EndsAt) {
		return g.EndedAt
	}
	return g.EndsAt
}

// Remaining returns how long the grant has left at now, zero if it has ended.
func (g *Grant) Remaining(now time.Time) time.Duration {
	if !g.State.Live() || !now.Before(g.EndsAt) {
		return 0
	}
	return g.EndsAt.Sub(now)
}
