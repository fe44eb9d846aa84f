// Package config reads jitgate's YAML configuration file. Decoding is strict (unknown keys are
// errors) and every error names the file, the line and the field, so a typo is found at load
// time rather than in production.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"go.yaml.in/yaml/v3"
)

// Defaults applied where the file is silent.
const (
	DefaultHTTPAddr   = "127.0.0.1:8080"
	DefaultStore      = "sqlite:./jitgate.db"
	DefaultPendingTTL = 24 * time.Hour
	DefaultBreakGlass = time.Hour
	// DefaultReconcileInterval is how often the drift reconciler runs.
	DefaultReconcileInterval = time.Minute
	// DefaultReuseUpstream is how long the gateway keeps a cleanly ended session's upstream
	// connection for the grant's next session.
	DefaultReuseUpstream = 30 * time.Second
	// DefaultAuditFlush is how often the gateway writes recorded statements to the audit log.
	DefaultAuditFlush = 100 * time.Millisecond
	// DefaultCheckpointInterval is how often the audit chain's head is signed.
	DefaultCheckpointInterval = time.Minute
	// DefaultExpiryWarning is how long before its end a grant's owner is warned.
	DefaultExpiryWarning = 10 * time.Minute
)

// Config is the whole validated configuration.
type Config struct {
	// File is the path the config was read from, used in error messages.
	File    string  `yaml:"-"`
	Server  Server  `yaml:"server"`
	Gateway Gateway `yaml:"gateway"`
	Users   []User  `yaml:"users"`
	// Agents are non-human requesters (AI agents, bots, CI jobs), each with an owner.
	Agents    []Agent    `yaml:"agents"`
	Resources []Resource `yaml:"resources"`
	Policies  []Policy   `yaml:"policies"`
	// Notifications configures who is told what, where.
	Notifications Notifications `yaml:"notifications"`
	// OIDC configures single sign-on for the web UI and `jitgate login`.
	OIDC *OIDC `yaml:"oidc"`
	// Audit configures signed checkpoints of the audit log.
	Audit Audit `yaml:"audit"`

	pos positions
	// agentNames holds the agents' names during validation.
	agentNames map[string]bool
}

// Server configures the HTTP API and the store.
type Server struct {
	HTTPAddr string `yaml:"http_addr"`
	// Store is "sqlite:PATH" or a "postgres://" URL.
	Store  string   `yaml:"store"`
	Admins []string `yaml:"admins"`
	// ProvisionKeyEnv or ProvisionKeyFile names the secret (at least 32 characters) from which
	// the passwords of ephemeral database users are derived. Every server instance sharing a
	// store needs the same key. Required when a role has `provision: ephemeral`.
	ProvisionKeyEnv  string `yaml:"provision_key_env"`
	ProvisionKeyFile string `yaml:"provision_key_file"`
	// ReconcileInterval is how often the drift reconciler runs (default 1m).
	ReconcileInterval      string        `yaml:"reconcile_interval"`
	ReconcileIntervalValue time.Duration `yaml:"-"`
	// DrainTimeout caps how long a graceful shutdown (SIGTERM or SIGINT) waits for the
	// gateways' live sessions to end on their own or with their grants, after the listeners
	// have closed (a load balancer then sends new connections to another instance). Empty
	// (the default): no cap; each session ends at its grant's end at the latest. "0s": end
	// them at once. A second signal ends them at once in any case.
	DrainTimeout string `yaml:"drain_timeout"`
	// DrainTimeoutValue is DrainTimeout parsed; negative for no cap.
	DrainTimeoutValue time.Duration `yaml:"-"`
}

// Gateway configures the protocol gateways.
type Gateway struct {
	Postgres *Listener `yaml:"postgres"`
	MySQL    *Listener `yaml:"mysql"`
	// Kubernetes is the Kubernetes API gateway (HTTPS only; kubectl sends bearer tokens).
	// Of the Listener options it takes addr, tls_cert, tls_key, audit_flush and the
	// max_unauthenticated limits.
	Kubernetes *Listener `yaml:"kubernetes"`
}

