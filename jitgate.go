// Package jitgate holds jitgate's domain: the types (users, resources, roles, requests, reviews,
// grants, audit events), their states and legal transitions, the service and storage interfaces
// the other packages implement, and the Error type. It does no I/O.
//
// The rest of the module depends inward on this package: config/ decodes the YAML file,
// policy/ compiles policies, access/ runs the lifecycle, store/ persists it, audit/ verifies
// the hash chain, and cmd/jitgate wires them together.
package jitgate

import (
	"context"
	"regexp"
	"slices"
	"time"
)

// User is a person, CI job or agent known to jitgate, with the groups it belongs to.
type User struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	// Kind is PrincipalUser (a person; the zero value means the same) or PrincipalAgent.
	Kind string `json:"kind,omitempty"`
	// Owner is the person who answers for an agent; empty for a person.
	Owner string `json:"owner,omitempty"`
	// trust is set only by NewSystemContext and NewOperatorContext: no token, login or
	// struct literal outside this package can make a caller jitgate itself or an operator.
	trust trust
}

type trust uint8

const (
	trustNone     trust = iota
	trustOperator       // an operator with the config and the store at hand
	trustSystem         // jitgate itself
)

// SystemActor is the name jitgate itself acts under, in audit events and as the caller of
// NewSystemContext.
const SystemActor = "jitgate"

// NewSystemContext returns ctx carrying jitgate itself as the caller: the calls the system
// makes on its own (the scheduler, the reconciler, the notifier's listings, the web UI's and
// OIDC's sign-in). The caller counts as an admin, and it alone may start sign-in sessions and
// record identity-provider users.
func NewSystemContext(ctx context.Context) context.Context {
	return NewContext(ctx, &User{Name: SystemActor, trust: trustSystem})
}

// NewOperatorContext returns ctx carrying an operator acting through direct access to the
// config and the store (the CLI's --config mode, the dev server's own setup), not through the
// API: whoever can read the store can do as much. The operator counts as an admin.
func NewOperatorContext(ctx context.Context, name string) context.Context {
	return NewContext(ctx, &User{Name: name, trust: trustOperator})
}

// Principal kinds: what a User is.
const (
	PrincipalUser  = "user"
	PrincipalAgent = "agent"
)

// IsAgent reports whether u is an agent (an AI agent, bot or CI job with an owner): it may
// request and use access, and never approves, revokes others' grants or breaks glass.
func (u *User) IsAgent() bool { return u.Kind == PrincipalAgent }

// KindName is u's kind as policies see it: "user" or "agent".
func (u *User) KindName() string {
	if u.IsAgent() {
		return PrincipalAgent
	}
	return PrincipalUser
}

// IsSystem reports whether u is jitgate itself (see NewSystemContext).
func (u *User) IsSystem() bool { return u.trust == trustSystem }

// IsOperator reports whether u is jitgate itself or an operator with direct access to the
// config and the store (see NewOperatorContext): both count as admins.
func (u *User) IsOperator() bool { return u.trust >= trustOperator }

// InGroup reports whether u is a member of group.
func (u *User) InGroup(group string) bool { return slices.Contains(u.Groups, group) }

// Resource kinds.
const (
	KindPostgres = "postgres"
	KindMySQL    = "mysql"
	KindWebhook  = "webhook"
	// KindKubernetes is a Kubernetes cluster: roles bind ClusterRoles or Roles to a per-grant
	// subject, and kubectl goes through the Kubernetes gateway.
	KindKubernetes = "kubernetes"
)

// Secret names where a secret comes from; the value itself is never held in config.
type Secret struct {
	User         string `json:"user,omitempty"`
	PasswordEnv  string `json:"password_env,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
}

// Resource is a thing access is granted to, such as a database.
type Resource struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Address  string `json:"address,omitempty"`
	Database string `json:"database,omitempty"`
	// SSLMode is how jitgate connects to the resource (libpq's sslmode; empty means prefer).
	SSLMode string `json:"-"`
	// Credentials is how jitgate itself logs in to the resource (to provision users).
	Credentials Secret `json:"-"`
	// Owner receives what an ephemeral PostgreSQL user owned when it is dropped; empty means
	// the Credentials user.
	Owner string `json:"-"`
	// ConnectionLimit caps each ephemeral user's connections.
	ConnectionLimit int `json:"-"`
	// SigningSecret is the key webhook requests are signed with (only its source is held).
	SigningSecret Secret `json:"-"`
	// CAFile is the CA bundle a kubernetes resource's API server certificate is checked with
	// (empty: the system's roots).
	CAFile string `json:"-"`
	// Token is where jitgate's own bearer token for a kubernetes resource is read from
	// (PasswordEnv or PasswordFile); ClientCert and ClientKey are files of a client
	// certificate instead. That identity creates the grants' bindings and impersonates their
	// subjects.
	Token                 Secret `json:"-"`
	ClientCert, ClientKey string `json:"-"`
	Roles                 []Role `json:"roles"`
}

// Role returns the role with the given name, or nil.
func (r *Resource) Role(name string) *Role {
	for i := range r.Roles {
		if r.Roles[i].Name == name {
			return &r.Roles[i]
		}
	}
	return nil
}

// Provisioning modes of a role.
const (
	ProvisionNone      = ""          // access is enforced by the gateway alone
	ProvisionEphemeral = "ephemeral" // a jit_ user is created per grant and dropped at its end
)

// Role is a named, least-privilege permission set on a resource.
type Role struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Grants lists the target privileges (e.g. PostgreSQL roles) the role maps to.
	Grants []string `json:"grants"`
	// Provision says how the role is switched on in the target; see ProvisionNone and
	// ProvisionEphemeral.
	Provision string `json:"provision,omitempty"`
	// Upstream is the login the gateway injects for this role, if any.
	Upstream *Secret `json:"-"`
	// Namespaces are the Kubernetes namespaces a kubernetes role's grants (clusterrole/NAME or
	// role/NAME) are bound in; empty binds ClusterRoles cluster-wide.
	Namespaces []string `json:"namespaces,omitempty"`
}

// namePattern is what jitgate accepts for the names of users, groups, resources, roles and
// policies: short, lower-case, and safe to show and to embed in generated names.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.@-]{0,62}$`)

// ValidName reports whether s is acceptable as a user, group, resource, role or policy name:
// 1 to 63 characters of lower-case letters, digits, '_', '.', '@' and '-', starting with a
// letter or digit.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Clock tells the time and sleeps. Everything in jitgate whose behaviour depends on time takes
// a Clock, so tests move time instead of waiting for it.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed on this clock.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real wall clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// After is time.After.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
