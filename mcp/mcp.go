// Package mcp is jitgate's Model Context Protocol server: the tools through which an AI agent
// asks for access, waits for people to decide, runs statements under its grant and gives the
// access back. It is built on the official Go SDK and serves two transports:
//
//   - stdio, for desktop and IDE agents: `jitgate mcp` talks to a jitgate server's API with the
//     agent's token (a Backend that is an httpapi.Client);
//   - streamable HTTP at /mcp on the server itself (NewHTTPHandler), each request
//     authenticated by the agent's bearer token and served by the server's in-process API.
//
// Either way the tools call the same API a person's CLI calls, as the agent: the engine decides
// what the agent may do, never this package. Every tool call is recorded in the audit log with
// the agent and its owner, and a query runs through the gateway under the agent's grant, where
// every statement is audited like any session's.
package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Backend is the API the tools call, as the caller: an *httpapi.Client (stdio: the caller is
// the client's token) or the server's *httpapi.Local (HTTP: the caller is in ctx).
type Backend interface {
	Whoami(ctx context.Context) (*access.Whoami, error)
	Resources(ctx context.Context) ([]httpapi.ResourceRole, error)
	Submit(ctx context.Context, nr jitgate.NewRequest) (*jitgate.Request, error)
	GetRequest(ctx context.Context, id int64) (*jitgate.Request, error)
	GetGrant(ctx context.Context, id int64) (*jitgate.Grant, error)
	ListGrants(ctx context.Context, q access.GrantQuery) ([]*jitgate.Grant, error)
	Revoke(ctx context.Context, grantID int64, reason string) (*jitgate.Grant, error)
	Credentials(ctx context.Context, grantID int64) (*httpapi.Credentials, error)
	RecordToolCall(ctx context.Context, tc access.ToolCall) error
}

// Defaults and limits of the tools.
const (
	// DefaultWait and MaxWait bound wait_for_decision.
	DefaultWait = time.Minute
	MaxWait     = 10 * time.Minute
	// DefaultMaxRows and MaxRows cap the rows a query returns; DefaultMaxBytes and MaxBytes
	// the bytes of their values. A query is cut at the cap while it streams.
	DefaultMaxRows  = 100
	MaxRows         = 1000
	DefaultMaxBytes = 64 << 10
	MaxBytes        = 1 << 20
	// MaxSQL caps a query's text (below the API's 64 KiB request limit, so that an
	// oversized statement gets a tool error over HTTP too).
	MaxSQL = 32 << 10
	// DefaultQueryTimeout is how long one query may run.
	DefaultQueryTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	// Backend is the API the tools call.
	Backend Backend
	// Version is jitgate's version, told to clients.
	Version string
	// Log receives the server's own errors (never tool arguments or credentials).
	Log *slog.Logger
	// PollInterval is how often wait_for_decision looks at the request (default 1s).
	PollInterval time.Duration
	// QueryTimeout caps one query (default DefaultQueryTimeout).
	QueryTimeout time.Duration
}

// Server holds the tools. One Server serves any number of MCP sessions and callers.
type Server struct {
	o   Options
	log *slog.Logger
	sdk *sdk.Server

	mu    sync.Mutex
	creds map[credKey]*httpapi.Credentials // session credentials by caller and grant
}

type credKey struct {
	caller string
	grant  int64
}

// New returns a Server with its tools.
func New(o Options) *Server {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Server{o: o, log: o.Log, creds: map[credKey]*httpapi.Credentials{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.sdk = sdk.NewServer(&sdk.Implementation{Name: "jitgate", Title: "jitgate just-in-time access", Version: o.Version},
		&sdk.ServerOptions{Instructions: instructions})
	s.addTools()
	s.sdk.AddReceivingMiddleware(s.auditRejected)
	return s
}

type recordedKey struct{}

// auditRejected turns a handler's panic into an error, and records the tool calls that never reach a tool: those the SDK refuses for
// arguments that do not fit the tool's schema, and calls of tools that do not exist. The
// tools record their own calls (see tool) and mark them done here.
func (s *Server) auditRejected(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (res sdk.Result, err error) {
		// A bug in a tool must not take the server (and every other session) down with it.
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("mcp: a handler panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				res, err = nil, errors.New("jitgate failed internally handling "+method)
			}
		}()
		call, ok := req.(*sdk.CallToolRequest)
		if method != "tools/call" || !ok || call.Params == nil {
			return next(ctx, method, req)
		}
		recorded := new(bool)
		res, err = next(context.WithValue(ctx, recordedKey{}, recorded), method, req)
		if *recorded {
			return res, err
		}
		tc := access.ToolCall{Tool: call.Params.Name, Arguments: string(call.Params.Arguments), Error: "refused before it ran"}
		if !access.ValidToolName(tc.Tool) {
			tc.Tool, tc.Arguments = "unknown", clipText(call.Params.Name, 64)+" "+tc.Arguments
		}
		if r, ok := res.(*sdk.CallToolResult); ok && r != nil && r.IsError {
			tc.Error = resultText(r)
		} else if err != nil {
			tc.Error = err.Error()
		}
		if rerr := s.o.Backend.RecordToolCall(context.WithoutCancel(callerContext(ctx, call)), tc); rerr != nil {
			s.log.Error("mcp: recording a refused tool call failed", "err", rerr)
		}
		return res, err
	}
}

func resultText(r *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// MCP returns the SDK server, to run on a transport.
func (s *Server) MCP() *sdk.Server { return s.sdk }

// MaxFrame caps one inbound JSON-RPC message on stdio, so a runaway client cannot make the
// server buffer without bound.
const MaxFrame = 1 << 20

// ServeIO serves one client reading r and writing w (standard input and output for `jitgate
// mcp`) until the client goes away or ctx ends.
func (s *Server) ServeIO(ctx context.Context, r io.Reader, w io.Writer) error {
	t := &sdk.IOTransport{Reader: io.NopCloser(r), Writer: nopWriteCloser{w}, MaxLineLength: MaxFrame}
	err := s.sdk.Run(ctx, t)
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

const instructions = `jitgate gives you just-in-time access to databases: nothing is open to you until a person
(or a narrow policy rule) approves a request, and it closes by itself when the time is up.
Typical flow: list_resources → request_access (resource, role, duration, reason) → if pending,
wait_for_decision → query (one SQL statement at a time, under your grant) → release_access when
done. Ask for the narrowest role and the shortest time that does the job, and give a reason a
reviewer can check (a ticket or incident id). Every call and every statement is audited under
your name and your owner's.`

// toolError is an error the model can act on: its text goes to the model as is.
type toolError struct{ msg string }

func (e *toolError) Error() string { return e.msg }

func toolErrorf(format string, args ...any) error {
	return &toolError{fmt.Sprintf(format, args...)}
}

// apiError turns an API error into a tool error: the engine's messages already say what is
// wrong and are safe to show; an internal error says only that.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	var te *toolError
	if errors.As(err, &te) {
		return err
	}
	switch code := jitgate.ErrorCode(err); code {
	case jitgate.EINTERNAL:
		return toolErrorf("jitgate failed internally; try again later")
	case jitgate.EUNAVAILABLE:
		return toolErrorf("jitgate is unavailable: %s", jitgate.ErrorMessage(err))
	default:
		return toolErrorf("%s", jitgate.ErrorMessage(err))
	}
}

// tool wraps a typed handler: it runs it as the caller, turns its error into a tool error,
// and records the call (arguments, outcome, linked request or grant) in the audit log. A
// call that cannot be recorded fails: the model must not act on what the audit does not show.
func tool[In, Out any](s *Server, name, description string, fn func(ctx context.Context, req *sdk.CallToolRequest, in In) (Out, link, error)) {
	sdk.AddTool(s.sdk, &sdk.Tool{Name: name, Description: description},
		func(ctx context.Context, req *sdk.CallToolRequest, in In) (*sdk.CallToolResult, Out, error) {
			if done, ok := ctx.Value(recordedKey{}).(*bool); ok {
				*done = true
			}
			ctx = callerContext(ctx, req)
			out, ln, err := fn(ctx, req, in)
			err = apiError(err)
			tc := access.ToolCall{Tool: name, RequestID: max(ln.request, 0), GrantID: max(ln.grant, 0)}
			if b, merr := json.Marshal(in); merr == nil {
				tc.Arguments = string(b)
			}
			if err != nil {
				tc.Error = err.Error()
			}
			if rerr := s.o.Backend.RecordToolCall(context.WithoutCancel(ctx), tc); rerr != nil {
				s.log.Error("mcp: recording a tool call failed", "tool", name, "err", rerr)
				var zero Out
				return nil, zero, toolErrorf("jitgate could not record this call in its audit log (%s); nothing more will run until it can", jitgate.ErrorMessage(rerr))
			}
			return nil, out, err
		})
}

// link names the request or grant a tool call acted on, for its audit event.
type link struct{ request, grant int64 }

// callerContext puts the HTTP caller (see NewHTTPHandler) in ctx for the in-process API.
func callerContext(ctx context.Context, req *sdk.CallToolRequest) context.Context {
	if req != nil && req.Extra != nil && req.Extra.TokenInfo != nil {
		if u, ok := req.Extra.TokenInfo.Extra[callerKey].(*jitgate.User); ok {
			return jitgate.NewContext(ctx, u)
		}
	}
	return ctx
}

// callerName names the caller for the credential cache.
func (s *Server) callerName(ctx context.Context) string {
	if u := jitgate.UserFromContext(ctx); u != nil {
		return u.Name
	}
	return ""
}

// checkName validates a resource or role name argument.
func checkName(field, v string) error {
	if v == "" {
		return toolErrorf("%s is required", field)
	}
	if !jitgate.ValidName(v) {
		return toolErrorf("%s %q is not a valid name (lower-case letters, digits, '_', '.', '@', '-'; at most 63): call list_resources for the names", field, clipText(v, 64))
	}
	return nil
}

// clipText cuts s to n bytes on a character boundary and makes it printable.
func clipText(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
