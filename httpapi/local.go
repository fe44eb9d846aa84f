package httpapi

import (
	"context"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
)

// Local offers the API's calls in the server's own process, with the caller in ctx (see
// jitgate.NewContext), exactly as the HTTP API serves them: the same engine calls, the same
// answers. The MCP endpoint uses it for agents connected over HTTP, as `jitgate mcp` uses a
// Client over the network.
type Local struct{ s *Server }

// Local returns the server's in-process API.
func (s *Server) Local() *Local { return &Local{s} }

// Whoami returns the caller.
func (l *Local) Whoami(ctx context.Context) (*access.Whoami, error) { return l.s.engine.Whoami(ctx) }

// Resources lists the resource roles the caller may request.
func (l *Local) Resources(ctx context.Context) ([]ResourceRole, error) { return l.s.resourceRoles(ctx) }

// Submit files a request as the caller.
func (l *Local) Submit(ctx context.Context, nr jitgate.NewRequest) (*jitgate.Request, error) {
	return l.s.engine.Submit(ctx, nr)
}

// GetRequest returns a request the caller may see.
func (l *Local) GetRequest(ctx context.Context, id int64) (*jitgate.Request, error) {
	return l.s.engine.GetRequest(ctx, id)
}

// GetGrant returns a grant the caller may see.
func (l *Local) GetGrant(ctx context.Context, id int64) (*jitgate.Grant, error) {
	return l.s.engine.GetGrant(ctx, id)
}

// ListGrants lists the grants the caller may see.
func (l *Local) ListGrants(ctx context.Context, q access.GrantQuery) ([]*jitgate.Grant, error) {
	return l.s.engine.ListGrants(ctx, q)
}

// Revoke ends a live grant the caller may revoke.
func (l *Local) Revoke(ctx context.Context, id int64, reason string) (*jitgate.Grant, error) {
	return l.s.engine.Revoke(ctx, id, reason)
}

// Credentials mints a login under the caller's grant, as POST /v1/grants/{id}/credentials.
func (l *Local) Credentials(ctx context.Context, grantID int64) (*Credentials, error) {
	return l.s.issueCredentials(ctx, grantID)
}

// RecordToolCall records one MCP tool call of the caller in the audit log.
func (l *Local) RecordToolCall(ctx context.Context, tc access.ToolCall) error {
	return l.s.engine.RecordToolCall(ctx, tc)
}
