package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/policy"
	"github.com/spf13/cobra"
)

// localAdmin runs fn against the store named in the config file directly, as a local
// operator: whoever can read the config and reach the store is trusted to manage tokens.
func (a *app) localAdmin(ctx context.Context, cfgPath string, fn func(ctx context.Context, rt *runtime) error) error {
	rt, err := openRuntime(ctx, cfgPath, false, false, "", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer rt.store.Close()
	name := "local"
	if u := os.Getenv("USER"); u != "" {
		name = "local:" + u
	}
	return fn(jitgate.NewOperatorContext(ctx, name), rt)
}

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens",
		Long: `Create, list and revoke API tokens. With --config FILE the command works on the store directly
(for bootstrapping the first admin token); without it, it calls the server as you, and creating
tokens needs an admin.`,
	}
	var cfgPath string
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "work on the store of this config file directly")

	var (
		user, ttl, desc string
	)
	create := &cobra.Command{
		Use:   "create --user NAME [--ttl 720h]",
		Short: "Create a token for a user; it is printed once",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if user == "" {
				return usagef("token create needs --user")
			}
			d, err := parseDurationFlag("ttl", ttl)
			if err != nil {
				return err
			}
			var out httpapi.CreatedToken
			if cfgPath != "" {
				err = a.localAdmin(cmd.Context(), cfgPath, func(ctx context.Context, rt *runtime) error {
					tok, rec, err := rt.engine.CreateToken(ctx, user, d, desc)
					out = httpapi.CreatedToken{Token: tok, Record: rec}
					return err
				})
			} else {
				var c *httpapi.Client
				if c, err = a.client(); err == nil {
					var res *httpapi.CreatedToken
					if res, err = c.CreateToken(cmd.Context(), user, d, desc); err == nil {
						out = *res
					}
				}
			}
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out)
			}
			fmt.Fprintln(a.stdout, out.Token)
			fmt.Fprintf(a.stderr, "Token %d for %s, expires %s. It is shown only this once.\n",
				out.Record.ID, out.Record.User, out.Record.ExpiresAt.Local().Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&user, "user", "", "the user the token acts as")
	create.Flags().StringVar(&ttl, "ttl", "720h", "how long the token is valid")
	create.Flags().StringVar(&desc, "description", "", "what the token is for")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token (yours, or any as an admin)",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("token", args[0])
			if err != nil {
				return err
			}
			if cfgPath != "" {
				err = a.localAdmin(cmd.Context(), cfgPath, func(ctx context.Context, rt *runtime) error {
					_, err := rt.engine.RevokeToken(ctx, id)
					return err
				})
			} else {
				var c *httpapi.Client
				if c, err = a.client(); err == nil {
					_, err = c.RevokeToken(cmd.Context(), id)
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Token %d revoked.\n", id)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (yours, or all as an admin)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				ts  []*jitgate.Token
				err error
			)
			if cfgPath != "" {
				err = a.localAdmin(cmd.Context(), cfgPath, func(ctx context.Context, rt *runtime) error {
					ts, err = rt.engine.ListTokens(ctx)
					return err
				})
			} else {
				var c *httpapi.Client
				if c, err = a.client(); err == nil {
					ts, err = c.ListTokens(cmd.Context())
				}
			}
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(ts)
			}
			now := time.Now()
			t := newTable(a.stdout, "ID", "USER", "STATE", "EXPIRES", "CREATED BY", "DESCRIPTION")
			for _, tk := range ts {
				state := "valid"
				switch {
				case !tk.RevokedAt.IsZero():
					state = "revoked"
				case !now.Before(tk.ExpiresAt):
					state = "expired"
				}
				t.row(tk.ID, tk.User, state, relative(tk.ExpiresAt, now), tk.CreatedBy, tk.Description)
			}
			return t.flush()
		},
	}
	cmd.AddCommand(create, revoke, list)
	return cmd
}

