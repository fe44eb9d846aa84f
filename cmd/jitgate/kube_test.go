package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/gwtest"
	"github.com/jitgate/jitgate/internal/testkube"
)

const kubeConfig = `
server:
  store: sqlite:%s
  reconcile_interval: 1s
  admins: [bob]
gateway:
  kubernetes: {addr: %s, tls_cert: %s, tls_key: %s}
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: shop-k8s
    kind: kubernetes
    address: %s
    ca_file: %s
    token_env: JG_KUBE_TOKEN
    roles:
      - {name: view, grants: [clusterrole/view], namespaces: [%s]}
policies:
  - name: engineers
    requesters: {groups: [engineering]}
    resources: [shop-k8s]
    roles: [view]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

// kubeServer is one `jitgate server` process with a Kubernetes resource and gateway.
type kubeServer struct {
	t   *testing.T
	cmd *exec.Cmd
	log *gwtest.SyncBuffer
	url string
}

func startKubeServer(t *testing.T, bin, cfg, addr string, env []string) *kubeServer {
	t.Helper()
	s := &kubeServer{t: t, url: "http://" + addr, log: &gwtest.SyncBuffer{}}
	s.cmd = exec.Command(bin, "server", "--config", cfg, "--http-addr", addr)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(s.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 20 s:\n%s", s.log.String())
		}
	}
}

// TestKubernetesEndToEnd runs the server as deployed with a kubernetes resource in front of a
// real API server: kubectl set up by `jitgate kubeconfig` (jitgate as its credential plugin),
// `jitgate connect`, the audit, the drift reconciler removing a planted binding, and bindings
// removed after the server was SIGKILLed during a grant that ended while it was down.
func TestKubernetesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs server processes")
	}
	c := testkube.Private(t)
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kubectl is required with CI=true")
		}
		t.Skip("no kubectl")
	}
	ctx := context.Background()
	dir := t.TempDir()
	ns := c.Namespace(t, "shop")
	bin := filepath.Join(dir, "jitgate")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	writePEM(t, certFile, "CERTIFICATE", tlsCfg.Certificates[0].Certificate[0])
	writeKey(t, keyFile, tlsCfg.Certificates[0].PrivateKey)
	addr, _ := freeAddr()
	gwAddr, _ := freeAddr()
	cfg := filepath.Join(dir, "jitgate.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, kubeConfig, filepath.Join(dir, "jitgate.db"), gwAddr, certFile, keyFile,
		c.URL, c.CAFile, ns), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"JG_KUBE_TOKEN=" + c.JitgateToken}
	srv := startKubeServer(t, bin, cfg, addr, env)
	out, err := exec.Command(bin, "token", "create", "--user", "alice", "--config", cfg).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	token := strings.TrimSpace(string(out))
	out, err = exec.Command(bin, "token", "create", "--user", "bob", "--config", cfg).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	adminEnv := append(os.Environ(), "JITGATE_SERVER="+srv.url, "JITGATE_TOKEN="+strings.TrimSpace(string(out)), "HOME="+dir)
	api := httpapi.NewClient(srv.url, token)
	userEnv := append(os.Environ(), "JITGATE_SERVER="+srv.url, "JITGATE_TOKEN="+token, "HOME="+dir)
	runAs := func(env []string, name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	run := func(name string, args ...string) (string, error) { return runAs(userEnv, name, args...) }
	kc := filepath.Join(dir, "kubeconfig")
	if out, err := run(bin, "kubeconfig", "shop-k8s", "--kubeconfig", kc, "--certificate-authority", certFile); err != nil ||
		!strings.Contains(out, "jitgate-shop-k8s") {
		t.Fatalf("jitgate kubeconfig: %v\n%s", err, out)
	}
	// No grant yet: the credential plugin says so, and kubectl shows it.
	if out, err := run("kubectl", "--kubeconfig", kc, "get", "pods", "-n", ns); err == nil || !strings.Contains(out, "no active grant on shop-k8s") {
		t.Fatalf("kubectl without a grant: %v\n%s", err, out)
	}
	req, err := api.Submit(ctx, jitgate.NewRequest{Resource: "shop-k8s", Role: "view", Duration: time.Hour, Reason: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	waitGrant := func(id int64, ok func(*jitgate.Grant) bool) *jitgate.Grant {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			g, err := api.GetGrant(ctx, id)
			if err == nil && ok(g) {
				return g
			}
			if time.Now().After(deadline) {
				t.Fatalf("grant %d: %+v %v", id, g, err)
			}
		}
	}
	waitGrant(req.GrantID, func(g *jitgate.Grant) bool { return g.Provision.State == jitgate.ProvisionStateGranted })
	if out, err := run("kubectl", "--kubeconfig", kc, "get", "pods", "-n", ns); err != nil || !strings.Contains(out, "No resources found") {
		t.Fatalf("kubectl get pods under the grant: %v\n%s", err, out)
	}
	if out, err := run("kubectl", "--kubeconfig", kc, "get", "secrets", "-n", ns); err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("kubectl get secrets: %v\n%s", err, out)
	}
	if out, err := run(bin, "connect", "shop-k8s", "--", "kubectl", "get", "pods", "-n", ns); err != nil || !strings.Contains(out, "No resources found") {
		t.Fatalf("jitgate connect -- kubectl: %v\n%s", err, out)
	}
	if out, err := run(bin, "credentials", "shop-k8s"); err != nil || !strings.Contains(out, "export KUBE_SERVER=https://"+gwAddr) ||
		!strings.Contains(out, "export KUBE_TOKEN=jgs_") || !strings.Contains(out, "jitgate kubeconfig shop-k8s") {
		t.Fatalf("jitgate credentials: %v\n%s", err, out)
	}
	// Every request is in the audit under its session, and the chain verifies.
	sessions, err := api.Sessions(ctx, jitgate.SessionFilter{GrantID: req.GrantID})
	if err != nil || len(sessions) == 0 {
		t.Fatalf("sessions: %v %v", sessions, err)
	}
	var audited string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		audited = ""
		for _, s := range sessions {
			o, _ := runAs(adminEnv, bin, "audit", "--session", fmt.Sprint(s.ID))
			audited += o
		}
		if strings.Contains(audited, "list pods -n "+ns) && strings.Contains(audited, "list secrets -n "+ns) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit by session lacks the requests:\n%s", audited)
		}
	}
	if out, err := runAs(adminEnv, bin, "audit", "--verify"); err != nil {
		t.Fatalf("audit --verify: %v\n%s", err, out)
	}
	// The standing-access report lists the cluster's own powerful bindings, not the grant's.
	if out, err := runAs(adminEnv, bin, "report", "standing-access", "shop-k8s"); err != nil ||
		!strings.Contains(out, "User jitgate") || !strings.Contains(out, "impersonate") || strings.Contains(out, "jitgate:grant:") {
		t.Fatalf("report standing-access: %v\n%s", err, out)
	}

	// A binding planted with jitgate's labels for a grant that does not exist is removed.
	var list struct {
		Items []struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := c.Admin(ctx, http.MethodGet, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", nil, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("bindings during the grant: %+v %v", list, err)
	}
	install := list.Items[0].Metadata.Labels["jitgate.dev/installation"]
	planted := fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"planted",
		"labels":{"app.kubernetes.io/managed-by":"jitgate","jitgate.dev/installation":%q,"jitgate.dev/grant":"999999"}},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"admin"},
		"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"jitgate:grant:999999"}]}`, install)
	if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", []byte(planted), nil); err != nil {
		t.Fatal(err)
	}
	bindings := func() int {
		if err := c.Admin(ctx, http.MethodGet, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", nil, &list); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	for deadline := time.Now().Add(10 * time.Second); bindings() != 1; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the drift reconciler left the planted binding")
		}
	}

	// SIGKILL the server during a grant that ends while it is down; once it is back, the
	// grant's bindings are gone and verified.
	if _, err := api.Revoke(ctx, req.GrantID, "done"); err != nil {
		t.Fatal(err)
	}
	short, err := api.Submit(ctx, jitgate.NewRequest{Resource: "shop-k8s", Role: "view", Duration: 3 * time.Second, Reason: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	g := waitGrant(short.GrantID, func(g *jitgate.Grant) bool { return g.Provision.State == jitgate.ProvisionStateGranted })
	if bindings() != 1 {
		t.Fatalf("%d bindings during the short grant, want 1", bindings())
	}
	srv.cmd.Process.Kill()
	srv.cmd.Wait()
	time.Sleep(time.Until(g.EndsAt) + 200*time.Millisecond)
	if bindings() != 1 {
		t.Fatal("the binding went while the server was down?")
	}
	srv = startKubeServer(t, bin, cfg, addr, env)
	api = httpapi.NewClient(srv.url, token)
	g = waitGrant(short.GrantID, func(g *jitgate.Grant) bool { return g.Provision.State == jitgate.ProvisionStateRevoked })
	if bindings() != 0 {
		t.Fatalf("%d bindings after the restart", bindings())
	}
	if !strings.Contains(g.Provision.Receipt, "no binding of grant") {
		t.Errorf("revocation receipt %q", g.Provision.Receipt)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, key any) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}
