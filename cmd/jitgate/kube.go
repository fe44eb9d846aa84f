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
	"github.com/jitgate/jitgate/config"
	kubegateway "github.com/jitgate/jitgate/gateway/kubernetes"
	"github.com/jitgate/jitgate/httpapi"
	kubeprov "github.com/jitgate/jitgate/provision/kubernetes"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubernetesUpstreams returns how the Kubernetes gateway reaches each kubernetes resource's
// API server as jitgate.
func kubernetesUpstreams(resources []*jitgate.Resource) (map[string]*kubegateway.Upstream, error) {
	out := map[string]*kubegateway.Upstream{}
	for _, res := range resources {
		if res.Kind != jitgate.KindKubernetes {
			continue
		}
		token, err := kubeToken(res)
		if err != nil {
			return nil, err
		}
		tlsCfg, err := kubeprov.TLSConfig(res, token)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", res.Name, err)
		}
		u, err := url.Parse(res.Address)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", res.Name, err)
		}
		out[res.Name] = &kubegateway.Upstream{URL: u, TLS: tlsCfg, Token: token}
	}
	return out, nil
}

// kubeToken loads jitgate's bearer token for a kubernetes resource ("" with a client
// certificate).
func kubeToken(res *jitgate.Resource) (string, error) {
	if res.Token.PasswordEnv == "" && res.Token.PasswordFile == "" {
		return "", nil
	}
	t, err := config.LoadPassword(res.Token)
	if err != nil {
		return "", fmt.Errorf("resource %s: %w", res.Name, err)
	}
	return strings.TrimSpace(t), nil
}

// execCredential is what a kubectl credential plugin prints
// (client.authentication.k8s.io/v1 ExecCredential).
type execCredential struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Status     struct {
		Token               string `json:"token"`
		ExpirationTimestamp string `json:"expirationTimestamp"`
	} `json:"status"`
}

func (a *app) kubeCredentialCmd() *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "kube-credential RESOURCE [--role ROLE]",
		Short: "The kubectl credential plugin that jitgate kubeconfig sets up",
		Long: `Print a session credential for your active grant on the kubernetes RESOURCE as a
client.authentication.k8s.io/v1 ExecCredential, expiring with the grant. kubectl runs this
itself (see jitgate kubeconfig); when there is no active grant it fails with a message saying
so, which kubectl shows.`,
		Args: exactArgs("RESOURCE"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			g, cr, err := mint(ctx, c, args[0], role)
			if err != nil {
				return err
			}
			if cr.Kind != jitgate.KindKubernetes {
				return usagef("%s is a %s resource, not kubernetes", args[0], cr.Kind)
			}
			var ec execCredential
			ec.APIVersion, ec.Kind = "client.authentication.k8s.io/v1", "ExecCredential"
			ec.Status.Token = cr.Password
			ec.Status.ExpirationTimestamp = g.EndsAt.UTC().Format(time.RFC3339)
			return a.printJSON(ec)
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "which of your grants on the resource")
	return cmd
}

// defaultKubeconfig is where kubectl reads its config: the first file in $KUBECONFIG, or
// ~/.kube/config.
func defaultKubeconfig() string {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0]
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".kube/config"
	}
	return filepath.Join(home, ".kube", "config")
}

