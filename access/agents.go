package access

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
)

// ActionToolCalled is the audit action of one MCP tool call (see RecordToolCall).
const ActionToolCalled = "agent.tool_called"

// ToolCall is one call of an MCP tool, as the MCP server reports it for the audit.
type ToolCall struct {
	// Tool is the tool's name, e.g. request_access.
	Tool string `json:"tool"`
	// Arguments is the call's arguments as JSON (clipped to MaxToolArgs bytes).
	Arguments string `json:"arguments,omitempty"`
	// Error is the tool error the model was given; empty when the call succeeded.
	Error string `json:"error,omitempty"`
	// RequestID and GrantID link the call to the request or grant it acted on, if any.
	RequestID int64 `json:"request_id,omitempty"`
	GrantID   int64 `json:"grant_id,omitempty"`
}

// Limits of a recorded tool call.
const (
	MaxToolArgs  = 4096
	MaxToolError = 1024
)

// RecordToolCall appends one agent.tool_called audit event for the caller: the tool, its
// arguments, its outcome and, for an agent, its owner. Every caller may record its own calls
// (the actor is always the caller); nobody may record another's.
func (e *Engine) RecordToolCall(ctx context.Context, tc ToolCall) error {
	u, err := e.caller(ctx)
	if err != nil {
		return err
	}
	if !ValidToolName(tc.Tool) {
		return jitgate.Errorf(jitgate.EINVALID, "field \"tool\" must be 1 to 64 letters, digits and '_'")
	}
	if tc.RequestID < 0 || tc.GrantID < 0 {
		return jitgate.Errorf(jitgate.EINVALID, "request_id and grant_id must not be negative")
	}
	details := map[string]string{"tool": tc.Tool, "kind": u.KindName()}
	if u.IsAgent() {
		details["owner"] = u.Owner
	}
	if tc.Arguments != "" {
		details["arguments"] = clip(tc.Arguments, MaxToolArgs)
	}
	if tc.Error != "" {
		details["outcome"], details["error"] = "error", clip(tc.Error, MaxToolError)
	} else {
		details["outcome"] = "ok"
	}
	return e.write(ctx, func(o *op) error {
		return o.audit(u.Name, ActionToolCalled, tc.RequestID, tc.GrantID, details)
	})
}

// ValidToolName reports whether s can name a tool in the audit: 1 to 64 ASCII letters, digits
// and '_'.
func ValidToolName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) < 0
}

// clip cuts s to at most n bytes on a character boundary, saying how long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes)", len(s))
}
