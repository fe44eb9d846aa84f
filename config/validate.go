package config

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/jitgate/jitgate"
)

// ParseDuration parses a Go duration ("90m", "1h30m") or a whole number of days ("7d").
func ParseDuration(s string) (time.Duration, error) { return jitgate.ParseDuration(s) }

func (c *Config) validate() error {
	if c.Server.HTTPAddr == "" {
		c.Server.HTTPAddr = DefaultHTTPAddr
	}
	if c.Server.Store == "" {
		c.Server.Store = DefaultStore
	}
	if s := c.Server.Store; !strings.HasPrefix(s, "sqlite:") && !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return c.Errorf("server.store", "must be sqlite:PATH or a postgres:// URL")
	}
	if c.Server.ProvisionKeyEnv != "" && c.Server.ProvisionKeyFile != "" {
		return c.Errorf("server", "set provision_key_env or provision_key_file, not both")
	}
	c.Server.ReconcileIntervalValue = DefaultReconcileInterval
	if c.Server.ReconcileInterval != "" {
		d, err := ParseDuration(c.Server.ReconcileInterval)
		if err != nil || d < time.Second {
			return c.Errorf("server.reconcile_interval", "want a duration of at least 1s, got %q", c.Server.ReconcileInterval)
		}
		c.Server.ReconcileIntervalValue = d
	}
	c.Server.DrainTimeoutValue = -1
	if c.Server.DrainTimeout != "" {
		d, err := ParseDuration(c.Server.DrainTimeout)
		if err != nil || d < 0 {
			return c.Errorf("server.drain_timeout", "want a duration such as 10m (0s: end the sessions at once), got %q", c.Server.DrainTimeout)
		}
		c.Server.DrainTimeoutValue = d
	}

	users := map[string]bool{}
	groupMembers := map[string][]string{}
	for i, u := range c.Users {
		p := fmt.Sprintf("users.%d", i)
		if !jitgate.ValidName(u.Name) {
			return c.Errorf(p+".name", "invalid user name %q (lower-case letters, digits, '_', '.', '@', '-'; at most 63)", u.Name)
		}
		if users[u.Name] {
			return c.Errorf(p+".name", "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		for j, g := range u.Groups {
			if !jitgate.ValidName(g) {
				return c.Errorf(fmt.Sprintf("%s.groups.%d", p, j), "invalid group name %q", g)
			}
			groupMembers[g] = append(groupMembers[g], u.Name)
		}
	}
	agents := map[string]bool{}
	for i, a := range c.Agents {
		p := fmt.Sprintf("agents.%d", i)
		if !jitgate.ValidName(a.Name) {
			return c.Errorf(p+".name", "invalid agent name %q (lower-case letters, digits, '_', '.', '@', '-'; at most 63)", a.Name)
		}
		if users[a.Name] || agents[a.Name] {
			return c.Errorf(p+".name", "duplicate name %q: users and agents share one namespace", a.Name)
		}
		agents[a.Name] = true
		for j, g := range a.Groups {
			if !jitgate.ValidName(g) {
				return c.Errorf(fmt.Sprintf("%s.groups.%d", p, j), "invalid group name %q", g)
			}
		}
		if len(a.Description) > 200 || strings.IndexFunc(a.Description, unicode.IsControl) >= 0 {
			return c.Errorf(p+".description", "at most 200 characters, no control characters")
		}
	}
	for i, a := range c.Agents {
		p := fmt.Sprintf("agents.%d.owner", i)
		switch {
		case a.Owner == "":
			return c.Errorf(p, "missing: every agent needs a user who answers for it")
		case agents[a.Owner]:
			return c.Errorf(p, "%q is an agent; an agent's owner is a person", a.Owner)
		case !jitgate.ValidName(a.Owner):
			return c.Errorf(p, "invalid user name %q", a.Owner)
		case !users[a.Owner] && c.OIDC == nil:
			return c.Errorf(p, "unknown user %q", a.Owner)
		}
	}
	c.agentNames = agents
	for i, a := range c.Server.Admins {
		if agents[a] {
			return c.Errorf(fmt.Sprintf("server.admins.%d", i), "%q is an agent; agents are never admins", a)
		}
		if !users[a] {
			return c.Errorf(fmt.Sprintf("server.admins.%d", i), "unknown user %q", a)
		}
	}

	resources := map[string]*Resource{}
	for i := range c.Resources {
		r := &c.Resources[i]
		p := fmt.Sprintf("resources.%d", i)
		if !jitgate.ValidName(r.Name) {
			return c.Errorf(p+".name", "invalid resource name %q", r.Name)
		}
		if resources[r.Name] != nil {
			return c.Errorf(p+".name", "duplicate resource %q", r.Name)
		}
		resources[r.Name] = r
		switch r.Kind {
		case jitgate.KindPostgres, jitgate.KindMySQL, jitgate.KindWebhook, jitgate.KindKubernetes:
		case "":
			return c.Errorf(p+".kind", "missing (postgres, mysql, kubernetes or webhook)")
		default:
			return c.Errorf(p+".kind", "unknown kind %q (postgres, mysql, kubernetes or webhook)", r.Kind)
		}
		switch r.SSLMode {
		case "", "disable", "prefer", "require", "verify-ca", "verify-full":
		default:
			return c.Errorf(p+".sslmode", "unknown sslmode %q (disable, prefer, require, verify-ca, verify-full)", r.SSLMode)
		}
		if r.Credentials != nil {
			if err := c.validateSecret(p+".credentials", r.Credentials); err != nil {
				return err
			}
		}
		if err := c.validateTarget(p, r); err != nil {
			return err
		}
		if len(r.Roles) == 0 {
			return c.Errorf(p+".roles", "a resource needs at least one role")
		}
		roles := map[string]bool{}
		for j := range r.Roles {
			ro := &r.Roles[j]
			rp := fmt.Sprintf("%s.roles.%d", p, j)
			if !jitgate.ValidName(ro.Name) {
				return c.Errorf(rp+".name", "invalid role name %q", ro.Name)
			}
			if roles[ro.Name] {
				return c.Errorf(rp+".name", "duplicate role %q in resource %q", ro.Name, r.Name)
			}
			roles[ro.Name] = true
			for k, g := range ro.Grants {
				if g == "" || strings.IndexFunc(g, unicode.IsControl) >= 0 || len(g) > 63 {
					return c.Errorf(fmt.Sprintf("%s.grants.%d", rp, k), "invalid privilege name %q", g)
				}
				if r.Kind == jitgate.KindKubernetes && !kubeGrant.MatchString(g) {
					return c.Errorf(fmt.Sprintf("%s.grants.%d", rp, k),
						"invalid Kubernetes grant %q: give clusterrole/NAME or role/NAME (a Role needs namespaces)", g)
				}
				if r.Kind == jitgate.KindKubernetes && strings.HasPrefix(g, "role/") && len(ro.Namespaces) == 0 {
					return c.Errorf(fmt.Sprintf("%s.grants.%d", rp, k),
						"%q is a namespaced Role: list the namespaces it is bound in under namespaces", g)
				}
				if r.Kind == jitgate.KindMySQL && !mysqlGrant.MatchString(g) {
					return c.Errorf(fmt.Sprintf("%s.grants.%d", rp, k),
						"invalid MySQL grant %q: give a role name (letters, digits, _ . -) or privileges like \"SELECT, INSERT ON app.*\"", g)
				}
			}
			if err := c.validateKubeRole(rp, r, ro); err != nil {
				return err
			}
			if ro.Upstream != nil {
				if err := c.validateSecret(rp+".upstream", ro.Upstream); err != nil {
					return err
				}
			}
			switch ro.Provision {
			case jitgate.ProvisionNone, jitgate.ProvisionEphemeral:
			default:
				return c.Errorf(rp+".provision", "unknown provisioning %q (ephemeral, or leave it out)", ro.Provision)
			}
			if ro.Provision == jitgate.ProvisionEphemeral && r.Credentials == nil {
				return c.Errorf(rp+".provision", "ephemeral provisioning needs the resource's credentials")
			}
			if ro.Provision == jitgate.ProvisionEphemeral && r.Kind == jitgate.KindWebhook {
				return c.Errorf(rp+".provision", "a webhook resource provisions every role; leave provision out")
			}
			if ro.Provision == jitgate.ProvisionEphemeral && c.Server.ProvisionKeyEnv == "" && c.Server.ProvisionKeyFile == "" {
				return c.Errorf(rp+".provision", "ephemeral provisioning needs server.provision_key_env or server.provision_key_file (the key ephemeral passwords are derived from)")
			}
		}
	}

	if err := c.validateGateway(); err != nil {
		return err
	}
	if err := c.validateNotifications(); err != nil {
		return err
	}
	if err := c.validateOIDC(); err != nil {
		return err
	}
	if err := c.validateAudit(); err != nil {
		return err
	}
	names := map[string]bool{}
	for i := range c.Policies {
		if err := c.validatePolicy(i, names, users, groupMembers, resources); err != nil {
			return err
		}
	}
	return nil
}

