package jitgate

import (
	"context"
	"time"
)

// Login is a database login handed to a grant's owner: where to connect and as whom. The
// password is shown to the owner only, while the grant is active.
type Login struct {
	// Kind is the resource kind (postgres or mysql), which decides the client to use.
	Kind     string `json:"kind"`
	Host     string `json:"host"`
	Port     string `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database"`
	// SSLMode is libpq's sslmode for PostgreSQL logins.
	SSLMode   string    `json:"sslmode,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CredentialIssuer is implemented by provisioners that create a login per grant.
type CredentialIssuer interface {
	// Login returns the login the provisioner creates for g. It does no I/O; the login works
	// only once the grant's provisioning state is granted.
	Login(g *Grant) (*Login, error)
}

// RevocationVerifier is implemented by provisioners that can prove a revoke took effect.
type RevocationVerifier interface {
	// VerifyRevoked re-reads the target after Revoke. It returns what it checked (the receipt,
	// e.g. "role jit_alice_7 absent; 0 connections") or an error naming what is still there.
	VerifyRevoked(ctx context.Context, g *Grant) (string, error)
}

// ManagedAccount is an account jitgate created in a target system for a grant.
type ManagedAccount struct {
	// Name is the account's name in the target (e.g. jit_alice_7).
	Name string `json:"name"`
	// GrantID is the grant the account was made for, read back from the target.
	GrantID int64 `json:"grant_id"`
	// Ref says where the account is when Name alone does not (a Kubernetes binding:
	// rolebinding/NAMESPACE/NAME); empty for database accounts.
	Ref string `json:"ref,omitempty"`
}

// Reconciler is implemented by provisioners that can list and remove the accounts they made,
// so the engine can repair drift after a crash, a restore or a hand edit.
type Reconciler interface {
	// ManagedAccounts lists every jitgate-managed account in the target.
	ManagedAccounts(ctx context.Context) ([]ManagedAccount, error)
	// RemoveAccount ends the account's connections and removes it; removing an account that is
	// already gone succeeds.
	RemoveAccount(ctx context.Context, a ManagedAccount) error
	// AccountFor returns the name of the account the provisioner makes for g.
	AccountFor(g *Grant) string
}

// StandingAccount is a login in a target system that jitgate does not manage: standing access,
// the starting point of least privilege.
type StandingAccount struct {
	Name string `json:"name"`
	// Attributes are account-wide powers, e.g. SUPERUSER, CREATEROLE, or MySQL global privileges.
	Attributes []string `json:"attributes,omitempty"`
	// MemberOf lists the roles the account holds (directly or inherited).
	MemberOf []string `json:"member_of,omitempty"`
	// TableGrants lists privileges granted to the account directly on tables or databases,
	// e.g. "SELECT on public.accounts".
	TableGrants []string `json:"table_grants,omitempty"`
	// Flags name what makes the account dangerous: superuser, createrole, createdb,
	// direct_table_grants, ...
	Flags []string `json:"flags,omitempty"`
}

// StandingAccessReporter is implemented by targets that can list their standing access.
type StandingAccessReporter interface {
	// StandingAccess lists every login in the target that jitgate does not manage, read-only.
	StandingAccess(ctx context.Context) ([]StandingAccount, error)
}

// Account flags in a standing-access report.
const (
	FlagSuperuser         = "superuser"
	FlagCreateRole        = "createrole"
	FlagCreateDB          = "createdb"
	FlagReplication       = "replication"
	FlagBypassRLS         = "bypassrls"
	FlagGrantOption       = "grant_option"
	FlagDirectTableGrants = "direct_table_grants"
)
