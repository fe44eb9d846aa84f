package jitgate

import (
	"context"
	"errors"
	"time"
)

// CredentialPrefix starts every session credential.
const CredentialPrefix = "jgs_"

// SessionCredential is a short-lived password for the gateway, bound to one grant. Only its
// hash is stored. It works only while its grant is active, so it never outlives the grant,
// extensions included.
type SessionCredential struct {
	ID        int64     `json:"id"`
	GrantID   int64     `json:"grant_id"`
	User      string    `json:"user"`
	Hash      string    `json:"-"` // HashCredential of the credential (HashToken before store migration 11)
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is the grant's end when the credential was minted.
	ExpiresAt time.Time `json:"expires_at"`
}

// Session is one connection through the gateway under a grant.
type Session struct {
	ID         int64  `json:"id"`
	GrantID    int64  `json:"grant_id"`
	User       string `json:"user"`
	Resource   string `json:"resource"`
	Role       string `json:"role"`
	ClientAddr string `json:"client_addr"`
	// Owner is the owner of an agent holder, from its grant; it is recorded in the
	// session.started audit event (sessions listed from the store leave it empty).
	Owner      string    `json:"owner,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	EndReason  string    `json:"end_reason,omitempty"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	Statements int64     `json:"statements"`
	// Instance is the server instance whose gateway runs the session: when that instance dies,
	// another ends the session in the store.
	Instance string `json:"instance,omitempty"`
}

// Instance is one running jitgate server process. Each registers itself in the store and
// keeps a heartbeat; the others take over the work of one found dead (its provisioning
// leases, its sessions).
type Instance struct {
	ID          string    `json:"id"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
}

// InstanceLiveness is what a store offers, beside heartbeats, to tell at once whether a
// server instance is still running: the instance holds a lock that its death releases (a
// PostgreSQL advisory lock on a connection of its own, a file lock beside a SQLite database).
type InstanceLiveness interface {
	// HoldInstance takes the instance's lock for as long as the process lives (release frees
	// it on a clean shutdown).
	HoldInstance(ctx context.Context, id string) (release func(), err error)
	// InstanceAlive reports whether another process holds id's lock.
	InstanceAlive(ctx context.Context, id string) (bool, error)
}

// SessionFilter selects sessions.
type SessionFilter struct {
	// Instance selects the sessions of one server instance.
	Instance string
	// Visible restricts the sessions to those of grants the caller may see.
	Visible *Visibility
	Live    bool
	User    string
	GrantID int64
	Limit   int
}

// Audit actions for gateway sessions.
const (
	ActionSessionStarted = "session.started"
	ActionSessionEnded   = "session.ended"
	// ActionSessionStatement is one statement per event (older gateways).
	ActionSessionStatement = "session.statement"
	// ActionSessionStatements records a batch of one session's statements (AuditEvent.Statements).
	ActionSessionStatements = "session.statements"
	ActionStatementsLost    = "session.statements_lost"
	ActionCredentialMinted  = "grant.credentials_minted"
	ActionSessionAuthFailed = "session.auth_failed"
)

// Reasons a gateway login fails (AuthFailure.Reason), as metrics and logs name them.
const (
	// AuthUnknownCredential: no such credential.
	AuthUnknownCredential = "unknown_credential"
	// AuthForeignCredential: a real credential presented under another user's name. The client
	// is told "unknown credential", so that a guess never learns it found a valid one.
	AuthForeignCredential = "foreign_credential"
	// AuthWrongResource: the credential is for another resource.
	AuthWrongResource = "wrong_resource"
	// AuthGrantEnded: the credential's grant expired or was revoked.
	AuthGrantEnded = "grant_ended"
	// AuthGrantNotStarted: the credential's grant has not started.
	AuthGrantNotStarted = "grant_not_started"
	// AuthProtocol: the client broke the login exchange (no password, TLS refused, bad packet).
	AuthProtocol = "protocol"
)

// AuthFailure is how a gateway login is refused: Err is what the client is told (code
// EUNAUTHORIZED), Reason what the operator's metrics and logs count.
type AuthFailure struct {
	Reason string
	Err    *Error
}

// Error returns the client's message.
func (a *AuthFailure) Error() string { return a.Err.Message }

// Unwrap returns the *Error, so ErrorCode and ErrorMessage see through an AuthFailure.
func (a *AuthFailure) Unwrap() error { return a.Err }

// AuthFailureReason returns the reason of the AuthFailure in err's chain, or "error" for any
// other failure (the store was unreachable, say).
func AuthFailureReason(err error) string {
	var a *AuthFailure
	if errors.As(err, &a) {
		return a.Reason
	}
	return "error"
}