func (a *app) policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Check a config file, or explain who may request and approve what"}
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a config file: structure, references, durations and CEL conditions",
		Args:  exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			if _, err := policy.Compile(cfg); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: ok (%d users, %d resources, %d policies)\n", args[0], len(cfg.Users), len(cfg.Resources), len(cfg.Policies))
			return nil
		},
	}
	var (
		user, resource, role, dur, cfgPath string
	)
	explain := &cobra.Command{
		Use:   "explain --resource R --role ROLE [--user U] [--for DURATION]",
		Short: "Explain how a request would be decided: the policy, who approves, auto-approval",
		Long: `Explain how a request would be decided: which policy matches, who may request, who may approve
at each step, the maximum duration, and whether it would be approved automatically. With
--config FILE it reads the file offline; otherwise it asks the server (other users need admin).`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if resource == "" || role == "" {
				return usagef("policy explain needs --resource and --role")
			}
			var d time.Duration
			if dur != "" {
				var err error
				if d, err = parseDurationFlag("for", dur); err != nil {
					return err
				}
			}
			var (
				ex  *policy.Explanation
				err error
			)
			if cfgPath != "" {
				ex, err = explainOffline(cmd.Context(), cfgPath, user, resource, role, d)
			} else {
				var c *httpapi.Client
				if c, err = a.client(); err == nil {
					ex, err = c.Explain(cmd.Context(), user, resource, role, d)
				}
			}
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(ex)
			}
			a.printExplanation(ex)
			return nil
		},
	}
	explain.Flags().StringVar(&user, "user", "", "the requester (default: you)")
	explain.Flags().StringVar(&resource, "resource", "", "resource")
	explain.Flags().StringVar(&role, "role", "", "role")
	explain.Flags().StringVar(&dur, "for", "", "requested duration (default: the policy's maximum)")
	explain.Flags().StringVar(&cfgPath, "config", "", "explain from this config file, offline")
	cmd.AddCommand(check, explain)
	return cmd
}

func explainOffline(ctx context.Context, path, user, resource, role string, d time.Duration) (*policy.Explanation, error) {
	if user == "" {
		return nil, usagef("with --config, policy explain needs --user")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return nil, err
	}
	dir := cfg.Directory()
	u, err := dir.LookupUser(ctx, user)
	if err != nil {
		return nil, err
	}
	users, _ := dir.Users(ctx)
	return set.Explain(u, users, resource, role, d, time.Now())
}

func (a *app) printExplanation(ex *policy.Explanation) {
	w := a.stdout
	if !ex.MayRequest {
		fmt.Fprintf(w, "%s may not request %s/%s: %s\n", ex.User, ex.Resource, ex.Role, ex.Reason)
		return
	}
	fmt.Fprintf(w, "%s may request %s/%s under policy %s.\n", ex.User, ex.Resource, ex.Role, ex.Policy)
	kv := newTable(w, "", "")
	kv.row("Max duration", jitgate.FormatDuration(ex.MaxDuration))
	kv.row("Pending TTL", jitgate.FormatDuration(ex.PendingTTL))
	kv.row("Reason required", ex.RequireReason)
	for i, st := range ex.Steps {
		var from []string
		if len(st.Users) > 0 {
			from = append(from, "users "+strings.Join(st.Users, ", "))
		}
		if len(st.Groups) > 0 {
			from = append(from, "groups "+strings.Join(st.Groups, ", "))
		}
		kv.row(fmt.Sprintf("Step %d", i+1), fmt.Sprintf("%d of %s (eligible now: %s)", st.Min, strings.Join(from, " or "), strings.Join(st.Eligible, ", ")))
	}
	auto := "no"
	if ex.AutoApproved {
		auto = "yes"
	}
	if ex.AutoApprove != "" {
		auto += fmt.Sprintf(" for %s (condition: %s)", jitgate.FormatDuration(ex.Duration), ex.AutoApprove)
	}
	kv.row("Auto-approved", auto)
	bg := "not allowed"
	if ex.BreakGlass > 0 {
		bg = "up to " + jitgate.FormatDuration(ex.BreakGlass)
	}
	kv.row("Break-glass", bg)
	kv.row("Requesters", strings.Join(ex.Requesters, ", "))
	kv.flush()
}
