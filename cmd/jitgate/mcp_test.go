package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rogpeppe/go-internal/testscript"
)

// mcpCall runs `jitgate mcp` as an MCP client starts it (a subprocess on stdio, with the
// script's JITGATE_SERVER and JITGATE_TOKEN), calls one tool and prints its structured result
// as JSON, or "TOOL ERROR: " and the error: mcpcall TOOL ARGS-JSON.
func mcpCall(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: mcpcall TOOL ARGS-JSON")
	}
	var toolArgs map[string]any
	ts.Check(json.Unmarshal([]byte(args[1]), &toolArgs))
	cmd := exec.Command(lookPath(ts, "jitgate"), "mcp")
	cmd.Env = append(cmd.Environ(), "JITGATE_SERVER="+ts.Getenv("JITGATE_SERVER"), "JITGATE_TOKEN="+ts.Getenv("JITGATE_TOKEN"),
		"HOME="+ts.Getenv("HOME"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := sdk.NewClient(&sdk.Implementation{Name: "testscript", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		ts.Fatalf("connect to jitgate mcp: %v (stderr: %s)", err, stderr.String())
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: args[0], Arguments: toolArgs})
	if err != nil {
		ts.Fatalf("%s: %v (stderr: %s)", args[0], err, stderr.String())
	}
	if res.IsError {
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				fmt.Fprintf(ts.Stdout(), "TOOL ERROR: %s\n", tc.Text)
			}
		}
		return
	}
	b, err := json.Marshal(res.StructuredContent)
	ts.Check(err)
	fmt.Fprintf(ts.Stdout(), "%s\n", b)
}

// mcpHTTP opens an MCP session at the server's /mcp with a bearer token and prints the HTTP
// status of its initialize: mcphttp TOKEN.
func mcpHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: mcphttp TOKEN")
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"testscript","version":"1"}}}`
	req, err := http.NewRequest(http.MethodPost, ts.Getenv("JITGATE_SERVER")+"/mcp", strings.NewReader(body))
	ts.Check(err)
	req.Header.Set("Authorization", "Bearer "+args[0])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	ts.Check(err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Fprintf(ts.Stdout(), "HTTP %d\n", resp.StatusCode)
}