// mysqlGrant is what a MySQL role's grant may be: a role name, or privileges on a database
// or table ("SELECT, INSERT ON app.*", "SELECT ON app.orders").
// kubeGrant is a kubernetes role's grant: the ClusterRole or Role it binds.
var kubeGrant = regexp.MustCompile(`^(?:clusterrole|role)/[a-z0-9][a-z0-9:._-]{0,252}$`)

// kubeNamespace is a Kubernetes namespace name (an RFC 1123 label).
var kubeNamespace = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

var mysqlGrant = regexp.MustCompile(`^(?:[A-Za-z0-9_.-]+|[A-Za-z ]+(?:, *[A-Za-z ]+)* ON (?:\*|[A-Za-z0-9_$]+)\.(?:\*|[A-Za-z0-9_$]+))$`)

// httpURL reports whether s is an absolute http or https URL with a host.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// validateOIDC checks the single sign-on section.
func (c *Config) validateOIDC() error {
	o := c.OIDC
	if o == nil {
		return nil
	}
	for _, f := range []struct{ key, val string }{{"issuer", o.Issuer}, {"redirect_url", o.RedirectURL}} {
		if !httpURL(f.val) {
			return c.Errorf("oidc."+f.key, "want an http(s) URL, got %q", f.val)
		}
	}
	if u, _ := url.Parse(o.RedirectURL); u.Path != "/auth/callback" {
		return c.Errorf("oidc.redirect_url", "must end in /auth/callback (jitgate's callback path), got %q", o.RedirectURL)
	}
	if o.ClientID == "" {
		return c.Errorf("oidc.client_id", "missing")
	}
	if (o.ClientSecretEnv == "") == (o.ClientSecretFile == "") {
		return c.Errorf("oidc", "set one of client_secret_env or client_secret_file")
	}
	return nil
}

