package postgres

import (
	"net/url"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
)

// Catalog finds resources by name.
type Catalog interface {
	Resource(name string) *jitgate.Resource
}

// LoginFunc returns the login of the ephemeral account provisioned for a grant (see
// access.Engine.ProvisionedLogin).
type LoginFunc func(g *jitgate.Grant) (*jitgate.Login, error)

// ConfigUpstream returns an UpstreamFunc that logs in to a grant's resource with the grant's
// own ephemeral user where its role has `provision: ephemeral` (so every grant has its own
// identity in PostgreSQL's logs; logins may be nil if no role does), and otherwise with the
// login configured as the role's upstream. It uses the resource's sslmode (prefer if unset).
// It never logs in as a more privileged user and narrows with SET ROLE: the client could undo
// that.
func ConfigUpstream(cat Catalog, logins LoginFunc) UpstreamFunc {
	return func(g *jitgate.Grant) (*pgconn.Config, error) {
		res := cat.Resource(g.Resource)
		if res == nil || res.Kind != jitgate.KindPostgres {
			return nil, jitgate.Errorf(jitgate.ENOTFOUND, "%s is not a PostgreSQL resource", g.Resource)
		}
		role := res.Role(g.Role)
		var user, password string
		switch {
		case role != nil && role.Provision == jitgate.ProvisionEphemeral && logins != nil:
			login, err := logins(g)
			if err != nil {
				return nil, err
			}
			user, password = login.User, login.Password
		case role == nil || role.Upstream == nil:
			return nil, jitgate.Errorf(jitgate.EINVALID, "role %s/%s has no upstream login configured", g.Resource, g.Role)
		default:
			var err error
			if password, err = config.LoadPassword(*role.Upstream); err != nil {
				return nil, err
			}
			user = role.Upstream.User
		}
		u := &url.URL{Scheme: "postgres", Host: res.Address, Path: "/" + res.Database, User: url.User(user)}
		sslmode := res.SSLMode
		if sslmode == "" {
			sslmode = "prefer"
		}
		u.RawQuery = url.Values{"sslmode": {sslmode}, "connect_timeout": {"10"}}.Encode()
		cfg, err := pgconn.ParseConfig(u.String())
		if err != nil {
			return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: invalid address %q", res.Name, res.Address)
		}
		cfg.Password = password
		return cfg, nil
	}
}
