package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
)

const valid = `server:
  provision_key_env: JITGATE_PROVISION_KEY
  admins: [carol]
gateway:
  postgres:
    addr: 127.0.0.1:15432
    insecure_plaintext: true
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
  - {name: carol}
resources:
  - name: app-db
    kind: postgres
    address: db.internal:5432
    database: app
    credentials: {user: jitgate_admin, password_env: APP_DB_ADMIN_PASSWORD}
    roles:
      - name: read
        grants: [pg_read_all_data]
        upstream: {user: app_read, password_file: /run/secrets/app_read}
      - name: write
        grants: [app_writer]
        provision: ephemeral
policies:
  - name: engineers-read
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: [read]
    max_duration: 4h
    pending_ttl: 2d
    require_reason: true
    approval:
      steps:
        - approvers: {groups: [sre]}
          min: 1
    auto_approve: 'request.duration <= duration("30m")'
    break_glass: {allowed: true, max_duration: 1h}
`

func TestValid(t *testing.T) {
	cfg, err := config.Parse("jitgate.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Policies[0]
	if p.MaxDurationValue != 4*time.Hour || p.PendingTTLValue != 48*time.Hour || p.BreakGlass.MaxDurationValue != time.Hour ||
		p.Approval.Steps[0].Min != 1 || cfg.Server.Store != config.DefaultStore || cfg.Gateway.Postgres.Addr != "127.0.0.1:15432" ||
		cfg.Gateway.Postgres.ReuseUpstreamValue != config.DefaultReuseUpstream || cfg.Gateway.Postgres.AuditFlushValue != config.DefaultAuditFlush {
		t.Fatalf("decoded: %+v", cfg)
	}
	res := cfg.DomainResources()
	if len(res) != 1 || res[0].Role("read").Upstream.PasswordFile != "/run/secrets/app_read" || res[0].Role("write").Provision != "ephemeral" {
		t.Fatalf("resources: %+v", res)
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jitgate.yaml")
	if err := os.WriteFile(path, []byte(valid+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil || !strings.Contains(err.Error(), path+":39:") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("error = %v", err)
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

// Each broken config must fail with an error naming file:line and what is wrong.
func TestErrors(t *testing.T) {
	cases := []struct {
		name     string
		old, new string
		want     string // "line: text"
	}{
		{"unknown key", "    require_reason: true", "    require_reasons: true", "32: field require_reasons not found"},
		{"inline password", "password_env: APP_DB_ADMIN_PASSWORD", "password: hunter2", "17: inline password is not allowed"},
		{"bad duration", "max_duration: 4h", "max_duration: four hours", `30: policies.0.max_duration: invalid duration "four hours"`},
		{"missing max duration", "    max_duration: 4h\n", "", "26: policies.0.max_duration: missing"},
		{"unknown resource in policy", "resources: [app-db]", "resources: [app-dbb]", `28: policies.0.resources.0: unknown resource "app-dbb"`},
		{"unknown role in policy", "roles: [read]", "roles: [reed]", `29: policies.0.roles.0: no resource of this policy has a role "reed"`},
		{"unknown approver user", "approvers: {groups: [sre]}", "approvers: {users: [bobby]}", `35: policies.0.approval.steps.0.approvers.users.0: unknown user "bobby"`},
		{"quorum unreachable", "          min: 1", "          min: 3", "36: policies.0.approval.steps.0.min: needs 3 distinct approvers but only 1"},
		{"no steps", "    approval:\n      steps:\n        - approvers: {groups: [sre]}\n          min: 1\n", "", "26: policies.0.approval.steps: a policy needs at least one approval step"},
		{"bad kind", "kind: postgres", "kind: oracle", `14: resources.0.kind: unknown kind "oracle"`},
		{"duplicate user", "{name: carol}", "{name: alice}", `11: users.2.name: duplicate user "alice"`},
		{"unknown admin", "admins: [carol]", "admins: [root]", `3: server.admins.0: unknown user "root"`},
		{"bad name", "name: app-db", "name: App DB", `13: resources.0.name: invalid resource name "App DB"`},
		{"bad store", "  admins: [carol]", "  admins: [carol]\n  store: mysql://x", "4: server.store: must be sqlite:PATH or a postgres:// URL"},
		{"break-glass over max", "max_duration: 1h}", "max_duration: 5h}", "38: policies.0.break_glass.max_duration: must be between 1m"},
		{"ephemeral without credentials", "    credentials: {user: jitgate_admin, password_env: APP_DB_ADMIN_PASSWORD}\n", "", "23: resources.0.roles.1.provision: ephemeral provisioning needs the resource's credentials"},
		{"both secret sources", "password_env: APP_DB_ADMIN_PASSWORD", "password_env: A, password_file: /x", "17: resources.0.credentials: set password_env or password_file, not both"},
		{"ephemeral without key", "  provision_key_env: JITGATE_PROVISION_KEY\n", "", "23: resources.0.roles.1.provision: ephemeral provisioning needs server.provision_key_env"},
		{"both key sources", "provision_key_env: JITGATE_PROVISION_KEY", "provision_key_env: K\n  provision_key_file: /k", "1: server: set provision_key_env or provision_key_file, not both"},
		{"bad reuse_upstream", "    insecure_plaintext: true", "    insecure_plaintext: true\n    reuse_upstream: forever", `8: gateway.postgres.reuse_upstream: want a duration from 0 (off) to 1h, got "forever"`},
		{"bad loops", "    insecure_plaintext: true", "    insecure_plaintext: true\n    loops: -1", `8: gateway.postgres.loops: want 1 to 64 (or 0 for one per two CPUs, 1-8), got -1`},
		{"bad audit_flush", "    insecure_plaintext: true", "    insecure_plaintext: true\n    audit_flush: 0s", `8: gateway.postgres.audit_flush: want a duration from 1ms to 10s, got "0s"`},
		{"bad relay", "    insecure_plaintext: true", "    insecure_plaintext: true\n    relay: threads", `8: gateway.postgres.relay: want loop or goroutines, got "threads"`},
		{"bad reconcile interval", "  admins: [carol]", "  admins: [carol]\n  reconcile_interval: 10ms", `4: server.reconcile_interval: want a duration of at least 1s, got "10ms"`},
		{"bad drain timeout", "  admins: [carol]", "  admins: [carol]\n  drain_timeout: soon", `4: server.drain_timeout: want a duration such as 10m (0s: end the sessions at once), got "soon"`},
		{"negative drain timeout", "  admins: [carol]", "  admins: [carol]\n  drain_timeout: -1m", `4: server.drain_timeout: want a duration such as 10m (0s: end the sessions at once), got "-1m"`},
		{"bad address", "address: db.internal:5432", "address: db.internal", `15: resources.0.address: want host:port, got "db.internal"`},
		{"webhook without URL", "kind: postgres", "kind: webhook\n    secret_env: HOOK_KEY", `16: resources.0.address: a webhook resource needs an http(s) URL, got "db.internal:5432"`},
		{"webhook without secret", "kind: postgres\n    address: db.internal:5432", "kind: webhook\n    address: https://hooks.internal/jit", "13: resources.0: a webhook resource needs secret_env or secret_file"},
		{"bad slack id", "{name: carol}", "{name: carol, slack: carol}", `11: users.2.slack: "carol" is not a Slack member ID`},
		{"slack url from two places", "users:\n", "notifications:\n  slack: {webhook_url_env: A, webhook_url_file: /b}\nusers:\n", "9: notifications.slack: set one of webhook_url_env or webhook_url_file"},
		{"notification webhook without secret", "users:\n", "notifications:\n  webhooks: [{url: https://h.example/x}]\nusers:\n", "9: notifications.webhooks.0: set one of secret_env or secret_file"},
		{"bad expiry warning", "users:\n", "notifications:\n  expiry_warning: soon\nusers:\n", `9: notifications.expiry_warning: want a duration`},
		{"oidc without secret", "users:\n", "oidc: {issuer: https://idp.example, client_id: j, redirect_url: https://j.example/auth/callback}\nusers:\n", "8: oidc: set one of client_secret_env or client_secret_file"},
		{"oidc wrong callback", "users:\n", "oidc: {issuer: https://idp.example, client_id: j, client_secret_env: S, redirect_url: https://j.example/cb}\nusers:\n", `8: oidc.redirect_url: must end in /auth/callback`},
		{"audit key without witness", "users:\n", "audit: {signing_key_file: /k}\nusers:\n", "8: audit: a signing key needs a witness"},
		{"audit witness without key", "users:\n", "audit: {witness_file: /w}\nusers:\n", "8: audit: witnesses need a signing key"},
		{"audit key from two places", "users:\n", "audit: {signing_key_file: /k, signing_key_env: K, witness_file: /w}\nusers:\n", "8: audit: set one of signing_key_file or signing_key_env"},
		{"bad checkpoint interval", "users:\n", "audit: {signing_key_file: /k, witness_file: /w, checkpoint_interval: 1ms}\nusers:\n", `8: audit.checkpoint_interval: want a duration from 1s to 1h, got "1ms"`},
		{"witness webhook without secret", "users:\n", "audit: {signing_key_file: /k, witness_webhooks: [{url: https://w.example}]}\nusers:\n", "8: audit.witness_webhooks.0: set one of secret_env or secret_file"},
		{"mysql gateway without addr", "    insecure_plaintext: true\n", "    insecure_plaintext: true\n  mysql: {insecure_plaintext: true}\n", "8: gateway.mysql.addr: missing (e.g. 127.0.0.1:13306)"},
		{"mysql gateway bad relay", "    insecure_plaintext: true\n", "    insecure_plaintext: true\n  mysql: {addr: 127.0.0.1:13306, relay: threads}\n", `8: gateway.mysql.relay: want loop or goroutines, got "threads"`},
		{"mysql gateway half TLS", "    insecure_plaintext: true\n", "    insecure_plaintext: true\n  mysql: {addr: 127.0.0.1:13306, tls_cert: /c}\n", "8: gateway.mysql: set both tls_cert and tls_key, or neither"},
		{"bad unauthenticated cap", "    insecure_plaintext: true", "    insecure_plaintext: true\n    max_unauthenticated_per_source: -1", "8: gateway.postgres.max_unauthenticated_per_source: want 1 to 1000000"},
		{"wrong type", "require_reason: true", "require_reason: [yes]", "32: cannot unmarshal !!seq into bool"},
		{"bad yaml", "roles: [read]", "roles: [read", "28: did not find expected ',' or ']'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(valid, c.old) {
				t.Fatalf("fixture lacks %q", c.old)
			}
			_, err := config.Parse("jitgate.yaml", []byte(strings.Replace(valid, c.old, c.new, 1)))
			if err == nil {
				t.Fatal("no error")
			}
			if jitgate.ErrorCode(err) != jitgate.EINVALID {
				t.Errorf("code %s", jitgate.ErrorCode(err))
			}
			if !strings.Contains(err.Error(), "jitgate.yaml:"+c.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, "jitgate.yaml:"+c.want)
			}
		})
	}
}

// MySQL grants are role names or "PRIVS ON db.table"; anything else could smuggle SQL in.
func TestMySQLGrants(t *testing.T) {
	const base = `server: {provision_key_env: K}
users: [{name: alice}]
resources:
  - name: shop
    kind: mysql
    address: 127.0.0.1:3306
    credentials: {user: root}
    roles:
      - name: rw
        provision: ephemeral
        grants: [GRANTS]
`
	for _, ok := range []string{"app_reader", "SELECT ON shop.*", "SELECT, INSERT, UPDATE ON shop.orders", "SELECT ON *.*"} {
		if _, err := config.Parse("m.yaml", []byte(strings.Replace(base, "GRANTS", `"`+ok+`"`, 1))); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"SELECT ON shop.*; DROP USER root", "reader'@'%", "ALL ON `shop`.*", "SELECT ON shop"} {
		_, err := config.Parse("m.yaml", []byte(strings.Replace(base, "GRANTS", `"`+strings.ReplaceAll(bad, `"`, `\"`)+`"`, 1)))
		if err == nil || !strings.Contains(err.Error(), "m.yaml:11: resources.0.roles.0.grants.0: invalid MySQL grant") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
	owner := strings.Replace(strings.Replace(base, "GRANTS", "app_reader", 1), "    credentials:", "    owner: admin\n    credentials:", 1)
	if _, err := config.Parse("m.yaml", []byte(owner)); err == nil || !strings.Contains(err.Error(), "m.yaml:7: resources.0.owner") {
		t.Errorf("owner on mysql: %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30m": 30 * time.Minute, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "45s": 45 * time.Second} {
		if got, err := config.ParseDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1d", "1.5d", "99999d"} {
		if _, err := config.ParseDuration(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}

// The deployment example stays a valid configuration.
func TestDeployExampleIsValid(t *testing.T) {
	if _, err := config.Load("../deploy/jitgate.yaml"); err != nil {
		t.Fatal(err)
	}
}

// A kubernetes resource names its API server, jitgate's identity there, and roles that bind
// ClusterRoles or Roles in namespaces.
func TestKubernetesResources(t *testing.T) {
	const base = `gateway:
  kubernetes: {addr: 127.0.0.1:16443, tls_cert: /c, tls_key: /k}
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: shop-k8s
    kind: kubernetes
    address: https://k8s.internal:6443
    ca_file: /etc/jitgate/k8s-ca.crt
    token_env: K8S_TOKEN
    roles:
      - {name: view, grants: [clusterrole/view], namespaces: [shop]}
      - {name: deploy, grants: [role/deployer, clusterrole/edit], namespaces: [shop, shop-staging]}
      - {name: cluster-view, grants: [clusterrole/view]}
policies:
  - name: p
    requesters: {groups: [engineering]}
    resources: [shop-k8s]
    roles: ["*"]
    max_duration: 1h
    approval: {steps: [{approvers: {groups: [sre]}}]}
`
	cfg, err := config.Parse("k.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	res := cfg.DomainResources()[0]
	if res.Kind != jitgate.KindKubernetes || res.CAFile != "/etc/jitgate/k8s-ca.crt" || res.Token.PasswordEnv != "K8S_TOKEN" ||
		len(res.Roles[1].Namespaces) != 2 || cfg.Gateway.Kubernetes == nil {
		t.Fatalf("resource %+v", res)
	}
	for _, c := range []struct{ old, new, want string }{
		{"address: https://k8s.internal:6443", "address: http://k8s.internal:6443", `9: resources.0.address: a kubernetes resource needs its API server's https URL`},
		{"address: https://k8s.internal:6443", "address: k8s.internal:6443", `resources.0.address: a kubernetes resource needs its API server's https URL`},
		{"    token_env: K8S_TOKEN\n", "", "resources.0: a kubernetes resource needs jitgate's own identity in the cluster"},
		{"    token_env: K8S_TOKEN\n", "    token_env: K8S_TOKEN\n    token_file: /t\n", "resources.0: set token_env or token_file, not both"},
		{"    token_env: K8S_TOKEN\n", "    token_env: K8S_TOKEN\n    client_cert: /c\n    client_key: /k\n", "resources.0: set a token (token_env or token_file) or a client certificate"},
		{"    token_env: K8S_TOKEN\n", "    client_cert: /c\n", "resources.0: set both client_cert and client_key"},
		{"    token_env: K8S_TOKEN\n", "    token_env: K8S_TOKEN\n    database: app\n", "resources.0: credentials, database, sslmode"},
		{"grants: [clusterrole/view], namespaces: [shop]}", "grants: [cluster-admin], namespaces: [shop]}", `resources.0.roles.0.grants.0: invalid Kubernetes grant "cluster-admin"`},
		{"grants: [clusterrole/view]}", "grants: [role/viewer]}", `resources.0.roles.2.grants.0: "role/viewer" is a namespaced Role: list the namespaces`},
		{"namespaces: [shop]}", "namespaces: [Shop]}", `resources.0.roles.0.namespaces.0: invalid namespace "Shop"`},
		{"namespaces: [shop]}", "namespaces: [shop, shop]}", `resources.0.roles.0.namespaces.1: duplicate namespace "shop"`},
		{"grants: [clusterrole/view]}", "grants: [clusterrole/view], provision: ephemeral}", "resources.0.roles.2.provision: kubernetes roles are always bound per grant"},
		{"grants: [clusterrole/view]}", "grants: [clusterrole/view], upstream: {user: x, password_env: X}}", "resources.0.roles.2.upstream: kubernetes roles have no upstream login"},
		{"tls_cert: /c, tls_key: /k}", "insecure_plaintext: true}", "gateway.kubernetes.insecure_plaintext: the Kubernetes gateway is HTTPS only"},
	} {
		if !strings.Contains(base, c.old) {
			t.Fatalf("fixture lacks %q", c.old)
		}
		_, err := config.Parse("k.yaml", []byte(strings.Replace(base, c.old, c.new, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q → %q: error %v, want %q", c.old, c.new, err, c.want)
		}
	}
	// Kubernetes options on another kind of resource are refused.
	pg := strings.Replace(base, "kind: kubernetes\n    address: https://k8s.internal:6443", "kind: postgres\n    address: db:5432", 1)
	if _, err := config.Parse("k.yaml", []byte(pg)); err == nil || !strings.Contains(err.Error(), "are for kubernetes resources") {
		t.Errorf("ca_file on a postgres resource: %v", err)
	}
}