// slackMember is the shape of a Slack member ID.
var slackMember = regexp.MustCompile(`^[UW][A-Z0-9]{2,20}$`)

// validateNotifications checks the notifications section and the users' Slack IDs.
func (c *Config) validateNotifications() error {
	n := &c.Notifications
	for i, u := range c.Users {
		if u.Slack != "" && !slackMember.MatchString(u.Slack) {
			return c.Errorf(fmt.Sprintf("users.%d.slack", i), "%q is not a Slack member ID (like U0123ABCD)", u.Slack)
		}
	}
	if n.BaseURL != "" {
		if !httpURL(n.BaseURL) {
			return c.Errorf("notifications.base_url", "want an http(s) URL, got %q", n.BaseURL)
		}
	}
	n.ExpiryWarningValue = DefaultExpiryWarning
	if n.ExpiryWarning == "0" {
		n.ExpiryWarningValue = 0
	} else if n.ExpiryWarning != "" {
		d, err := ParseDuration(n.ExpiryWarning)
		if err != nil || d < time.Second {
			return c.Errorf("notifications.expiry_warning", "want a duration of at least 1s, or 0 for none; got %q", n.ExpiryWarning)
		}
		n.ExpiryWarningValue = d
	}
	if s := n.Slack; s != nil && (s.WebhookURLEnv == "") == (s.WebhookURLFile == "") {
		return c.Errorf("notifications.slack", "set one of webhook_url_env or webhook_url_file (the URL is a secret)")
	}
	return c.validateWebhooks("notifications.webhooks", n.Webhooks)
}