// Listener configures one protocol gateway (gateway.postgres, gateway.mysql): every protocol
// takes the same options.
type Listener struct {
	Addr              string `yaml:"addr"`
	TLSCert           string `yaml:"tls_cert"`
	TLSKey            string `yaml:"tls_key"`
	InsecurePlaintext bool   `yaml:"insecure_plaintext"`
	// ReuseUpstream is how long the upstream connection of a session its client closed
	// cleanly is kept, reset (PostgreSQL: DISCARD ALL; MySQL: COM_RESET_CONNECTION), for the
	// same grant's next session (default 30s; "0" turns reuse off).
	ReuseUpstream      string        `yaml:"reuse_upstream"`
	ReuseUpstreamValue time.Duration `yaml:"-"`
	// AuditFlush is how often the gateway writes the statements it recorded to the audit
	// log (default 100ms, from 1ms to 10s): shorter reaches the store sooner and costs more
	// CPU per statement.
	AuditFlush      string        `yaml:"audit_flush"`
	AuditFlushValue time.Duration `yaml:"-"`
	// Relay is how established sessions are relayed: "loop" (default; event-loop threads
	// with epoll, Linux only) or "goroutines" (a goroutine per direction).
	Relay string `yaml:"relay"`
	// Loops is how many event-loop threads relay sessions with relay: loop (default 0: one
	// per CPU, at most 8; from 1 to 64). They serve every gateway in the process, so the first
	// gateway started sets it.
	Loops int `yaml:"loops"`
	// MaxUnauthenticated caps the connections that have not finished logging in (default 512),
	// MaxUnauthenticatedPerSource those from one IP address (default 32): idle or slow clients
	// cannot starve real ones. A connection over a cap is refused at once (SQLSTATE 53300).
	MaxUnauthenticated          int `yaml:"max_unauthenticated"`
	MaxUnauthenticatedPerSource int `yaml:"max_unauthenticated_per_source"`
}

// Audit configures signed checkpoints: the server signs the audit chain's head with a key kept
// outside the store, every CheckpointInterval and at shutdown, and hands each checkpoint to
// the witnesses, which keep it outside the store too. `audit --verify` then also catches a
// cut or rewritten end of the log, up to the last checkpoint.
type Audit struct {
	// SigningKeyFile or SigningKeyEnv holds the Ed25519 signing key, PEM (PKCS #8), as
	// `jitgate audit keygen` writes it.
	SigningKeyFile string `yaml:"signing_key_file"`
	SigningKeyEnv  string `yaml:"signing_key_env"`
	// CheckpointInterval is how often the head is signed when it moved (default 1m, from 1s to
	// 1h): events newer than the last checkpoint are what could still go unnoticed.
	CheckpointInterval      string        `yaml:"checkpoint_interval"`
	CheckpointIntervalValue time.Duration `yaml:"-"`
	// WitnessFile is a file each checkpoint is appended to, as a JSON line. Keep it where the
	// store's users cannot write.
	WitnessFile string `yaml:"witness_file"`
	// WitnessWebhooks receive each checkpoint as signed JSON.
	WitnessWebhooks []WebhookSink `yaml:"witness_webhooks"`
}

// Enabled reports whether checkpoints are configured (a key and at least one witness).
func (a *Audit) Enabled() bool {
	return (a.SigningKeyFile != "" || a.SigningKeyEnv != "") && (a.WitnessFile != "" || len(a.WitnessWebhooks) > 0)
}

// User is a static directory entry.
type User struct {
	Name   string   `yaml:"name"`
	Groups []string `yaml:"groups"`
	// Slack is the user's Slack member ID (U0123...), for mentions in Slack notifications.
	Slack string `yaml:"slack"`
}

// Agent is a non-human requester: an AI agent, a bot or a CI job. It may request and use access
// under the policies that name it (requesters.agents) and never approves. Its owner is the
// person who answers for it: they may mint its API tokens, see and revoke its grants, and
// approve its requests where a policy's step says `owner: true`.
type Agent struct {
	Name string `yaml:"name"`
	// Owner is a user (of this file, or of the identity provider when OIDC is configured).
	Owner  string   `yaml:"owner"`
	Groups []string `yaml:"groups"`
	// Description says what the agent is for; it is shown to approvers.
	Description string `yaml:"description"`
}