func (a *app) kubeconfigCmd() *cobra.Command {
	var (
		role, path, name, ca string
		noSwitch             bool
	)
	cmd := &cobra.Command{
		Use:   "kubeconfig RESOURCE [--role ROLE] [--kubeconfig FILE] [--context NAME]",
		Short: "Set kubectl up to reach a kubernetes resource through the jitgate gateway",
		Long: `Write (or merge into FILE: default the first file of $KUBECONFIG, or ~/.kube/config) a
context named jitgate-RESOURCE: the cluster is the jitgate Kubernetes gateway, and the user is
jitgate itself as a credential plugin (jitgate kube-credential RESOURCE), which hands kubectl a
session credential for your active grant, expiring with it. No secret is written to the file.
The context becomes the current one unless --no-switch is given. With no active grant, kubectl
says so; request one with jitgate request.`,
		Args: exactArgs("RESOURCE"),
		RunE: a.withClient(func(ctx context.Context, c *httpapi.Client, args []string) error {
			resource := args[0]
			gw, err := kubeGateway(ctx, c, resource)
			if err != nil {
				return err
			}
			exe, err := selfPath()
			if err != nil {
				return err
			}
			if name == "" {
				name = "jitgate-" + resource
			}
			if path == "" {
				path = defaultKubeconfig()
			}
			cfg := clientcmdapi.NewConfig()
			if _, err := os.Stat(path); err == nil {
				if cfg, err = clientcmd.LoadFromFile(path); err != nil {
					return fmt.Errorf("read %s: %w", path, err)
				}
			}
			cluster := clientcmdapi.NewCluster()
			cluster.Server = "https://" + net.JoinHostPort(gw.Host, gw.Port)
			switch {
			case ca != "":
				abs, err := filepath.Abs(ca)
				if err != nil {
					return err
				}
				cluster.CertificateAuthority = abs
			case gw.CAData != "":
				cluster.CertificateAuthorityData = []byte(gw.CAData)
			}
			pluginArgs := []string{"kube-credential", resource}
			if role != "" {
				pluginArgs = append(pluginArgs, "--role", role)
			}
			user := clientcmdapi.NewAuthInfo()
			user.Exec = &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: exe, Args: pluginArgs,
				Env:             []clientcmdapi.ExecEnvVar{{Name: "JITGATE_SERVER", Value: c.BaseURL}},
				InstallHint:     "jitgate is this context's credential plugin; install it, then run: jitgate kubeconfig " + resource,
				InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
			kctx := clientcmdapi.NewContext()
			kctx.Cluster, kctx.AuthInfo = name, name
			cfg.Clusters[name], cfg.AuthInfos[name], cfg.Contexts[name] = cluster, user, kctx
			if !noSwitch {
				cfg.CurrentContext = name
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			if err := clientcmd.WriteToFile(*cfg, path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			fmt.Fprintf(a.stdout, "Context %s in %s: kubectl reaches %s through the jitgate gateway at %s, under your active grant.\n",
				name, path, resource, cluster.Server)
			if noSwitch {
				fmt.Fprintf(a.stdout, "Use it with: kubectl --context %s get pods\n", name)
			} else {
				fmt.Fprintf(a.stdout, "It is the current context: kubectl get pods\n")
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "which of your grants on the resource (if you may hold several)")
	cmd.Flags().StringVar(&path, "kubeconfig", "", "the kubeconfig file to write (default: $KUBECONFIG's first file, or ~/.kube/config)")
	cmd.Flags().StringVar(&name, "context", "", "the context's name (default jitgate-RESOURCE)")
	cmd.Flags().StringVar(&ca, "certificate-authority", "", "a CA file to trust for the gateway (default: the system's, or the dev server's own certificate)")
	cmd.Flags().BoolVar(&noSwitch, "no-switch", false, "do not make the context the current one")
	return cmd
}

// kubeGateway checks that resource is a kubernetes resource the caller may request and
// returns where the server's Kubernetes gateway listens.
func kubeGateway(ctx context.Context, c *httpapi.Client, resource string) (*httpapi.GatewayInfo, error) {
	rrs, err := c.Resources(ctx)
	if err != nil {
		return nil, err
	}
	kind := ""
	for _, rr := range rrs {
		if rr.Resource == resource {
			kind = rr.Kind
		}
	}
	switch kind {
	case "":
		return nil, usagef("no resource %s that you may request (see jitgate resources)", resource)
	case jitgate.KindKubernetes:
	default:
		return nil, usagef("%s is a %s resource, not kubernetes; use jitgate connect %s", resource, kind, resource)
	}
	gws, err := c.Gateways(ctx)
	if err != nil {
		return nil, err
	}
	gw, ok := gws[jitgate.KindKubernetes]
	if !ok {
		return nil, fmt.Errorf("this jitgate server runs no Kubernetes gateway (gateway.kubernetes in its config)")
	}
	return &gw, nil
}

// kubeShell runs command (or $SHELL) with KUBECONFIG set to a temporary kubeconfig for the
// Kubernetes gateway holding cr's session credential; the file goes when it exits.
func (a *app) kubeShell(ctx context.Context, g *jitgate.Grant, cr *httpapi.Credentials, command []string) error {
	dir, err := os.MkdirTemp("", "jitgate-kube-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = "https://" + net.JoinHostPort(cr.Host, cr.Port)
	if cr.CAData != "" {
		cluster.CertificateAuthorityData = []byte(cr.CAData)
	}
	user := clientcmdapi.NewAuthInfo()
	user.Token = cr.Password
	kctx := clientcmdapi.NewContext()
	name := "jitgate-" + g.Resource
	kctx.Cluster, kctx.AuthInfo = name, name
	cfg.Clusters[name], cfg.AuthInfos[name], cfg.Contexts[name], cfg.CurrentContext = cluster, user, kctx, name
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return err
	}
	if len(command) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		command = []string{sh}
		fmt.Fprintf(a.stderr, "A shell with KUBECONFIG set for %s through the jitgate gateway, as %s/%s under grant %d (%s); kubectl works here until you exit or the grant ends.\n",
			g.Resource, g.User, g.Role, g.ID, relative(g.EndsAt, time.Now()))
	}
	bin, err := exec.LookPath(command[0])
	if err != nil {
		return fmt.Errorf("%s: %w", command[0], err)
	}
	p := exec.CommandContext(ctx, bin, command[1:]...)
	p.Env = append(os.Environ(), "KUBECONFIG="+path)
	p.Stdin, p.Stdout, p.Stderr = a.stdin, a.rawStdout, a.rawStderr
	if err := p.Run(); err != nil {
		return silentError{err}
	}
	return nil
}

// selfPath is the path kubectl runs jitgate by: the command as it was invoked (a link keeps
// its name), made absolute, or else the running executable.
func selfPath() (string, error) {
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
	}
	return os.Executable()
}