// validateWebhooks checks signed webhooks: an http(s) URL and one source of the HMAC key.
func (c *Config) validateWebhooks(path string, hooks []WebhookSink) error {
	for i, w := range hooks {
		p := fmt.Sprintf("%s.%d", path, i)
		if !httpURL(w.URL) {
			return c.Errorf(p+".url", "want an http(s) URL, got %q", w.URL)
		}
		if (w.SecretEnv == "") == (w.SecretFile == "") {
			return c.Errorf(p, "set one of secret_env or secret_file (the HMAC signing key)")
		}
	}
	return nil
}

// validateAudit checks the audit section: a key from one place, witnesses, an interval.
func (c *Config) validateAudit() error {
	a := &c.Audit
	if a.SigningKeyFile != "" && a.SigningKeyEnv != "" {
		return c.Errorf("audit", "set one of signing_key_file or signing_key_env, not both")
	}
	hasKey := a.SigningKeyFile != "" || a.SigningKeyEnv != ""
	hasWitness := a.WitnessFile != "" || len(a.WitnessWebhooks) > 0
	switch {
	case hasKey && !hasWitness:
		return c.Errorf("audit", "a signing key needs a witness: set witness_file or witness_webhooks (where the signed checkpoints are kept, outside the store)")
	case hasWitness && !hasKey:
		return c.Errorf("audit", "witnesses need a signing key: set signing_key_file or signing_key_env (make one with: jitgate audit keygen)")
	}
	a.CheckpointIntervalValue = DefaultCheckpointInterval
	if a.CheckpointInterval != "" {
		d, err := ParseDuration(a.CheckpointInterval)
		if err != nil || d < time.Second || d > time.Hour {
			return c.Errorf("audit.checkpoint_interval", "want a duration from 1s to 1h, got %q", a.CheckpointInterval)
		}
		a.CheckpointIntervalValue = d
	}
	return c.validateWebhooks("audit.witness_webhooks", a.WitnessWebhooks)
}

// validateTarget checks how jitgate reaches a resource: a host:port for databases, a URL and a
// signing secret for webhooks.
func (c *Config) validateTarget(p string, r *Resource) error {
	if r.Kind != jitgate.KindKubernetes && (r.CAFile != "" || r.TokenEnv != "" || r.TokenFile != "" || r.ClientCert != "" || r.ClientKey != "") {
		return c.Errorf(p, "ca_file, token_env, token_file, client_cert and client_key are for kubernetes resources")
	}
	switch r.Kind {
	case jitgate.KindKubernetes:
		return c.validateKube(p, r)
	case jitgate.KindWebhook:
		if !httpURL(r.Address) {
			return c.Errorf(p+".address", "a webhook resource needs an http(s) URL, got %q", r.Address)
		}
		if r.SecretEnv == "" && r.SecretFile == "" {
			return c.Errorf(p, "a webhook resource needs secret_env or secret_file (the HMAC signing key)")
		}
		if r.SecretEnv != "" && r.SecretFile != "" {
			return c.Errorf(p, "set secret_env or secret_file, not both")
		}
	default:
		if r.SecretEnv != "" || r.SecretFile != "" {
			return c.Errorf(p, "secret_env and secret_file are for webhook resources")
		}
		if r.Address != "" {
			if _, _, err := net.SplitHostPort(r.Address); err != nil {
				return c.Errorf(p+".address", "want host:port, got %q", r.Address)
			}
		}
	}
	if r.Owner != "" && (r.Kind != jitgate.KindPostgres || strings.IndexFunc(r.Owner, unicode.IsControl) >= 0 || len(r.Owner) > 63) {
		return c.Errorf(p+".owner", "owner %q: want a PostgreSQL role name (postgres resources only)", r.Owner)
	}
	if r.ConnectionLimit < 0 {
		return c.Errorf(p+".connection_limit", "must not be negative")
	}
	return nil
}

