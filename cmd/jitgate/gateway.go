package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/spf13/cobra"
)

// activeGrant finds the caller's one active grant on resource (and role, if given).
func activeGrant(ctx context.Context, c *httpapi.Client, resource, role string) (*jitgate.Grant, error) {
	gs, err := c.ListGrants(ctx, access.GrantQuery{Active: true, Mine: true, Resource: resource})
	if err != nil {
		return nil, err
	}
	var match []*jitgate.Grant
	for _, g := range gs {
		if g.State == jitgate.GrantActive && (role == "" || g.Role == role) {
			match = append(match, g)
		}
	}
	switch len(match) {
	case 0:
		what := resource
		if role != "" {
			what += "/" + role
		}
		return nil, fmt.Errorf("you have no active grant on %s; request one with: jitgate request %s --role ROLE --for 1h --reason TEXT", what, resource)
	case 1:
		return match[0], nil
	}
	var roles []string
	for _, g := range match {
		roles = append(roles, g.Role)
	}
	return nil, usagef("you hold several roles on %s (%s); pick one with --role", resource, strings.Join(roles, ", "))
}

// mint gets a gateway credential for the caller's active grant on resource (and role).
func mint(ctx context.Context, c *httpapi.Client, resource, role string) (*jitgate.Grant, *httpapi.Credentials, error) {
	g, err := activeGrant(ctx, c, resource, role)
	if err != nil {
		return nil, nil, err
	}
	cr, err := c.Credentials(ctx, g.ID)
	return g, cr, err
}

// clientEnv is the client environment for a credential: libpq's for PostgreSQL, the mysql
// client's for MySQL (which has no variable for the user; connect passes -u).
func clientEnv(cr *httpapi.Credentials) []string {
	if cr.Kind == jitgate.KindKubernetes {
		// kubectl reads no variables for these; connect and kubeconfig set it up instead.
		return []string{"KUBE_SERVER=" + credentialURI(cr), "KUBE_TOKEN=" + cr.Password}
	}
	if cr.Kind == jitgate.KindMySQL {
		return []string{"MYSQL_HOST=" + cr.Host, "MYSQL_TCP_PORT=" + cr.Port, "MYSQL_PWD=" + cr.Password}
	}
	return []string{
		"PGHOST=" + cr.Host, "PGPORT=" + cr.Port, "PGUSER=" + cr.User, "PGDATABASE=" + cr.Database,
		"PGPASSWORD=" + cr.Password, "PGSSLMODE=" + cr.SSLMode,
	}
}

// mysqlArgs are the arguments of the mariadb or mysql client (bin) for a credential, then
// extra, then the database. Through the gateway, TLS is required: MariaDB's client takes
// --ssl, MySQL's --ssl-mode=REQUIRED.
func mysqlArgs(cr *httpapi.Credentials, bin string, extra []string) []string {
	out := []string{"-u", cr.User}
	if cr.SSLMode == "require" {
		if isMariaDBClient(bin) {
			out = append(out, "--ssl")
		} else {
			out = append(out, "--ssl-mode=REQUIRED")
		}
	}
	out = append(out, extra...)
	return append(out, cr.Database)
}

// isMariaDBClient reports whether the client binary is MariaDB's (whose mysql is often a link
// to mariadb).
func isMariaDBClient(bin string) bool {
	if filepath.Base(bin) == "mariadb" {
		return true
	}
	out, err := exec.Command(bin, "--version").Output()
	return err == nil && strings.Contains(string(out), "MariaDB")
}

// credentialURI is a connection URI for a credential.
func credentialURI(cr *httpapi.Credentials) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(cr.User, cr.Password), Host: net.JoinHostPort(cr.Host, cr.Port),
		Path: "/" + cr.Database, RawQuery: "sslmode=" + cr.SSLMode}
	switch cr.Kind {
	case jitgate.KindMySQL:
		u.Scheme, u.RawQuery = "mysql", ""
	case jitgate.KindKubernetes:
		// The gateway's address; the credential goes in a bearer token, not the URL.
		return (&url.URL{Scheme: "https", Host: net.JoinHostPort(cr.Host, cr.Port)}).String()
	}
	return u.String()
}

