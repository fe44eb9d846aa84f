package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/kubernetes"
	"github.com/jitgate/jitgate/internal/gwtest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testkube"
	"github.com/jitgate/jitgate/policy"
	kprov "github.com/jitgate/jitgate/provision/kubernetes"
	"github.com/jitgate/jitgate/store"
)

func TestMain(m *testing.M) { os.Exit(testkube.Main(m)) }

const gwConfig = `
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
      - {name: edit, grants: [clusterrole/edit], namespaces: [%s]}
  - name: pg-db
    kind: postgres
    address: 127.0.0.1:1
    database: x
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: x}}
policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [shop-k8s, pg-db]
    roles: ["*"]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

type env struct {
	cluster     *testkube.Cluster
	eng         *access.Engine
	store       *store.DB
	gw          *kubernetes.Gateway
	url         string
	caFile      string
	dir         string
	shop, other string
	alice, bob  context.Context
}

// newEnv starts an engine (SQLite store, scheduler and provisioning running, the real RBAC
// provisioner) and a Kubernetes gateway with a self-signed certificate in front of the test
// cluster. Each test has namespaces of its own.
func newEnv(t *testing.T) *env {
	t.Helper()
	c := testkube.Shared(t)
	ctx := context.Background()
	suffix := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(suffix) > 30 {
		suffix = suffix[:30]
	}
	e := &env{cluster: c, dir: t.TempDir(), shop: c.Namespace(t, "shop-"+suffix), other: c.Namespace(t, "other-"+suffix)}
	t.Setenv("JG_KUBE_TOKEN", c.JitgateToken)
	cfg, err := config.Parse("gw.yaml", fmt.Appendf(nil, gwConfig, c.URL, c.CAFile, e.shop, e.shop))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := set.Resource("shop-k8s")
	prov, err := kprov.New(res, e.shop, c.JitgateToken)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testdb.SQLite(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory(),
		Provisioners: map[string]jitgate.Provisioner{"shop-k8s": prov}})
	runCtx, cancel := context.WithCancel(ctx)
	go eng.Run(runCtx)
	tlsCfg, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e.caFile = filepath.Join(e.dir, "gateway-ca.crt")
	if err := os.WriteFile(e.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsCfg.Certificates[0].Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	upTLS, err := kprov.TLSConfig(res, c.JitgateToken)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(c.URL)
	gw := kubernetes.New(kubernetes.Options{Engine: eng.GatewayService(), TLS: tlsCfg, ReadHeaderTimeout: time.Second,
		Upstreams: map[string]*kubernetes.Upstream{"shop-k8s": {URL: u, TLS: upTLS, Token: c.JitgateToken}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gw.Serve(ln)
	e.eng, e.store, e.gw, e.url = eng, st, gw, "https://"+ln.Addr().String()
	dir := cfg.Directory()
	a, _ := dir.LookupUser(ctx, "alice")
	b, _ := dir.LookupUser(ctx, "bob")
	e.alice, e.bob = jitgate.NewContext(ctx, a), jitgate.NewContext(ctx, b)
	t.Cleanup(func() {
		gw.Close()
		cancel()
		st.Close()
	})
	return e
}

// grant requests role for d (auto-approved), waits for its bindings, and mints a credential.
func (e *env) grant(t *testing.T, role string, d time.Duration) (*jitgate.Grant, string) {
	t.Helper()
	r, err := e.eng.Submit(e.alice, jitgate.NewRequest{Resource: "shop-k8s", Role: role, Duration: d, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		g, err := e.eng.GatewayService().GrantByID(context.Background(), r.GrantID)
		return err == nil && g.Provision.State == jitgate.ProvisionStateGranted
	})
	in, err := e.eng.IssueLogin(e.alice, r.GrantID, jitgate.KindKubernetes, jitgate.KindPostgres)
	if err != nil {
		t.Fatal(err)
	}
	if in.Via != access.ViaGateway || !strings.HasPrefix(in.Password, jitgate.CredentialPrefix) {
		t.Fatalf("login %+v", in)
	}
	return in.Grant, in.Password
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}

// kubeconfig writes a kubeconfig for the gateway with token and returns its path.
func (e *env) kubeconfig(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(e.dir, fmt.Sprintf("kubeconfig-%d", time.Now().UnixNano()))
	if err := e.cluster.Kubeconfig(path, e.url, e.caFile, token); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs kubectl through the gateway and returns its output and error.
func kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kubectl is required with CI=true")
		}
		t.Skip("no kubectl")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig, "--request-timeout", "20s"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(kubeconfig))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// client is an HTTP client for the gateway that trusts its certificate.
func (e *env) client(t *testing.T) *http.Client {
	t.Helper()
	b, err := os.ReadFile(e.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no certificate in " + e.caFile)
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

// status does a request through the gateway and returns the code and the Status message.
func (e *env) status(t *testing.T, c *http.Client, token, method, path string, header http.Header, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &st)
	return resp.StatusCode, st.Message
}

func TestRefusedWithoutAValidCredential(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	for _, tc := range []struct{ token, want string }{
		{"", "no credential"},
		{"jgs_forged", "unknown credential"},
	} {
		code, msg := e.status(t, c, tc.token, http.MethodGet, "/api/v1/namespaces/"+e.shop+"/pods", nil, nil)
		if code != http.StatusUnauthorized || !strings.Contains(msg, tc.want) {
			t.Errorf("token %q: %d %q, want 401 naming %q", tc.token, code, msg, tc.want)
		}
	}
	// (kubectl prints its own words for a 401; the Status above says why, and so does
	// `jitgate kubeconfig`'s credential plugin when kubectl asks it again.)
	out, err := kubectl(t, e.kubeconfig(t, "jgs_forged"), "get", "pods", "-n", e.shop)
	if err == nil || !strings.Contains(out, "must be logged in") {
		t.Errorf("kubectl with a forged credential: %v\n%s", err, out)
	}
	// A credential for another kind of resource.
	r, err := e.eng.Submit(e.alice, jitgate.NewRequest{Resource: "pg-db", Role: "read", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.eng.IssueLogin(e.alice, r.GrantID, jitgate.KindPostgres)
	if err != nil {
		t.Fatal(err)
	}
	code, msg := e.status(t, c, in.Password, http.MethodGet, "/api", nil, nil)
	if code != http.StatusUnauthorized || !strings.Contains(msg, "not a Kubernetes resource") {
		t.Errorf("postgres credential: %d %q", code, msg)
	}
}

func TestViewGrantThroughKubectl(t *testing.T) {
	e := newEnv(t)
	g, token := e.grant(t, "view", time.Hour)
	kc := e.kubeconfig(t, token)
	if out, err := kubectl(t, kc, "get", "pods", "-n", e.shop); err != nil || !strings.Contains(out, "No resources found") {
		t.Fatalf("get pods: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"get", "secrets", "-n", e.shop},
		{"delete", "pod", "web", "-n", e.shop},
		{"get", "pods", "-n", e.other},
	} {
		out, err := kubectl(t, kc, args...)
		if err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, `User "jitgate:alice"`) {
			t.Errorf("%v: want the API server's own 403 for jitgate:alice, got %v\n%s", args, err, out)
		}
	}
	// Identity headers a client sends are never forwarded.
	c := e.client(t)
	h := http.Header{"Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters"}}
	code, msg := e.status(t, c, token, http.MethodGet, "/api/v1/namespaces/"+e.shop+"/secrets", h, nil)
	if code != http.StatusForbidden || !strings.Contains(msg, "jitgate:alice") {
		t.Errorf("impersonation headers from the client: %d %q, want the grant's own 403", code, msg)
	}
	e.gw.Recorder().Sync()
	sts := statements(t, e, g.ID)
	texts := make([]string, 0, len(sts))
	for _, s := range sts {
		texts = append(texts, s.SQL+" => "+s.Tag+s.SQLState)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{
		"list pods -n " + e.shop + " [GET /api/v1/namespaces/" + e.shop + "/pods?limit=500&timeout=20s] => 200",
		"list secrets -n " + e.shop + " [GET /api/v1/namespaces/" + e.shop + "/secrets?limit=500&timeout=20s] => 403",
		"delete pods web -n " + e.shop + " [DELETE /api/v1/namespaces/" + e.shop + "/pods/web?timeout=20s] => 403",
		"list pods -n " + e.other + " [GET /api/v1/namespaces/" + e.other + "/pods?limit=500&timeout=20s] => 403",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q; it has:\n%s", want, all)
		}
	}
	verify(t, e)
}

// watch starts `kubectl get pods --watch` and returns its result channel.
func (e *env) watch(t *testing.T, kc string) (<-chan string, *gwtest.SyncBuffer) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("no kubectl")
	}
	cmd := exec.Command("kubectl", "--kubeconfig", kc, "get", "pods", "-n", e.shop, "--watch")
	out := &gwtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(kc))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		err := cmd.Wait()
		done <- fmt.Sprint(err)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	// kubectl lists first, then watches: the watch is live once the gateway holds a watch
	// request. (Waiting for any request could catch the list: on a busy machine a revoke
	// between the list and the watch then refused the watch at authentication, and kubectl
	// said so instead of the cut's reason.)
	waitFor(t, 20*time.Second, func() bool { return kubernetes.Watching(e.gw) > 0 })
	time.Sleep(100 * time.Millisecond)
	return done, out
}

func TestRevokeCutsWatch(t *testing.T) {
	e := newEnv(t)
	g, token := e.grant(t, "view", time.Hour)
	kc := e.kubeconfig(t, token)
	done, out := e.watch(t, kc)
	start := time.Now()
	if _, err := e.eng.Revoke(e.bob, g.ID, "incident over"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if took := time.Since(start); took > time.Second {
			t.Errorf("watch cut %v after the revoke", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch outlived the revoke")
	}
	if !strings.Contains(out.String(), "revoked by bob") {
		t.Errorf("kubectl was not told why: %s", out)
	}
	waitFor(t, 2*time.Second, func() bool { return e.gw.Sessions() == 0 })
	o, err := kubectl(t, kc, "get", "pods", "-n", e.shop)
	if err == nil || !strings.Contains(o, "revoked") {
		t.Errorf("request after the revoke: %v\n%s", err, o)
	}
	verify(t, e)
}

func TestExpiryCutsWatch(t *testing.T) {
	e := newEnv(t)
	g, token := e.grant(t, "view", 6*time.Second) // see TestExtensionMovesDeadline
	kc := e.kubeconfig(t, token)
	done, out := e.watch(t, kc)
	select {
	case <-done:
		if late := time.Since(g.EndsAt); late > time.Second || late < -50*time.Millisecond {
			t.Errorf("watch cut %v after the grant's end", late)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch outlived the grant")
	}
	if !strings.Contains(out.String(), fmt.Sprintf("grant %d expired", g.ID)) {
		t.Errorf("kubectl was not told why: %s", out)
	}
	o, err := kubectl(t, kc, "get", "pods", "-n", e.shop)
	if err == nil || !strings.Contains(o, "expired") {
		t.Errorf("request after expiry: %v\n%s", err, o)
	}
	waitFor(t, 10*time.Second, func() bool {
		g, err := e.eng.GatewayService().GrantByID(context.Background(), g.ID)
		return err == nil && g.Provision.State == jitgate.ProvisionStateRevoked
	})
}

// An extension moves the deadline: a watch outlives the grant's first end.
func TestExtensionMovesDeadline(t *testing.T) {
	e := newEnv(t)
	// Long enough for kubectl to list and start its watch on a busy machine.
	g, token := e.grant(t, "view", 6*time.Second)
	done, out := e.watch(t, e.kubeconfig(t, token))
	if _, err := e.eng.Extend(e.alice, g.ID, 30*time.Minute, "more time"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatalf("watch ended at the grant's first end despite the extension: %s", out)
	case <-time.After(time.Until(g.EndsAt) + 1500*time.Millisecond):
	}
	if _, err := e.eng.Revoke(e.bob, g.ID, "done"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watch outlived the revoke")
	}
}

func TestExecReachesTheAPIServer(t *testing.T) {
	e := newEnv(t)
	g, token := e.grant(t, "edit", time.Hour)
	kc := e.kubeconfig(t, token)
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"app","image":"busybox"}]}}`
	if err := e.cluster.Admin(context.Background(), http.MethodPost, "/api/v1/namespaces/"+e.shop+"/pods", []byte(pod), nil); err != nil {
		t.Fatal(err)
	}
	// There is no kubelet: the API server answers an exec into a pod with no node itself.
	out, err := kubectl(t, kc, "exec", "web", "-n", e.shop, "--", "ls", "-l", "/")
	if err == nil || !strings.Contains(out, "does not have a host assigned") {
		t.Errorf("exec: %v\n%s", err, out)
	}
	e.gw.Recorder().Sync()
	var all []string
	for _, s := range statements(t, e, g.ID) {
		all = append(all, s.SQL)
	}
	if !strings.Contains(strings.Join(all, "\n"), "create pods/exec web -n "+e.shop+" -c app -- ls -l /") &&
		!strings.Contains(strings.Join(all, "\n"), "pods/exec web -n "+e.shop+" -- ls -l /") {
		t.Errorf("no exec with its command in the audit:\n%s", strings.Join(all, "\n"))
	}
	verify(t, e)
}