func (c *Config) validateSecret(p string, s *Secret) error {
	if s.User == "" {
		return c.Errorf(p+".user", "missing")
	}
	if s.PasswordEnv != "" && s.PasswordFile != "" {
		return c.Errorf(p, "set password_env or password_file, not both")
	}
	return nil
}

func (c *Config) validatePolicy(i int, names map[string]bool, users map[string]bool, groupMembers map[string][]string, resources map[string]*Resource) error {
	po := &c.Policies[i]
	p := fmt.Sprintf("policies.%d", i)
	if !jitgate.ValidName(po.Name) {
		return c.Errorf(p+".name", "invalid policy name %q", po.Name)
	}
	if names[po.Name] {
		return c.Errorf(p+".name", "duplicate policy %q", po.Name)
	}
	names[po.Name] = true

	if len(po.Requesters.Users)+len(po.Requesters.Groups)+len(po.Requesters.Agents) == 0 {
		return c.Errorf(p+".requesters", "name at least one user, group or agent")
	}
	if po.Requesters.Owner {
		return c.Errorf(p+".requesters.owner", "owner names the requester's owner as an approver; it belongs in an approval step")
	}
	if err := c.checkPrincipals(p+".requesters", po.Requesters, users); err != nil {
		return err
	}
	for j, a := range po.Requesters.Agents {
		if a != "*" && !c.agentNames[a] {
			return c.Errorf(fmt.Sprintf("%s.requesters.agents.%d", p, j), "unknown agent %q", a)
		}
	}
	peopleRequest := len(po.Requesters.Users)+len(po.Requesters.Groups) > 0
	if len(po.Resources) == 0 {
		return c.Errorf(p+".resources", "name at least one resource (or \"*\")")
	}
	var covered []*Resource
	for j, r := range po.Resources {
		if r == "*" {
			for k := range c.Resources {
				covered = append(covered, &c.Resources[k])
			}
			continue
		}
		res := resources[r]
		if res == nil {
			return c.Errorf(fmt.Sprintf("%s.resources.%d", p, j), "unknown resource %q", r)
		}
		covered = append(covered, res)
	}
	if len(po.Roles) == 0 {
		return c.Errorf(p+".roles", "name at least one role (or \"*\")")
	}
	for j, ro := range po.Roles {
		if ro == "*" {
			continue
		}
		found := false
		for _, res := range covered {
			if slices.ContainsFunc(res.Roles, func(x Role) bool { return x.Name == ro }) {
				found = true
			}
		}
		if !found {
			return c.Errorf(fmt.Sprintf("%s.roles.%d", p, j), "no resource of this policy has a role %q", ro)
		}
	}

	var err error
	if po.MaxDuration == "" {
		return c.Errorf(p+".max_duration", "missing (e.g. 4h)")
	}
	if po.MaxDurationValue, err = ParseDuration(po.MaxDuration); err != nil {
		return c.Errorf(p+".max_duration", "%v", err)
	}
	if po.MaxDurationValue < time.Minute {
		return c.Errorf(p+".max_duration", "must be at least 1m")
	}
	po.PendingTTLValue = DefaultPendingTTL
	if po.PendingTTL != "" {
		if po.PendingTTLValue, err = ParseDuration(po.PendingTTL); err != nil {
			return c.Errorf(p+".pending_ttl", "%v", err)
		}
		if po.PendingTTLValue < time.Minute {
			return c.Errorf(p+".pending_ttl", "must be at least 1m")
		}
	}

	if len(po.Approval.Steps) == 0 {
		return c.Errorf(p+".approval.steps", "a policy needs at least one approval step (use auto_approve: 'true' to approve everything)")
	}
	for j := range po.Approval.Steps {
		st := &po.Approval.Steps[j]
		sp := fmt.Sprintf("%s.approval.steps.%d", p, j)
		if len(st.Approvers.Agents) > 0 {
			return c.Errorf(sp+".approvers.agents", "agents never approve")
		}
		if len(st.Approvers.Users)+len(st.Approvers.Groups) == 0 && !st.Approvers.Owner {
			return c.Errorf(sp+".approvers", "name at least one approver user or group, or owner: true")
		}
		if st.Approvers.Owner && peopleRequest && len(st.Approvers.Users)+len(st.Approvers.Groups) == 0 {
			return c.Errorf(sp+".approvers.owner", "people have no owner, so this step could never pass for the policy's user and group requesters: make the policy's requesters agents only, or add approver users or groups")
		}
		if err := c.checkPrincipals(sp+".approvers", st.Approvers, users); err != nil {
			return err
		}
		if st.Min == 0 {
			st.Min = 1
		}
		if st.Min < 0 {
			return c.Errorf(sp+".min", "must be at least 1")
		}
		// Count the approvers the static directory knows; a step that can never reach its
		// quorum would leave every request pending until it times out.
		eligible := map[string]bool{}
		for _, u := range st.Approvers.Users {
			eligible[u] = true
		}
		for _, g := range st.Approvers.Groups {
			for _, u := range groupMembers[g] {
				eligible[u] = true
			}
		}
		if st.Approvers.Owner {
			eligible[" owner"] = true // the requester's owner: one more person
		}
		if len(eligible) < st.Min {
			return c.Errorf(sp+".min", "needs %d distinct approvers but only %d users are eligible", st.Min, len(eligible))
		}
	}
	if po.BreakGlass != nil && po.BreakGlass.Allowed {
		po.BreakGlass.MaxDurationValue = DefaultBreakGlass
		if po.BreakGlass.MaxDuration != "" {
			if po.BreakGlass.MaxDurationValue, err = ParseDuration(po.BreakGlass.MaxDuration); err != nil {
				return c.Errorf(p+".break_glass.max_duration", "%v", err)
			}
		}
		if po.BreakGlass.MaxDurationValue < time.Minute || po.BreakGlass.MaxDurationValue > po.MaxDurationValue {
			return c.Errorf(p+".break_glass.max_duration", "must be between 1m and the policy's max_duration (%s)", po.MaxDurationValue)
		}
	}
	return nil
}

