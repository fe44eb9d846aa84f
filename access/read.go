package access

import (
	"context"

	"github.com/jitgate/jitgate"
)

// GetRequest returns a request the caller may see; see jitgate.AccessService.
func (e *Engine) GetRequest(ctx context.Context, id int64) (*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	var r *jitgate.Request
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		r, err = tx.GetRequest(id, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !e.canSee(u, r.Requester, e.pol.Policy(r.Policy)) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "request %d not found", id)
	}
	return r, nil
}

// GetGrant returns a grant the caller may see; see jitgate.AccessService.
func (e *Engine) GetGrant(ctx context.Context, id int64) (*jitgate.Grant, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	var g *jitgate.Grant
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		g, err = tx.GetGrant(id, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !e.canSee(u, g.User, e.pol.Policy(g.Policy)) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "grant %d not found", id)
	}
	return g, nil
}

// RequestQuery selects requests for ListRequests.
type RequestQuery struct {
	State jitgate.RequestState
	// Mine selects the caller's own requests.
	Mine bool
	// ToReview selects requests the caller may review now: pending at a step they approve
	// (and have not reviewed), or break-glass requests awaiting their after-the-fact review.
	ToReview bool
	Limit    int
}

// ListRequests returns the requests the caller may see that match q, newest first.
func (e *Engine) ListRequests(ctx context.Context, q RequestQuery) ([]*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	f := jitgate.RequestFilter{State: q.State, Limit: q.Limit}
	if q.Mine {
		f.Requester = u.Name
	}
	var rs []*jitgate.Request
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		if !q.ToReview {
			rs, err = tx.ListRequests(f)
			return err
		}
		// The inbox: pending requests (index requests_state_expires) and open break-glass
		// reviews (index requests_post_review), filtered by eligibility here.
		f.State = jitgate.RequestPending
		if rs, err = tx.ListRequests(f); err != nil {
			return err
		}
		post, err := tx.ListRequests(jitgate.RequestFilter{PostReviewOpen: true, Requester: f.Requester})
		rs = append(rs, post...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := rs[:0]
	for _, r := range rs {
		pol := e.pol.Policy(r.Policy)
		if !e.canSee(u, r.Requester, pol) {
			continue
		}
		if q.ToReview && !e.awaits(u, r) {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// awaits reports whether r is waiting for u's review.
func (e *Engine) awaits(u *jitgate.User, r *jitgate.Request) bool {
	pol := e.pol.Policy(r.Policy)
	if pol == nil || u.Name == r.Requester {
		return false
	}
	if r.State == jitgate.RequestApproved && r.PostReviewOpen {
		return pol.IsApprover(u)
	}
	if r.State != jitgate.RequestPending || !pol.CanApprove(u, r.Requester, r.Step) {
		return false
	}
	for _, rv := range r.Reviews {
		if rv.Reviewer == u.Name && !rv.PostHoc {
			return false
		}
	}
	return true
}

// GrantQuery selects grants for ListGrants.
type GrantQuery struct {
	// Active selects live (scheduled and active) grants.
	Active   bool
	Mine     bool
	Resource string
	Limit    int
}

// ListGrants returns the grants the caller may see that match q, newest first.
func (e *Engine) ListGrants(ctx context.Context, q GrantQuery) ([]*jitgate.Grant, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	f := jitgate.GrantFilter{Live: q.Active, Resource: q.Resource, Limit: q.Limit}
	if q.Mine {
		f.User = u.Name
	}
	var gs []*jitgate.Grant
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		gs, err = tx.ListGrants(f)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := gs[:0]
	for _, g := range gs {
		if e.canSee(u, g.User, e.pol.Policy(g.Policy)) {
			out = append(out, g)
		}
	}
	return out, nil
}
