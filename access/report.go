package access

import (
	"context"
	"slices"

	"github.com/jitgate/jitgate"
)

// StandingAccessReport is one resource's part of the standing-access report.
type StandingAccessReport struct {
	Resource string                    `json:"resource"`
	Kind     string                    `json:"kind"`
	Accounts []jitgate.StandingAccount `json:"accounts"`
	// Error says why the resource could not be read; the other resources are still reported.
	Error string `json:"error,omitempty"`
}

// StandingAccess reports, for resource (or every resource if empty), each login that jitgate
// does not manage, with its effective privileges and flags for the dangerous ones. It reads the
// targets with the resources' admin credentials and changes nothing. Admins only.
func (e *Engine) StandingAccess(ctx context.Context, resource string) ([]StandingAccessReport, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	if !e.isAdmin(u) {
		return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "only admins may read the standing-access report")
	}
	if resource != "" && e.pol.Resource(resource) == nil {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "resource %s not found", resource)
	}
	var out []StandingAccessReport
	for _, res := range e.pol.Resources() {
		if resource != "" && res.Name != resource {
			continue
		}
		rep, ok := e.provs[res.Name].(jitgate.StandingAccessReporter)
		if !ok {
			if resource != "" {
				return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s (%s) has no admin credentials jitgate can read it with", res.Name, res.Kind)
			}
			continue
		}
		r := StandingAccessReport{Resource: res.Name, Kind: res.Kind}
		if r.Accounts, err = rep.StandingAccess(ctx); err != nil {
			r.Error = err.Error()
		}
		slices.SortFunc(r.Accounts, func(a, b jitgate.StandingAccount) int {
			// Most dangerous first, then by name.
			if d := len(b.Flags) - len(a.Flags); d != 0 {
				return d
			}
			if a.Name < b.Name {
				return -1
			}
			return 1
		})
		out = append(out, r)
	}
	return out, nil
}