func (c *Config) checkPrincipals(p string, pr Principals, users map[string]bool) error {
	for j, u := range pr.Users {
		if c.agentNames[u] {
			return c.Errorf(fmt.Sprintf("%s.users.%d", p, j), "%q is an agent: name it under agents (requesters only; agents never approve)", u)
		}
		if !users[u] {
			return c.Errorf(fmt.Sprintf("%s.users.%d", p, j), "unknown user %q", u)
		}
	}
	for j, g := range pr.Groups {
		if !jitgate.ValidName(g) {
			return c.Errorf(fmt.Sprintf("%s.groups.%d", p, j), "invalid group name %q", g)
		}
	}
	return nil
}

// DomainResources returns the resources as domain values.
func (c *Config) DomainResources() []*jitgate.Resource {
	out := make([]*jitgate.Resource, 0, len(c.Resources))
	for _, r := range c.Resources {
		dr := &jitgate.Resource{Name: r.Name, Kind: r.Kind, Address: r.Address, Database: r.Database, SSLMode: r.SSLMode,
			Owner: r.Owner, ConnectionLimit: r.ConnectionLimit, CAFile: r.CAFile, ClientCert: r.ClientCert, ClientKey: r.ClientKey,
			Token:         jitgate.Secret{User: r.Name + " token", PasswordEnv: r.TokenEnv, PasswordFile: r.TokenFile},
			SigningSecret: jitgate.Secret{User: r.Name + " signing key", PasswordEnv: r.SecretEnv, PasswordFile: r.SecretFile}}
		if r.Credentials != nil {
			dr.Credentials = jitgate.Secret(*r.Credentials)
		}
		for _, ro := range r.Roles {
			role := jitgate.Role{Name: ro.Name, Description: ro.Description, Grants: ro.Grants, Provision: ro.Provision,
				Namespaces: ro.Namespaces}
			if ro.Upstream != nil {
				s := jitgate.Secret(*ro.Upstream)
				role.Upstream = &s
			}
			dr.Roles = append(dr.Roles, role)
		}
		out = append(out, dr)
	}
	return out
}