func (a *app) credentialsCmd() *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "credentials RESOURCE [--role ROLE] [-o env|uri|json]",
		Short: "Get a short-lived login under your active grant",
		Long: `Get a login for your active grant on RESOURCE. Where the server runs the gateway for
RESOURCE's kind (PostgreSQL, MySQL or Kubernetes), it is a session credential that works only
through the gateway, only while the grant is active, and only as you. Otherwise, for a role with ephemeral
provisioning, it is the grant's own database user (jit_<you>_<grant>), which is dropped when
the grant ends. Either way it never outlives the grant.
Output: shell exports (env, the default: PG* or MYSQL_* variables; for a kubernetes resource
KUBE_SERVER and KUBE_TOKEN, though jitgate kubeconfig is the easier way), a connection URI
(uri; the gateway's https address for kubernetes), or JSON.`,
		Args: exactArgs("RESOURCE"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			g, cr, err := mint(ctx, c, args[0], role)
			if err != nil {
				return err
			}
			switch a.output {
			case "json":
				return a.printJSON(cr)
			case "uri":
				fmt.Fprintln(a.stdout, credentialURI(cr))
			default:
				for _, kv := range clientEnv(cr) {
					fmt.Fprintf(a.stdout, "export %s\n", kv)
				}
				switch cr.Kind {
				case jitgate.KindMySQL:
					fmt.Fprintf(a.stderr, "# then: mariadb %s\n", strings.Join(mysqlArgs(cr, "mariadb", nil), " "))
				case jitgate.KindKubernetes:
					fmt.Fprintf(a.stderr, "# then: kubectl --server \"$KUBE_SERVER\" --token \"$KUBE_TOKEN\" ... (or once: jitgate kubeconfig %s)\n", args[0])
				}
				fmt.Fprintf(a.stderr, "# valid while grant %d is active (ends %s)\n", g.ID, relative(g.EndsAt, time.Now()))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "which of your grants on the resource")
	return cmd
}

func (a *app) connectCmd() *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "connect RESOURCE [--role ROLE] [-- CLIENT-ARGS...]",
		Short: "Open psql (or mariadb/mysql, or a shell for kubectl) under your active grant",
		Long: `Open the resource's client under your active grant on RESOURCE, through the jitgate gateway:
psql for PostgreSQL, mariadb or mysql for MySQL. For a kubernetes resource, run the command
after -- (e.g. -- kubectl get pods) or else your $SHELL, with KUBECONFIG set to a temporary
kubeconfig for the gateway that holds a session credential of the grant (removed afterwards;
for a lasting setup use jitgate kubeconfig).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef("connect takes a RESOURCE")
			}
			return nil
		},
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			g, cr, err := mint(ctx, c, args[0], role)
			if err != nil {
				return err
			}
			if cr.Kind == jitgate.KindKubernetes {
				return a.kubeShell(ctx, g, cr, args[1:])
			}
			client, clientArgs := "psql", args[1:]
			bin, err := exec.LookPath(client)
			if cr.Kind == jitgate.KindMySQL {
				client = "mariadb or mysql"
				if bin, err = exec.LookPath("mariadb"); err != nil {
					bin, err = exec.LookPath("mysql")
				}
				if err == nil {
					clientArgs = mysqlArgs(cr, bin, args[1:])
				}
			}
			if err != nil {
				return fmt.Errorf("%s is not installed; use jitgate credentials %s with your own client", client, args[0])
			}
			how := "through the jitgate gateway"
			if cr.Via == access.ViaDirect {
				how = "as " + cr.User
			}
			fmt.Fprintf(a.stderr, "Connecting to %s as %s/%s %s; the session ends with grant %d (%s).\n",
				g.Resource, g.User, g.Role, how, g.ID, relative(g.EndsAt, time.Now()))
			p := exec.CommandContext(ctx, bin, clientArgs...)
			p.Env = append(os.Environ(), clientEnv(cr)...)
			p.Stdin, p.Stdout, p.Stderr = a.stdin, a.rawStdout, a.rawStderr
			if err := p.Run(); err != nil {
				return silentError{err}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "which of your grants on the resource")
	return cmd
}

func (a *app) sessionsCmd() *cobra.Command {
	var (
		active bool
		grant  int64
	)
	cmd := &cobra.Command{
		Use:   "sessions [--active] [--grant ID]",
		Short: "List gateway sessions you can see",
		Args:  exactArgs(),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, _ []string) error {
			ss, err := c.Sessions(ctx, jitgate.SessionFilter{Live: active, GrantID: grant})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(ss)
			}
			now := time.Now()
			t := newTable(a.stdout, "ID", "GRANT", "USER", "RESOURCE", "ROLE", "CLIENT", "STARTED", "ENDED", "STATEMENTS", "BYTES IN/OUT", "REASON")
			for _, s := range ss {
				ended := "live"
				if !s.EndedAt.IsZero() {
					ended = relative(s.EndedAt, now)
				}
				t.row(s.ID, s.GrantID, s.User, s.Resource, s.Role, s.ClientAddr, relative(s.StartedAt, now), ended,
					s.Statements, fmt.Sprintf("%d/%d", s.BytesIn, s.BytesOut), truncate(s.EndReason, 50))
			}
			return t.flush()
		}),
	}
	cmd.Flags().BoolVar(&active, "active", false, "only live sessions")
	cmd.Flags().Int64Var(&grant, "grant", 0, "only sessions of this grant")
	return cmd
}
