package gateway

import (
	"context"

	"github.com/jitgate/jitgate"
)

// Engine is what a protocol gateway needs from the lifecycle engine (access.GatewayService):
// credential checks, the sessions' records, the audit and the grant events; never the whole
// engine.
type Engine interface {
	// AuthenticateSession checks a session credential for user on resource and returns its
	// grant, active now. It fails with a *jitgate.AuthFailure (code EUNAUTHORIZED) whose
	// message tells the client why; any other error means the store could not be read, and the
	// gateway must refuse the login (fail closed).
	AuthenticateSession(ctx context.Context, user, resource, secret string) (*jitgate.Grant, error)
	// AuthenticateProof checks a login that proves knowledge of a session credential without
	// sending it: match is called with the stored double SHA-256 of each of user's credentials
	// for active grants on resource (see access.GatewayService.AuthenticateProof). No match is
	// an AuthFailure; errors are as for AuthenticateSession.
	AuthenticateProof(ctx context.Context, user, resource string, match func(verifier []byte) bool) (*jitgate.Grant, error)
	StartSession(ctx context.Context, s *jitgate.Session) error
	EndSession(ctx context.Context, s *jitgate.Session) error
	// RecordAudit appends events to the audit chain. It must not keep the events' Statements
	// once it returns: the recorder reuses their array for its next batch.
	RecordAudit(ctx context.Context, events []*jitgate.AuditEvent) error
	Subscribe(fn func(jitgate.Event)) (unsubscribe func())
	// GrantByID reads a grant's current state, for the sweep that catches changes made by
	// other server instances.
	GrantByID(ctx context.Context, id int64) (*jitgate.Grant, error)
}