// OIDC is an OpenID Connect provider users sign in with.
type OIDC struct {
	// Name labels the sign-in button.
	Name             string `yaml:"name"`
	Issuer           string `yaml:"issuer"`
	ClientID         string `yaml:"client_id"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is this server's /auth/callback URL, as registered at the provider.
	RedirectURL string `yaml:"redirect_url"`
	// UsernameClaim (default preferred_username) and GroupsClaim (default groups) name the ID
	// token claims that give the jitgate user name and groups.
	UsernameClaim string   `yaml:"username_claim"`
	GroupsClaim   string   `yaml:"groups_claim"`
	Scopes        []string `yaml:"scopes"`
}

// Notifications configures the notification sinks.
type Notifications struct {
	// BaseURL is the web address of this jitgate server, for links in messages.
	BaseURL string `yaml:"base_url"`
	// ExpiryWarning is how long before a grant ends its owner is warned (default 10m; "0"
	// turns the warning off).
	ExpiryWarning      string        `yaml:"expiry_warning"`
	ExpiryWarningValue time.Duration `yaml:"-"`
	// Slack posts to an incoming webhook whose URL (a secret) comes from the environment or a
	// file.
	Slack *SlackSink `yaml:"slack"`
	// Webhooks receive every message as signed JSON.
	Webhooks []WebhookSink `yaml:"webhooks"`
}

// SlackSink names where the Slack incoming webhook URL comes from.
type SlackSink struct {
	WebhookURLEnv  string `yaml:"webhook_url_env"`
	WebhookURLFile string `yaml:"webhook_url_file"`
}

// WebhookSink is a generic notification receiver.
type WebhookSink struct {
	URL        string `yaml:"url"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
}

// Secret names where a login's password comes from: an environment variable or a file.
type Secret struct {
	User         string `yaml:"user"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
}

// Resource is a target access is granted to.
type Resource struct {
	Name     string `yaml:"name"`
	Kind     string `yaml:"kind"`
	Address  string `yaml:"address"`
	Database string `yaml:"database"`
	// SSLMode is how jitgate connects to a postgres resource: disable, prefer (default),
	// require, verify-ca or verify-full.
	SSLMode     string  `yaml:"sslmode"`
	Credentials *Secret `yaml:"credentials"`
	// Owner is who receives the objects an ephemeral PostgreSQL user created, when it is dropped
	// (REASSIGN OWNED); it defaults to the credentials' user, so nothing is lost.
	Owner string `yaml:"owner"`
	// ConnectionLimit caps the connections of each ephemeral user (default 10).
	ConnectionLimit int `yaml:"connection_limit"`
	// SecretEnv or SecretFile names the key webhook requests are signed with (HMAC-SHA256).
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	// CAFile is the CA bundle a kubernetes resource's API server is checked with.
	CAFile string `yaml:"ca_file"`
	// TokenEnv or TokenFile holds jitgate's own bearer token for a kubernetes resource;
	// ClientCert and ClientKey a client certificate instead. It needs to manage RoleBindings
	// and ClusterRoleBindings and to impersonate users and groups (see docs/kubernetes.md).
	TokenEnv   string `yaml:"token_env"`
	TokenFile  string `yaml:"token_file"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	Roles      []Role `yaml:"roles"`
}

// Role is a least-privilege permission set on a resource.
type Role struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Grants      []string `yaml:"grants"`
	Upstream    *Secret  `yaml:"upstream"`
	Provision   string   `yaml:"provision"`
	// Namespaces are where a kubernetes role's grants are bound (RoleBindings); empty binds
	// its ClusterRoles cluster-wide (ClusterRoleBindings).
	Namespaces []string `yaml:"namespaces"`
}