// Directory returns the static users and the agents as a jitgate.Directory.
func (c *Config) Directory() jitgate.Directory {
	d := StaticDirectory{}
	for _, u := range c.Users {
		d[u.Name] = &jitgate.User{Name: u.Name, Groups: slices.Clone(u.Groups)}
	}
	for _, a := range c.Agents {
		d[a.Name] = &jitgate.User{Name: a.Name, Groups: slices.Clone(a.Groups), Kind: jitgate.PrincipalAgent, Owner: a.Owner}
	}
	return d
}

// StaticDirectory is a Directory backed by a fixed map of users.
type StaticDirectory map[string]*jitgate.User

// LookupUser returns the named user or ENOTFOUND.
func (d StaticDirectory) LookupUser(_ context.Context, name string) (*jitgate.User, error) {
	u, ok := d[name]
	if !ok {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "unknown user %q", name)
	}
	return u, nil
}

// Users returns every user, sorted by name.
func (d StaticDirectory) Users(context.Context) ([]*jitgate.User, error) {
	out := make([]*jitgate.User, 0, len(d))
	for _, u := range d {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *jitgate.User) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// validateKube checks how jitgate reaches a kubernetes resource: an https API server URL and
// exactly one identity of its own (a token or a client certificate).
func (c *Config) validateKube(p string, r *Resource) error {
	u, err := url.Parse(r.Address)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return c.Errorf(p+".address", "a kubernetes resource needs its API server's https URL (e.g. https://k8s.internal:6443), got %q", r.Address)
	}
	if r.Credentials != nil || r.Database != "" || r.SSLMode != "" || r.Owner != "" || r.ConnectionLimit != 0 || r.SecretEnv != "" || r.SecretFile != "" {
		return c.Errorf(p, "credentials, database, sslmode, owner, connection_limit, secret_env and secret_file are not for kubernetes resources (use token_env, token_file or client_cert and client_key)")
	}
	token := r.TokenEnv != "" || r.TokenFile != ""
	cert := r.ClientCert != "" || r.ClientKey != ""
	switch {
	case r.TokenEnv != "" && r.TokenFile != "":
		return c.Errorf(p, "set token_env or token_file, not both")
	case token && cert:
		return c.Errorf(p, "set a token (token_env or token_file) or a client certificate (client_cert and client_key), not both")
	case !token && !cert:
		return c.Errorf(p, "a kubernetes resource needs jitgate's own identity in the cluster: token_env, token_file, or client_cert and client_key")
	case cert && (r.ClientCert == "" || r.ClientKey == ""):
		return c.Errorf(p, "set both client_cert and client_key")
	}
	return nil
}

// validateKubeRole checks what only kubernetes roles have (namespaces), and what they do not.
func (c *Config) validateKubeRole(rp string, r *Resource, ro *Role) error {
	if r.Kind != jitgate.KindKubernetes {
		if len(ro.Namespaces) > 0 {
			return c.Errorf(rp+".namespaces", "namespaces are for kubernetes roles")
		}
		return nil
	}
	if len(ro.Grants) == 0 {
		return c.Errorf(rp+".grants", "a kubernetes role needs at least one grant (clusterrole/NAME or role/NAME)")
	}
	if ro.Upstream != nil {
		return c.Errorf(rp+".upstream", "kubernetes roles have no upstream login: the gateway impersonates the grant's subject")
	}
	if ro.Provision != "" {
		return c.Errorf(rp+".provision", "kubernetes roles are always bound per grant; leave provision out")
	}
	seen := map[string]bool{}
	for i, ns := range ro.Namespaces {
		if !kubeNamespace.MatchString(ns) {
			return c.Errorf(fmt.Sprintf("%s.namespaces.%d", rp, i), "invalid namespace %q", ns)
		}
		if seen[ns] {
			return c.Errorf(fmt.Sprintf("%s.namespaces.%d", rp, i), "duplicate namespace %q", ns)
		}
		seen[ns] = true
	}
	return nil
}
