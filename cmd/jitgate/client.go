package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/textsafe"
	"github.com/spf13/cobra"
)

// credentials is what `jitgate login` saves.
type credentials struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cannot find your config directory: %w", err)
	}
	return filepath.Join(dir, "jitgate", "credentials.json"), nil
}

// client returns an API client from JITGATE_SERVER/JITGATE_TOKEN, falling back to what
// `jitgate login` saved.
func (a *app) client() (*httpapi.Client, error) {
	c := credentials{Server: os.Getenv("JITGATE_SERVER"), Token: os.Getenv("JITGATE_TOKEN")}
	if c.Server == "" || c.Token == "" {
		if path, err := credentialsPath(); err == nil {
			if data, err := os.ReadFile(path); err == nil {
				var saved credentials
				if err := json.Unmarshal(data, &saved); err != nil {
					return nil, fmt.Errorf("%s is corrupt; run jitgate login again", path)
				}
				if c.Server == "" {
					c.Server = saved.Server
				}
				if c.Token == "" {
					c.Token = saved.Token
				}
			}
		}
	}
	if c.Server == "" || c.Token == "" {
		return nil, errors.New("not signed in: run jitgate login --server URL --token TOKEN, or set JITGATE_SERVER and JITGATE_TOKEN")
	}
	return httpapi.NewClient(c.Server, c.Token), nil
}

// withClient wraps a command body that needs a client.
func (a *app) withClient(fn func(ctx context.Context, c *httpapi.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		return fn(cmd.Context(), c, args)
	}
}

func parseID(what, s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimPrefix(s, "#"), what[:1]), 10, 64)
	if err != nil || n <= 0 {
		return 0, usagef("invalid %s id %q", what, s)
	}
	return n, nil
}

func parseDurationFlag(name, s string) (time.Duration, error) {
	d, err := jitgate.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usagef("--%s: want a duration such as 30m, 1h or 2d, not %q", name, s)
	}
	return d, nil
}

