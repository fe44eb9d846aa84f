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
	// DNS-rebinding protection (a loopback listener refusing other Host names) guards servers
	// that trust whoever reaches them; every request here needs the caller's token, which a
	// rebound page does not have, and a reverse proxy in front of jitgate sends its own Host.
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.sdk },
		&sdk.StreamableHTTPOptions{SessionTimeout: DefaultSessionIdle, Logger: s.log, DisableLocalhostProtection: true})
	// A tool call may wait up to MaxWait for a decision (and a stream stays open while the
	// session lives): past the server's write timeout, for authenticated callers only.
	long := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := MaxWait + s.o.QueryTimeout + time.Minute
		if r.Method == http.MethodGet {
			d = DefaultSessionIdle
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
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
	return auth.RequireBearerToken(verify, nil)(long)
}
