package mcp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// panicking is a Backend with a bug: Whoami panics. Only the call fails; the server (and its
// other sessions) keeps serving.
type panicking struct{ mcp.Backend }

func (panicking) Whoami(context.Context) (*access.Whoami, error) { panic("bug") }
func (panicking) RecordToolCall(context.Context, access.ToolCall) error {
	return nil
}

func TestHandlerPanicIsAnError(t *testing.T) {
	srv := mcp.New(mcp.Options{Backend: panicking{}})
	st, ct := sdk.NewInMemoryTransports()
	ctx := context.Background()
	if _, err := srv.MCP().Connect(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for range 2 {
		_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: mcp.ToolListResources, Arguments: map[string]any{}})
		if err == nil || !strings.Contains(err.Error(), "jitgate failed internally") {
			t.Fatalf("call: %v", err)
		}
	}
}