func (a *app) loginCmd() *cobra.Command {
	var server, token string
	cmd := &cobra.Command{
		Use:   "login --server URL [--token TOKEN]",
		Short: "Sign in (in the browser, or with an API token) and save the credentials",
		Long: `Without --token, sign in through the server's web sign-in (and so its identity provider):
the command prints a URL (and opens it in your browser if it can), you confirm in the
browser, and the browser hands a one-time code back to this command on a loopback port; the
code is traded for an API token valid 12 hours. With --token, check that token instead.
Either way the server and token are saved, readable only by you, under your config directory
(e.g. ~/.config/jitgate/credentials.json). JITGATE_SERVER and JITGATE_TOKEN, when set,
override what is saved.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == "" {
				return usagef("login needs --server")
			}
			if token == "" {
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
				defer cancel()
				bt, err := httpapi.BrowserLogin(ctx, server, func(u string) error {
					fmt.Fprintf(a.stderr, "Open this address in your browser to sign in:\n\n  %s\n\nWaiting (up to 5 minutes)...\n", u)
					openBrowser(u)
					return nil
				})
				if err != nil {
					return err
				}
				token = bt.Token
			}
			c := httpapi.NewClient(server, token)
			who, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			path, err := credentialsPath()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			data, _ := json.MarshalIndent(credentials{Server: c.BaseURL, Token: token}, "", "  ")
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, data, 0o600); err != nil {
				return err
			}
			if err := os.Rename(tmp, path); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Signed in to %s as %s. Saved to %s.\n", c.BaseURL, who.User, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "server URL, e.g. http://127.0.0.1:8080")
	cmd.Flags().StringVar(&token, "token", "", "API token (from jitgate token create)")
	return cmd
}

// openBrowser tries to open u in the desktop's browser; the URL is printed anyway.
func openBrowser(u string) {
	for _, opener := range []string{"xdg-open", "open"} {
		if path, err := exec.LookPath(opener); err == nil {
			if exec.Command(path, u).Start() == nil {
				return
			}
		}
	}
}

func (a *app) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who you are signed in as",
		Args:  exactArgs(),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
			who, err := c.Whoami(ctx)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(who)
			}
			admin := ""
			if who.Admin {
				admin = " (admin)"
			}
			fmt.Fprintf(a.stdout, "%s%s, groups: %s, server: %s\n", who.User, admin, strings.Join(who.Groups, ", "), c.BaseURL)
			return nil
		}),
	}
}

func (a *app) resourcesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resources",
		Short: "List the resources and roles you may request",
		Args:  exactArgs(),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
			rs, err := c.Resources(ctx)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(rs)
			}
			t := newTable(a.stdout, "RESOURCE", "ROLE", "MAX", "APPROVAL", "BREAK-GLASS", "DESCRIPTION")
			for _, r := range rs {
				approval := fmt.Sprintf("%d step(s)", r.Steps)
				if r.AutoApprove != "" {
					approval += ", auto if " + r.AutoApprove
				}
				bg := "no"
				if r.BreakGlassMax != "" {
					bg = "up to " + r.BreakGlassMax
				}
				t.row(r.Resource, r.Role, r.MaxDuration, approval, bg, r.Description)
			}
			return t.flush()
		}),
	}
}

// parseStart accepts an RFC 3339 time or "+DURATION" (from now).
func parseStart(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := jitgate.ParseDuration(rest)
		if err != nil {
			return time.Time{}, usagef("--start: %v", err)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--start: want an RFC 3339 time (2026-11-27T14:00:00Z) or +DURATION (+2h), not %q", s)
	}
	return t, nil
}

func (a *app) requestCmd() *cobra.Command {
	var (
		role, dur, reason, start string
		breakGlass, wait         bool
	)
	cmd := &cobra.Command{
		Use:   "request RESOURCE --role ROLE --for DURATION --reason TEXT",
		Short: "Request a role on a resource for a bounded time",
		Long: `Request one role on one resource for a bounded time. The grant's clock starts when it is
approved (or at --start, if that is later), not when you ask.

--wait blocks until the request is decided and exits 1 if it is denied, cancelled or times out.
--break-glass, where the policy allows it, activates at once with a short cap, alerts every
approver, and leaves an after-the-fact review open.`,
		Args: exactArgs("RESOURCE"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			if role == "" || dur == "" {
				return usagef("request needs --role and --for")
			}
			d, err := parseDurationFlag("for", dur)
			if err != nil {
				return err
			}
			nr := jitgate.NewRequest{Resource: args[0], Role: role, Duration: d, Reason: reason, BreakGlass: breakGlass}
			if start != "" {
				if nr.StartAt, err = parseStart(start, time.Now()); err != nil {
					return err
				}
			}
			r, err := c.Submit(ctx, nr)
			if err != nil {
				return err
			}
			if wait && r.State == jitgate.RequestPending {
				if a.output != "json" {
					fmt.Fprintf(a.stdout, "Request %d is pending (%d approval step(s)); waiting for a decision...\n", r.ID, r.Steps)
				}
				if r, err = a.waitDecided(ctx, c, r.ID); err != nil {
					return err
				}
			}
			return a.reportRequest(ctx, c, r, wait)
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "role to request")
	cmd.Flags().StringVar(&dur, "for", "", "how long, e.g. 30m, 1h")
	cmd.Flags().StringVar(&reason, "reason", "", "why you need it (a ticket, an incident)")
	cmd.Flags().StringVar(&start, "start", "", "when to start: an RFC 3339 time or +DURATION")
	cmd.Flags().BoolVar(&breakGlass, "break-glass", false, "emergency access without prior approval, where the policy allows it")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the request is decided")
	return cmd
}

// reportRequest prints the outcome of a request and fails (exit 1) when waiting ended in
// anything but approval.
func (a *app) reportRequest(ctx context.Context, c *httpapi.Client, r *jitgate.Request, waited bool) error {
	if a.output == "json" {
		if err := a.printJSON(r); err != nil {
			return err
		}
	} else {
		switch r.State {
		case jitgate.RequestApproved:
			fmt.Fprintf(a.stdout, "Request %d approved (%s).\n", r.ID, textsafe.Line(r.DecisionNote))
			if g, err := c.GetGrant(ctx, r.GrantID); err == nil {
				fmt.Fprintf(a.stdout, "Grant %d: %s/%s %s, %s.\n", g.ID, g.Resource, g.Role, g.State, grantWhen(g, time.Now()))
			}
		case jitgate.RequestPending:
			fmt.Fprintf(a.stdout, "Request %d is pending: waiting for approval (step %d of %d), times out %s.\n",
				r.ID, r.Step+1, r.Steps, relative(r.ExpiresAt, time.Now()))
		default:
			fmt.Fprintf(a.stdout, "Request %d %s by %s: %s\n", r.ID, r.State, r.DecidedBy, textsafe.Line(r.DecisionNote))
		}
	}
	if waited && r.State != jitgate.RequestApproved {
		return silentError{fmt.Errorf("request %d %s", r.ID, r.State)}
	}
	return nil
}

// waitDecided polls until request id leaves pending, with a spinner on a terminal.
func (a *app) waitDecided(ctx context.Context, c *httpapi.Client, id int64) (*jitgate.Request, error) {
	spin := isTerminal(a.rawStderr)
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		r, err := c.GetRequest(ctx, id)
		if err != nil {
			return nil, err
		}
		if r.State != jitgate.RequestPending {
			if spin {
				fmt.Fprint(a.rawStderr, "\r\033[K")
			}
			return r, nil
		}
		if spin {
			fmt.Fprintf(a.rawStderr, "\r%s waiting for approval of request %d (step %d of %d)", frames[i%len(frames)], id, r.Step+1, r.Steps)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func (a *app) requestsCmd() *cobra.Command {
	var (
		pending, mine, toReview bool
		state                   string
		limit                   int
	)
	cmd := &cobra.Command{
		Use:   "requests",
		Short: "List requests you can see",
		Args:  exactArgs(),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
			q := access.RequestQuery{State: jitgate.RequestState(state), Mine: mine, ToReview: toReview, Limit: limit}
			if pending {
				q.State = jitgate.RequestPending
			}
			rs, err := c.ListRequests(ctx, q)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(rs)
			}
			return printRequests(a.stdout, rs, time.Now())
		}),
	}
	cmd.Flags().BoolVar(&pending, "pending", false, "only pending requests")
	cmd.Flags().BoolVar(&mine, "mine", false, "only your own requests")
	cmd.Flags().BoolVar(&toReview, "to-review", false, "only requests waiting for your review")
	cmd.Flags().StringVar(&state, "state", "", "only requests in this state (pending, approved, denied, cancelled, timed_out)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return cmd
}

func (a *app) showCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a request (ID or rID) with its reviews and grant, or a grant (gID)",
		Args:  exactArgs("ID"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			now := time.Now()
			if strings.HasPrefix(args[0], "g") {
				id, err := parseID("grant", args[0])
				if err != nil {
					return err
				}
				g, err := c.GetGrant(ctx, id)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(g)
				}
				printGrant(a.stdout, g, now)
				return nil
			}
			id, err := parseID("request", args[0])
			if err != nil {
				return err
			}
			r, err := c.GetRequest(ctx, id)
			if err != nil {
				return err
			}
			var g *jitgate.Grant
			if r.GrantID != 0 {
				if g, err = c.GetGrant(ctx, r.GrantID); err != nil {
					return err
				}
			}
			if a.output == "json" {
				return a.printJSON(struct {
					Request *jitgate.Request `json:"request"`
					Grant   *jitgate.Grant   `json:"grant,omitempty"`
				}{r, g})
			}
			printRequest(a.stdout, r, g, now)
			return nil
		}),
	}
}

func (a *app) reviewCmd(d jitgate.Decision, short string) *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   string(d) + " ID",
		Short: short,
		Args:  exactArgs("ID"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			id, err := parseID("request", args[0])
			if err != nil {
				return err
			}
			if d == jitgate.Deny && strings.TrimSpace(comment) == "" {
				return usagef("deny needs --comment saying why")
			}
			r, err := c.Review(ctx, id, d, comment)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(r)
			}
			switch {
			case r.State == jitgate.RequestPending:
				fmt.Fprintf(a.stdout, "Recorded your %s of request %d; it now waits for step %d of %d.\n", d, r.ID, r.Step+1, r.Steps)
			case r.BreakGlass:
				fmt.Fprintf(a.stdout, "Recorded your after-the-fact review (%s) of break-glass request %d.\n", d, r.ID)
			default:
				fmt.Fprintf(a.stdout, "Request %d %s.\n", r.ID, r.State)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&comment, "comment", "", "comment for the requester (required to deny)")
	return cmd
}

func (a *app) approveCmd() *cobra.Command {
	return a.reviewCmd(jitgate.Approve, "Approve a request at its current step (or review a break-glass use)")
}

func (a *app) denyCmd() *cobra.Command {
	return a.reviewCmd(jitgate.Deny, "Deny a request, with a comment saying why")
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel your pending request",
		Args:  exactArgs("ID"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			id, err := parseID("request", args[0])
			if err != nil {
				return err
			}
			r, err := c.Cancel(ctx, id)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "Request %d cancelled.\n", r.ID)
			return nil
		}),
	}
}

func (a *app) grantsCmd() *cobra.Command {
	var (
		active, mine bool
		resource     string
		limit        int
	)
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "List grants you can see",
		Args:  exactArgs(),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
			gs, err := c.ListGrants(ctx, access.GrantQuery{Active: active, Mine: mine, Resource: resource, Limit: limit})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(gs)
			}
			return printGrants(a.stdout, gs, time.Now())
		}),
	}
	cmd.Flags().BoolVar(&active, "active", false, "only scheduled and active grants")
	cmd.Flags().BoolVar(&mine, "mine", false, "only your own grants")
	cmd.Flags().StringVar(&resource, "resource", "", "only grants on this resource")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return cmd
}

func (a *app) revokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke GRANT",
		Short: "End a grant now (its owner, an approver of its policy, or an admin)",
		Args:  exactArgs("GRANT"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			id, err := parseID("grant", args[0])
			if err != nil {
				return err
			}
			g, err := c.Revoke(ctx, id, reason)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(g)
			}
			fmt.Fprintf(a.stdout, "Grant %d revoked: %s.\n", g.ID, textsafe.Line(g.EndReason))
			return nil
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}

func (a *app) extendCmd() *cobra.Command {
	var by, reason string
	cmd := &cobra.Command{
		Use:   "extend GRANT --by DURATION --reason TEXT",
		Short: "Ask to extend your grant; the extension is approved like a request",
		Args:  exactArgs("GRANT"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			id, err := parseID("grant", args[0])
			if err != nil {
				return err
			}
			if by == "" {
				return usagef("extend needs --by")
			}
			d, err := parseDurationFlag("by", by)
			if err != nil {
				return err
			}
			r, err := c.Extend(ctx, id, d, reason)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(r)
			}
			if r.State == jitgate.RequestApproved {
				g, err := c.GetGrant(ctx, id)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Extension %d approved: grant %d now %s.\n", r.ID, id, grantWhen(g, time.Now()))
				return nil
			}
			fmt.Fprintf(a.stdout, "Extension request %d for grant %d is pending approval.\n", r.ID, id)
			return nil
		}),
	}
	cmd.Flags().StringVar(&by, "by", "", "how much longer, e.g. 30m")
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}

func (a *app) auditCmd() *cobra.Command {
	var (
		since, actor   string
		follow, verify bool
		reqID, grantID int64
		sessionID      int64
		after, before  int64
		limit, tail    int
		cfgPath        string
		cpFile, pubKey string
	)
	var (
		cmd      *cobra.Command
		runAudit func(*cobra.Command, []string) error
	)
	cmd = &cobra.Command{
		Use:   "audit",
		Short: "List the audit log, follow it, or verify its hash chain",
		Long: `List audit events (admins see all; others pass --request or --grant for one they can see),
follow new events as they are written (--follow), or verify the whole hash chain (--verify):
verification names the first event that was edited, deleted or reordered, and exits 1 if any.

Without --after or --since it shows the newest events (--tail, 50 by default), oldest of them
first, and says how to read further back (--before). With --after or --since it reads forward
from there, a page (--limit) at a time.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath != "" || cpFile != "" || pubKey != "" {
				if !verify || cfgPath == "" {
					return usagef("--config, --checkpoints and --public-key go with --verify --config: an offline check of the store")
				}
				return a.verifyOffline(cmd.Context(), cfgPath, cpFile, pubKey)
			}
			return runAudit(cmd, args)
		},
	}
	runAudit = a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
		if verify {
			res, err := c.VerifyAudit(ctx)
			if err != nil {
				return err
			}
			return a.printVerify(res)
		}
		f := jitgate.AuditFilter{AfterSeq: after, BeforeSeq: before, Actor: actor, RequestID: reqID, GrantID: grantID, SessionID: sessionID, Limit: limit}
		if since != "" {
			if d, err := jitgate.ParseDuration(since); err == nil {
				f.Since = time.Now().Add(-d)
			} else if f.Since, err = time.Parse(time.RFC3339, since); err != nil {
				return usagef("--since: want a duration (1h) or an RFC 3339 time, not %q", since)
			}
		}
		forward := cmd.Flags().Changed("after") || since != ""
		if forward && before != 0 {
			return usagef("--before reads back from the newest events; it does not go with --after or --since")
		}
		// The newest events, like tail(1), unless told where to start.
		f.Newest = !forward
		if f.Newest {
			f.Limit = tail
			if f.Limit <= 0 {
				f.Limit = 50
			}
		}
		first := true
		for {
			page, err := c.Audit(ctx, f)
			if err != nil {
				return err
			}
			if f.Newest {
				slices.Reverse(page.Events) // shown oldest first, the newest last
			}
			if a.output == "json" {
				for _, e := range page.Events {
					if err := json.NewEncoder(a.stdout).Encode(e); err != nil {
						return err
					}
				}
			} else if len(page.Events) > 0 || first {
				if err := printAudit(a.stdout, page.Events); err != nil {
					return err
				}
			}
			if page.More && !follow {
				if f.Newest {
					fmt.Fprintf(a.stderr, "(the newest %d events shown; older ones: jitgate audit --before %d, or the oldest first: jitgate audit --after 0)\n",
						len(page.Events), page.NextBefore)
				} else {
					fmt.Fprintf(a.stderr, "(more events follow: jitgate audit --after %d)\n", page.NextAfter)
				}
			}
			first = false
			f.Newest, f.BeforeSeq, f.Limit = false, 0, limit
			f.AfterSeq = page.NextAfter
			if !follow {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	})
	cmd.Flags().StringVar(&since, "since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	cmd.Flags().StringVar(&actor, "actor", "", "only events by this actor")
	cmd.Flags().Int64Var(&reqID, "request", 0, "only events of this request")
	cmd.Flags().Int64Var(&grantID, "grant", 0, "only events of this grant")
	cmd.Flags().Int64Var(&sessionID, "session", 0, "only events of this gateway session (its statements)")
	cmd.Flags().Int64Var(&after, "after", 0, "read forward from this sequence number (0: from the start)")
	cmd.Flags().Int64Var(&before, "before", 0, "the newest events before this sequence number")
	cmd.Flags().IntVar(&tail, "tail", 50, "how many of the newest events to show (without --after or --since)")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many per page, reading forward")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing new events until interrupted")
	cmd.Flags().BoolVar(&verify, "verify", false, "verify the hash chain (and its end against the latest signed checkpoint)")
	cmd.Flags().StringVar(&cfgPath, "config", "", "with --verify: check the store the config names directly, not through a server")
	cmd.Flags().StringVar(&cpFile, "checkpoints", "", "with --verify --config: the checkpoint file to check against (default: the config's audit.witness_file)")
	cmd.Flags().StringVar(&pubKey, "public-key", "", "with --verify --config: the public key checkpoints are signed with (default: the config's signing key's)")
	cmd.AddCommand(a.auditKeygenCmd())
	return cmd
}