// Policy says who may request which roles, for how long, and who approves.
type Policy struct {
	Name          string      `yaml:"name"`
	Requesters    Principals  `yaml:"requesters"`
	Resources     []string    `yaml:"resources"`
	Roles         []string    `yaml:"roles"`
	MaxDuration   string      `yaml:"max_duration"`
	PendingTTL    string      `yaml:"pending_ttl"`
	RequireReason bool        `yaml:"require_reason"`
	Approval      Approval    `yaml:"approval"`
	AutoApprove   string      `yaml:"auto_approve"`
	BreakGlass    *BreakGlass `yaml:"break_glass"`

	// Parsed durations, filled by validation.
	MaxDurationValue time.Duration `yaml:"-"`
	PendingTTLValue  time.Duration `yaml:"-"`
}

// Principals names users, groups and agents. Users and groups match people only; agents match
// only by name under Agents ("*" for every agent), so an agent never slips into a policy
// written for people through a group it shares with them.
type Principals struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
	// Agents names agents (requesters only; agents never approve), or "*" for every agent.
	Agents []string `yaml:"agents"`
	// Owner, in an approval step, makes the requester's owner an approver of that step: an
	// agent's request then needs the approval of the person who answers for it.
	Owner bool `yaml:"owner"`
}

// Approval lists the approval steps, run in order.
type Approval struct {
	Steps []Step `yaml:"steps"`
}

// Step needs Min distinct approvers from Approvers.
type Step struct {
	Approvers Principals `yaml:"approvers"`
	Min       int        `yaml:"min"`
}

// BreakGlass configures emergency self-activation.
type BreakGlass struct {
	Allowed          bool          `yaml:"allowed"`
	MaxDuration      string        `yaml:"max_duration"`
	MaxDurationValue time.Duration `yaml:"-"`
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data, naming file in errors.
func Parse(file string, data []byte) (*Config, error) {
	cfg := &Config{File: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	cfg.pos = indexPositions(&root)
	if err := checkInlineSecrets(file, &root); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// yamlError rewrites yaml's "yaml: line N: msg" errors as "file:N: msg".
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, m := range te.Errors {
			msgs = append(msgs, file+":"+strings.TrimPrefix(m, "line "))
		}
		return &jitgate.Error{Code: jitgate.EINVALID, Message: strings.Join(msgs, "\n")}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return &jitgate.Error{Code: jitgate.EINVALID, Message: file + ":" + rest}
	}
	return &jitgate.Error{Code: jitgate.EINVALID, Message: file + ": " + msg}
}

// checkInlineSecrets refuses a "password" key anywhere: secrets come from the environment or
// a file, never from the config itself (which ends up in repositories and backups).
func checkInlineSecrets(file string, n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Value == "password" || k.Value == "secret" || k.Value == "token" {
				return jitgate.Errorf(jitgate.EINVALID,
					"%s:%d: inline %s is not allowed; name it with %s_env or %s_file", file, k.Line, k.Value, k.Value, k.Value)
			}
		}
	}
	for _, c := range n.Content {
		if err := checkInlineSecrets(file, c); err != nil {
			return err
		}
	}
	return nil
}

// positions maps a dotted field path ("policies.2.max_duration") to its line.
type positions map[string]int

func indexPositions(root *yaml.Node) positions {
	p := positions{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			p[path] = n.Line
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				child := join(path, k.Value)
				p[child] = k.Line
				walk(v, child)
				if v.Kind != yaml.ScalarNode {
					p[child] = k.Line
				}
			}
		case yaml.SequenceNode:
			p[path] = n.Line
			for i, c := range n.Content {
				child := join(path, strconv.Itoa(i))
				p[child] = c.Line
				walk(c, child)
				p[child] = c.Line
			}
		}
	}
	walk(root, "")
	return p
}

func join(path, elem string) string {
	if path == "" {
		return elem
	}
	return path + "." + elem
}

// Line returns the line of the field at the dotted path, or of its nearest ancestor present in
// the file (a missing field is reported at its parent).
func (c *Config) Line(path string) int {
	for {
		if l, ok := c.pos[path]; ok {
			return l
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			return 1
		}
		path = path[:i]
	}
}

// Errorf returns an EINVALID error positioned at the field path: "file:line: field: msg".
func (c *Config) Errorf(path, format string, args ...any) error {
	return jitgate.Errorf(jitgate.EINVALID, "%s:%d: %s: %s", c.File, c.Line(path), path, fmt.Sprintf(format, args...))
}
