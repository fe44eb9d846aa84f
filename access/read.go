package access

import (
	"cmp"
	"context"
	"slices"

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
	if !e.canSee(u, r.Requester, r.RequesterOwner, e.pol.Policy(r.Policy)) {
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
	if !e.canSee(u, g.User, g.Owner, e.pol.Policy(g.Policy)) {
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

// ListRequests returns the requests the caller may see that match q, newest first. What the
// caller may see is part of the query, so a limit counts only those; the inbox (ToReview) is
// read page by page until it has q.Limit requests that await the caller or none are left.
func (e *Engine) ListRequests(ctx context.Context, q RequestQuery) ([]*jitgate.Request, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	f := jitgate.RequestFilter{State: q.State, Limit: q.Limit, Visible: e.visibility(u)}
	if q.Mine {
		f.Requester = u.Name
	}
	if !q.ToReview {
		var rs []*jitgate.Request
		err = e.store.View(ctx, func(tx jitgate.Tx) (err error) {
			rs, err = tx.ListRequests(f)
			return err
		})
		return rs, err
	}
	// The inbox: requests under the policies the caller approves for, not their own, pending
	// (index requests_state_expires) or with an open break-glass review
	// (index requests_post_review); which step the caller may approve is checked here.
	// The requests of the agents the caller answers for come from their own index, whatever
	// policies the caller approves for (a step may name the requester's owner).
	if u.IsAgent() {
		return []*jitgate.Request{}, nil
	}
	want := f.Limit
	if want <= 0 {
		want = defaultListLimit
	}
	sels := []jitgate.RequestFilter{{State: jitgate.RequestPending, RequesterOwner: u.Name, Requester: f.Requester, Limit: want}}
	if approves := e.approverPolicies(u); len(approves) > 0 {
		sels = append(sels,
			jitgate.RequestFilter{State: jitgate.RequestPending, Policies: approves, NotRequester: u.Name, Requester: f.Requester, Limit: want},
			jitgate.RequestFilter{PostReviewOpen: true, Policies: approves, NotRequester: u.Name, Requester: f.Requester, Limit: want})
	}
	out := []*jitgate.Request{}
	seen := map[int64]bool{}
	for _, sel := range sels {
		for len(out) < want {
			var page []*jitgate.Request
			err := e.store.View(ctx, func(tx jitgate.Tx) (err error) {
				page, err = tx.ListRequests(sel)
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, r := range page {
				if len(out) < want && !seen[r.ID] && e.awaits(u, r) {
					seen[r.ID] = true
					out = append(out, r)
				}
			}
			if len(page) < sel.Limit {
				break
			}
			sel.BeforeID = page[len(page)-1].ID
		}
	}
	slices.SortFunc(out, func(a, b *jitgate.Request) int { return cmp.Compare(b.ID, a.ID) })
	return out, nil
}

// defaultListLimit is the store's default limit (jitgate.RequestFilter.Limit).
const defaultListLimit = 1000

// visibility is what u may see in listings: nil (everything) for an admin; otherwise their own
// and what the policies they approve for cover.
func (e *Engine) visibility(u *jitgate.User) *jitgate.Visibility {
	if e.isAdmin(u) {
		return nil
	}
	return &jitgate.Visibility{Owner: u.Name, Policies: e.approverPolicies(u)}
}

// approverPolicies names the policies u approves for (at any step).
func (e *Engine) approverPolicies(u *jitgate.User) []string {
	var names []string
	for _, p := range e.pol.Policies() {
		if p.IsApprover(u) {
			names = append(names, p.Name)
		}
	}
	return names
}

// awaits reports whether r is waiting for u's review.
func (e *Engine) awaits(u *jitgate.User, r *jitgate.Request) bool {
	pol := e.pol.Policy(r.Policy)
	if pol == nil || u.Name == r.Requester {
		return false
	}
	if r.State == jitgate.RequestApproved && r.PostReviewOpen {
		return pol.IsApproverFor(u, r.RequesterOwner)
	}
	if r.State != jitgate.RequestPending || !pol.CanApprove(u, r.Requester, r.RequesterOwner, r.Step) {
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
	f := jitgate.GrantFilter{Live: q.Active, Resource: q.Resource, Limit: q.Limit, Visible: e.visibility(u)}
	if q.Mine {
		f.User = u.Name
	}
	var gs []*jitgate.Grant
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		gs, err = tx.ListGrants(f)
		return err
	})
	return gs, err
}
