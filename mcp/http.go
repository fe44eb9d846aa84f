package mcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Authenticator resolves an API token to its user (access.Engine.Authenticate): unknown,
// expired and revoked tokens are errors.
type Authenticator func(ctx context.Context, token string) (*jitgate.User, error)

// callerKey holds the caller in the SDK's TokenInfo.Extra.
const callerKey = "jitgate.user"

// DefaultSessionIdle is how long an HTTP MCP session may sit idle before the server forgets it.
const DefaultSessionIdle = 30 * time.Minute

// NewHTTPHandler serves the MCP streamable HTTP transport (mount it at /mcp). Every HTTP
// request must carry `Authorization: Bearer <API token>`, checked on every request (a revoked
// token stops working at once, mid-session too); a session belongs to the user who opened it.
// Tools run as that user through s's Backend, which must take the caller from ctx (the
// server's httpapi.Local).
func NewHTTPHandler(s *Server, authenticate Authenticator) http.Handler {
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.sdk },
		&sdk.StreamableHTTPOptions{SessionTimeout: DefaultSessionIdle, Logger: s.log})
	verify := func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		u, err := authenticate(ctx, token)
		if err != nil {
			if jitgate.ErrorCode(err) == jitgate.EUNAUTHORIZED {
				return nil, fmt.Errorf("%w: %s", auth.ErrInvalidToken, jitgate.ErrorMessage(err))
			}
			// The store is down: fail closed (500), without its details.
			return nil, errors.New("jitgate cannot check the token now; try again later")
		}
		return &auth.TokenInfo{UserID: u.Name, Expiration: time.Now().Add(time.Minute),
			Extra: map[string]any{callerKey: u}}, nil
	}
	return auth.RequireBearerToken(verify, nil)(h)
}
