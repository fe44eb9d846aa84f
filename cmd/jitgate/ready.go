package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) readyCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "ready [--server URL]",
		Short: "Check that a server is ready (for health checks)",
		Long: `Ask a server's /readyz whether it is ready: its store answers and every gateway accepts
connections. Exit status 0 when it is, 1 (saying why) when it is not or cannot be reached. It
needs no token, so container and systemd health checks can run it. The server defaults to
JITGATE_SERVER, then http://127.0.0.1:8080.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				if server = os.Getenv("JITGATE_SERVER"); server == "" {
					server = "http://127.0.0.1:8080"
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/readyz", nil)
			if err != nil {
				return usagef("invalid server URL %q", server)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("%s is not reachable: %v", server, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s is not ready (HTTP %d): %s", server, resp.StatusCode, strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(a.stdout, "%s is ready\n", server)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the server's URL (default $JITGATE_SERVER, then http://127.0.0.1:8080)")
	return cmd
}