func TestBadInputLeaksNothing(t *testing.T) {
	e := newEnv(t)
	_, token := e.grant(t, "view", time.Hour)
	base := runtime.NumGoroutine()
	c := e.client(t)
	// Oversized body and headers.
	code, msg := e.status(t, c, token, http.MethodPost, "/api/v1/namespaces/"+e.shop+"/configmaps", nil,
		bytes.NewReader(bytes.Repeat([]byte("x"), kubernetes.DefaultMaxBody+1)))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "larger than") {
		t.Errorf("oversized body: %d %q", code, msg)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Big", strings.Repeat("y", kubernetes.DefaultMaxHeaderBytes*2))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized headers: %d", resp.StatusCode)
		}
	}
	// A client that stops in the middle of its headers is cut off.
	slow, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = slow.Write([]byte("GET /api HTTP/1.1\r\nHost: x\r\nAuthori"))
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(slow); err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("slow client: %v after %v, want its connection closed after the 1s header timeout", err, time.Since(start))
	}
	slow.Close()
	// Garbage instead of TLS, and a client that drops in the middle of a watch.
	for range 5 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "https://"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\x01\x02"))
		conn.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	wreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/v1/namespaces/"+e.shop+"/pods?watch=true&resourceVersion=0", nil)
	wreq.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(wreq)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: %s %s", resp.Status, b)
	}
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	waitFor(t, 5*time.Second, func() bool { return kubernetes.InFlight(e.gw) > 0 })
	cancel()
	resp.Body.Close()
	waitFor(t, 5*time.Second, func() bool { return kubernetes.InFlight(e.gw) == 0 })
	c.CloseIdleConnections()
	waitFor(t, 5*time.Second, func() bool { return e.gw.Sessions() == 0 })
	waitFor(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= base+2 })
}

func TestAPIServerDown(t *testing.T) {
	e := newEnv(t)
	_, token := e.grant(t, "view", time.Hour)
	// A gateway whose upstream is a closed port.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "https://" + ln.Addr().String()
	ln.Close()
	u, _ := url.Parse(dead)
	tlsCfg, _ := gateway.SelfSigned("127.0.0.1")
	gw := kubernetes.New(kubernetes.Options{Engine: e.eng.GatewayService(), TLS: tlsCfg,
		Upstreams: map[string]*kubernetes.Upstream{"shop-k8s": {URL: u, TLS: &tls.Config{}}}})
	gln, _ := net.Listen("tcp", "127.0.0.1:0")
	go gw.Serve(gln)
	defer gw.Close()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+gln.Addr().String()+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "unreachable") {
		t.Errorf("API server down: %d %s", resp.StatusCode, b)
	}
}

func verify(t *testing.T, e *env) { t.Helper(); gwtest.VerifyAudit(t, e.store) }

func statements(t *testing.T, e *env, grantID int64) []jitgate.Statement {
	t.Helper()
	return gwtest.Statements(t, e.store, grantID)
}
