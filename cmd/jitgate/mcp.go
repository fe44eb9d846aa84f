package main

import (
	"context"
	"errors"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/jitgate/jitgate/mcp"
	"github.com/spf13/cobra"
)

func (a *app) mcpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve jitgate's tools to an AI agent over MCP (stdio)",
		Long: `Serve the Model Context Protocol on standard input and output, for desktop and IDE agents:
the agent lists what it may request, asks for access with a reason, waits while people decide,
runs SQL through the gateway under its grant, and gives the grant back. It acts as the owner of
the token: run it with JITGATE_SERVER and JITGATE_TOKEN set to the server and an agent's API
token (its owner mints one with: jitgate token create AGENT). Remote agents can use the
server's /mcp endpoint instead (streamable HTTP, the same token as a bearer token).

Tools: list_resources, request_access, wait_for_decision, list_grants, release_access, query.
Every call is recorded in the audit log with the agent and its owner. Diagnostics go to stderr;
stdout carries only the protocol.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			// Check the token before the client starts talking, so a bad one fails loudly here
			// rather than as an error on every tool call.
			if _, err := c.Whoami(ctx); err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			err = mcp.New(mcp.Options{Backend: c, Log: log}).ServeIO(ctx, a.stdin, a.rawStdout)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
}
