package access

import (
	"context"

	"github.com/jitgate/jitgate"
)

// Directory is the users jitgate knows: the static users of the config, and the users an
// identity provider vouched for at sign-in (recorded in the store with the groups it reported
// then, so policies that name IdP groups work for them). A static user wins over a recorded
// one of the same name.
type Directory struct {
	Static jitgate.Directory
	Store  jitgate.Store
}

var _ jitgate.Directory = (*Directory)(nil)

// LookupUser returns the named user, or an *Error with ENOTFOUND.
func (d *Directory) LookupUser(ctx context.Context, name string) (*jitgate.User, error) {
	u, err := d.Static.LookupUser(ctx, name)
	if jitgate.ErrorCode(err) != jitgate.ENOTFOUND {
		return u, err
	}
	err = d.Store.View(ctx, func(tx jitgate.Tx) error {
		u, err = tx.GetUser(name)
		return err
	})
	return u, err
}

// Users lists the static users, then the recorded ones.
func (d *Directory) Users(ctx context.Context) ([]*jitgate.User, error) {
	out, err := d.Static.Users(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, u := range out {
		seen[u.Name] = true
	}
	var recorded []*jitgate.User
	err = d.Store.View(ctx, func(tx jitgate.Tx) error {
		recorded, err = tx.ListUsers()
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, u := range recorded {
		if !seen[u.Name] {
			out = append(out, u)
		}
	}
	return out, nil
}

// RememberUser records u as an identity provider (source) reported it at sign-in. Only
// jitgate itself may call it (jitgate.NewSystemContext).
func (e *Engine) RememberUser(ctx context.Context, u *jitgate.User, source string) error {
	caller, err := e.caller(ctx)
	if err != nil {
		return err
	}
	if !caller.IsSystem() {
		return jitgate.Errorf(jitgate.EFORBIDDEN, "users are recorded by jitgate itself")
	}
	if !jitgate.ValidName(u.Name) {
		return jitgate.Errorf(jitgate.EINVALID, "%q is not a valid jitgate user name", u.Name)
	}
	return e.write(ctx, func(o *op) error { return o.tx.PutUser(u, source, o.now) })
}
