package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/provision"
	kubeprov "github.com/jitgate/jitgate/provision/kubernetes"
	myprov "github.com/jitgate/jitgate/provision/mysql"
	pgprov "github.com/jitgate/jitgate/provision/postgres"
	"github.com/jitgate/jitgate/provision/webhook"
	"github.com/spf13/cobra"
)

// provisioners builds a provisioner for every resource jitgate can reach: databases with admin
// credentials (ephemeral users, drift repair and the standing-access report) and webhooks.
// The returned function closes their connections. install is the installation's identity
// (from the store), with which the accounts they make are marked.
func provisioners(cfg *config.Config, resources []*jitgate.Resource, dev bool, install string) (map[string]jitgate.Provisioner, func(), error) {
	key, err := provisionKey(cfg, dev)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]jitgate.Provisioner{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, res := range resources {
		var (
			p   jitgate.Provisioner
			err error
		)
		switch {
		case res.Kind == jitgate.KindKubernetes:
			var token string
			if token, err = kubeToken(res); err == nil {
				p, err = kubeprov.New(res, install, token)
			}
		case res.Kind == jitgate.KindWebhook:
			var secret string
			if secret, err = config.LoadPassword(res.SigningSecret); err == nil {
				p, err = webhook.New(res, []byte(secret), nil)
			}
		case res.Credentials.User != "":
			var password string
			if password, err = config.LoadPassword(res.Credentials); err != nil {
				break
			}
			if res.Kind == jitgate.KindPostgres {
				var pp *pgprov.Provisioner
				if pp, err = pgprov.New(res, install, password, key); err == nil {
					p, closers = pp, append(closers, pp.Close)
				}
			} else {
				var mp *myprov.Provisioner
				if mp, err = myprov.New(res, password, key); err == nil {
					p, closers = mp, append(closers, mp.Close)
				}
			}
		default:
			continue // gateway only
		}
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("resource %s: %w", res.Name, err)
		}
		out[res.Name] = p
	}
	return out, closeAll, nil
}

// provisionKey loads the key ephemeral passwords are derived from. --dev makes a random one
// (the dev store is thrown away with the process anyway).
func provisionKey(cfg *config.Config, dev bool) ([]byte, error) {
	s := cfg.Server
	if s.ProvisionKeyEnv == "" && s.ProvisionKeyFile == "" {
		if !dev {
			return nil, nil // config validation made sure no role needs it
		}
		b := make([]byte, 48)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(base64.RawStdEncoding.EncodeToString(b)), nil
	}
	v, err := config.LoadPassword(jitgate.Secret{User: "server.provision_key", PasswordEnv: s.ProvisionKeyEnv, PasswordFile: s.ProvisionKeyFile})
	if err != nil {
		return nil, err
	}
	if err := provision.CheckKey([]byte(v)); err != nil {
		return nil, fmt.Errorf("server.provision_key: %w", err)
	}
	return []byte(v), nil
}

func (a *app) reportCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "report", Short: "Reports on the targets jitgate guards"}
	cmd.AddCommand(&cobra.Command{
		Use:   "standing-access [RESOURCE] [-o json]",
		Short: "List the logins in each target that jitgate does not manage, flagging the dangerous ones",
		Long: `List, per resource, every login role or user that is not jitgate-managed with its effective
privileges: its attributes, the roles it holds and its direct table grants. Superusers, roles
that can create roles or databases, and direct table grants are flagged. This is the standing
access least privilege starts from. It reads the targets with the resources' admin credentials
and changes nothing. Admins only.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("standing-access takes at most one RESOURCE")
			}
			return nil
		},
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			resource := ""
			if len(args) == 1 {
				resource = args[0]
			}
			rep, err := c.StandingAccess(ctx, resource)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(rep)
			}
			return printStandingAccess(a, rep)
		}),
	})
	return cmd
}

func printStandingAccess(a *app, rep *httpapi.StandingAccessReport) error {
	t := newTable(a.stdout, "RESOURCE", "ACCOUNT", "FLAGS", "ATTRIBUTES", "MEMBER OF", "DIRECT GRANTS")
	failed := 0
	for _, r := range rep.Resources {
		if r.Error != "" {
			failed++
			fmt.Fprintf(a.stderr, "%s: cannot read: %s\n", r.Resource, r.Error)
			continue
		}
		for _, acc := range r.Accounts {
			flags := "-"
			if len(acc.Flags) > 0 {
				flags = "!" + strings.Join(acc.Flags, ",")
			}
			t.row(r.Resource, acc.Name, flags, orDash(strings.Join(acc.Attributes, " ")), orDash(strings.Join(acc.MemberOf, ",")),
				orDash(truncate(strings.Join(acc.TableGrants, "; "), 80)))
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if failed > 0 {
		return silentError{fmt.Errorf("%d resource(s) could not be read", failed)}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