// printVerify shows a verification result; a broken chain is exit status 1.
func (a *app) printVerify(res *audit.Result) error {
	if a.output == "json" {
		if err := a.printJSON(res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprintf(a.stdout, "Audit chain OK: %d events, head %d (%s).\n", res.Events, res.HeadSeq, short(res.HeadHash))
		if cp := res.Checkpoint; cp != nil {
			fmt.Fprintf(a.stdout, "Its end matches the checkpoint of event %d signed %s (key %s).\n", cp.Seq, jitgate.FormatTime(cp.Time), cp.KeyID)
		} else {
			fmt.Fprintln(a.stdout, "No signed checkpoint was checked: a cut or rewritten end of the log would not show (see audit in the README).")
		}
	} else {
		fmt.Fprintf(a.stdout, "Audit chain BROKEN at event %d (%s): %s\n", res.FirstBad, res.Problem, textsafe.Line(res.Message))
	}
	if !res.OK {
		return silentError{errors.New("audit chain broken")}
	}
	return nil
}

// verifyOffline verifies the store the config names, directly, against the latest checkpoint
// in cpFile (or the config's witness file) signed with pubKey (or the config's key).
func (a *app) verifyOffline(ctx context.Context, cfgPath, cpFile, pubKey string) error {
	rt, err := openRuntime(ctx, cfgPath, false, false, "", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer rt.close()
	if cpFile == "" {
		cpFile = rt.cfg.Audit.WitnessFile
	}
	var src audit.CheckpointSource
	if cpFile != "" {
		var pub ed25519.PublicKey
		if pubKey != "" {
			data, err := os.ReadFile(pubKey)
			if err != nil {
				return err
			}
			if pub, err = audit.ParsePublicKey(data); err != nil {
				return fmt.Errorf("%s: %w", pubKey, err)
			}
		} else {
			key, err := loadSigningKey(&rt.cfg.Audit)
			if err != nil {
				return fmt.Errorf("%w (or name the public key with --public-key)", err)
			}
			pub = key.Public().(ed25519.PublicKey)
		}
		src = &audit.FileCheckpoints{Path: cpFile, Key: pub}
		if _, err := os.Stat(cpFile); err != nil {
			return fmt.Errorf("checkpoints: %w", err)
		}
	}
	res, err := audit.VerifyLatest(ctx, rt.store, src)
	if err != nil {
		return err
	}
	return a.printVerify(res)
}

func (a *app) auditKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make a signing key for audit checkpoints (FILE, and its public key FILE.pub)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("keygen needs --out FILE")
			}
			priv, pub, err := audit.GenerateKey()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%w (keygen never overwrites a key)", err)
			}
			if _, err := f.Write(priv); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.WriteFile(out+".pub", pub, 0o644); err != nil {
				return err
			}
			k, _ := audit.ParsePublicKey(pub)
			fmt.Fprintf(a.stdout, `Signing key %s written to %s (mode 0600), its public key to %s.
Give the server the key and a witness outside the store:

audit:
  signing_key_file: %s
  witness_file: /var/lib/jitgate-witness/checkpoints.jsonl

Verifiers need only the public key: jitgate audit --verify --config FILE --public-key %s
`, audit.KeyID(k), out, out+".pub", out, out+".pub")
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "where to write the private key (PEM); FILE.pub gets the public key")
	return cmd
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
