// Package testkube runs a real Kubernetes API server for jitgate's tests and benchmarks: Debian's
// etcd and a kube-apiserver built from the module proxy (internal/testkube/apiserver, built by
// internal/testkube/build.sh, which .ci/run calls). There is no kubelet, so pods never run,
// but everything jitgate does with a cluster (RBAC bindings, impersonation, watches, the
// answers to exec and port-forward) is the API server's own behaviour, not a mock's.
//
// The cluster authenticates static tokens: an admin (group system:masters), jitgate's own
// identity bound to the ClusterRole docs/kubernetes.md asks operators to create
// (ControllerRole), and nothing else. Its serving certificate is signed by a CA of its own
// (CAFile).
package testkube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the kube-apiserver version the tests run (internal/testkube/apiserver/go.mod).
const Version = "v1.37.2"

// Users the cluster's token file knows.
const (
	// AdminUser is in system:masters: it sets up the cluster and checks what jitgate did.
	AdminUser = "admin"
	// JitgateUser is jitgate's own identity, with ControllerRole's permissions only.
	JitgateUser = "jitgate"
	// JitgateCertUser is the same identity as a client certificate (ClientCert, ClientKey).
	JitgateCertUser = "jitgate-cert"
)

// ControllerRole is the ClusterRole jitgate's identity needs (docs/kubernetes.md shows the same):
// it manages RoleBindings and ClusterRoleBindings, may bind the roles the config names (bind),
// reads roles for the standing-access report, and impersonates the grants' subjects.
const ControllerRole = `{
  "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
  "metadata": {"name": "jitgate-controller"},
  "rules": [
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "clusterrolebindings"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"], "verbs": ["get", "list", "bind"]},
    {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}
  ]
}`

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// URL is the API server's https URL; CAFile the PEM CA its certificate chains to.
	URL    string
	CAFile string
	// AdminToken and JitgateToken are bearer tokens of AdminUser and JitgateUser.
	AdminToken   string
	JitgateToken string
	// ClientCert and ClientKey are PEM files of JitgateCertUser's client certificate.
	ClientCert string
	ClientKey  string
	Dir        string

	procs  []*exec.Cmd
	logs   []*logBuffer
	exited []chan struct{}
}

// Binary returns the kube-apiserver to run: $JITGATE_TEST_KUBE_APISERVER, or the one
// build.sh leaves in the user's cache directory.
func Binary() (string, error) {
	if p := os.Getenv("JITGATE_TEST_KUBE_APISERVER"); p != "" {
		return p, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "jitgate", "kube-apiserver-"+Version), nil
}

// Start starts etcd and the API server under dir and returns once the API server is ready and
// ControllerRole is bound to JitgateUser and JitgateCertUser. Stop ends both.
func Start(ctx context.Context, dir string) (_ *Cluster, err error) {
	apiserver, err := Binary()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(apiserver); err != nil {
		return nil, fmt.Errorf("no kube-apiserver at %s (build it with: bash internal/testkube/build.sh): %w", apiserver, err)
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("no etcd (Debian's etcd-server package): %w", err)
	}
	c := &Cluster{Dir: dir, AdminToken: randomToken(), JitgateToken: randomToken()}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.writeFiles(); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := c.run(etcd, "--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--log-level", "warn"); err != nil {
		return nil, err
	}
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if err := c.run(apiserver,
		"--etcd-servers", client,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports[2]),
		"--tls-cert-file", filepath.Join(dir, "serving.crt"), "--tls-private-key-file", filepath.Join(dir, "serving.key"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--client-ca-file", filepath.Join(dir, "ca.crt"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type", "none",
		"--disable-admission-plugins", "ServiceAccount",
		"--profiling=false", "--v", "0"); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := c.setUp(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// writeFiles writes the CA and serving certificate, the service-account key and the token file.
func (c *Cluster) writeFiles() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jitgate test cluster CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	servingCrt, servingKey, err := leaf(ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{"localhost", "kubernetes"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return err
	}
	clientCrt, clientKey, err := leaf(ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: JitgateCertUser},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	c.CAFile = filepath.Join(c.Dir, "ca.crt")
	c.ClientCert, c.ClientKey = filepath.Join(c.Dir, "client.crt"), filepath.Join(c.Dir, "client.key")
	files := map[string][]byte{
		"ca.crt":      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"serving.crt": servingCrt,
		"serving.key": servingKey,
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}),
		"client.crt":  clientCrt,
		"client.key":  clientKey,
		"tokens.csv": fmt.Appendf(nil, "%s,%s,1,\"system:masters\"\n%s,%s,2\n",
			c.AdminToken, AdminUser, c.JitgateToken, JitgateUser),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// leaf issues the certificate tmpl describes, with a new P-256 key, signed by ca, and returns
// both as PEM.
func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (crt, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// run starts a process whose output is kept for Stop's error report.
func (c *Cluster) run(bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.procs, c.logs, c.exited = append(c.procs, cmd), append(c.logs, out), append(c.exited, exited)
	return nil
}

// waitReady polls /readyz until the API server answers ok (about 10 to 30 s on 2 cores).
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var last error
	for {
		last = c.Admin(ctx, http.MethodGet, "/readyz", nil, nil)
		if last == nil {
			return nil
		}
		for i, p := range c.procs {
			select {
			case <-c.exited[i]:
				return fmt.Errorf("%s exited: %s", filepath.Base(p.Path), c.logs[i].tail())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server did not become ready: %v; its log: %s", last, c.logs[len(c.logs)-1].tail())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// setUp fills in the aggregated ClusterRoles and binds ControllerRole to JitgateUser and JitgateCertUser.
func (c *Cluster) setUp(ctx context.Context) error {
	if err := c.aggregate(ctx); err != nil {
		return err
	}
	if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterroles", []byte(ControllerRole), nil); err != nil {
		return err
	}
	binding := `{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
	  "metadata": {"name": "jitgate-controller"},
	  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "jitgate-controller"},
	  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "` + JitgateUser + `"},
	    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "` + JitgateCertUser + `"}]}`
	return c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", []byte(binding), nil)
}

// aggregate does what kube-controller-manager's ClusterRole aggregation would (there is no
// controller manager here): the built-in view, edit and admin ClusterRoles are made of the
// rules of the roles labelled to aggregate into them, and are empty until that is done.
func (c *Cluster) aggregate(ctx context.Context) error {
	type role struct {
		Rules []any `json:"rules"`
	}
	for _, name := range []string{"view", "edit", "admin"} {
		var list struct {
			Items []role `json:"items"`
		}
		sel := "rbac.authorization.k8s.io/aggregate-to-" + name + "=true"
		if err := c.Admin(ctx, http.MethodGet, "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector="+url.QueryEscape(sel), nil, &list); err != nil {
			return err
		}
		var rules []any
		for _, r := range list.Items {
			rules = append(rules, r.Rules...)
		}
		var target map[string]any
		path := "/apis/rbac.authorization.k8s.io/v1/clusterroles/" + name
		if err := c.Admin(ctx, http.MethodGet, path, nil, &target); err != nil {
			return err
		}
		target["rules"] = rules
		b, err := json.Marshal(target)
		if err != nil {
			return err
		}
		if err := c.Admin(ctx, http.MethodPut, path, b, nil); err != nil {
			return err
		}
	}
	return nil
}

// HTTPClient returns a client that trusts the cluster's CA.
func (c *Cluster) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(c.CAFile); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Admin calls the API server as AdminUser: body is JSON (or nil), and the JSON answer is
// decoded into out (if not nil). An answer other than 2xx is an error holding its body.
func (c *Cluster) Admin(ctx context.Context, method, path string, body []byte, out any) error {
	_, err := c.Do(ctx, c.AdminToken, method, path, body, out)
	return err
}

// Do calls the API server with token and returns the status code; see Admin.
func (c *Cluster) Do(ctx context.Context, token, method, path string, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// Namespace creates a namespace of a unique name that starts with prefix and returns its name.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	ns := strings.Trim(prefix, "-") + "-" + randomToken()[:8]
	if err := c.CreateNamespace(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// CreateNamespace creates namespace ns.
func (c *Cluster) CreateNamespace(ctx context.Context, ns string) error {
	return c.Admin(ctx, http.MethodPost, "/api/v1/namespaces", fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, ns), nil)
}

// Kubeconfig writes a kubeconfig at path for server (default: the API server itself) with a
// bearer token, trusting caFile (default: the cluster's CA).
func (c *Cluster) Kubeconfig(path, server, caFile, token string) error {
	if server == "" {
		server = c.URL
	}
	if caFile == "" {
		caFile = c.CAFile
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: test
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, server, caFile, token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// Pids returns the process ids of etcd and the API server.
func (c *Cluster) Pids() []int {
	var out []int
	for _, p := range c.procs {
		out = append(out, p.Process.Pid)
	}
	return out
}

// Stop ends the API server and etcd and returns their output if either had failed.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		_ = c.procs[i].Process.Kill()
		<-c.exited[i]
	}
	c.procs = nil
}

var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
	sharedDir  string
)

// Shared returns the package's cluster, started on first use (Main stops it). It skips t when
// the API server or etcd is missing, except with CI=true, where that fails t.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		if sharedErr = available(); sharedErr != nil {
			return
		}
		if sharedDir, sharedErr = os.MkdirTemp(shmDir(), "jitgate-kube-"); sharedErr != nil {
			return
		}
		shared, sharedErr = Start(context.Background(), sharedDir)
	})
	check(t, sharedErr)
	return shared
}

// Private starts a cluster for t alone, stopped when t ends (a test that should not leave an
// API server running under the tests after it). It skips or fails as Shared does.
func Private(t testing.TB) *Cluster {
	t.Helper()
	err := available()
	check(t, err)
	dir, err := os.MkdirTemp(shmDir(), "jitgate-kube-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), dir)
	t.Cleanup(func() {
		if c != nil {
			c.Stop()
		}
		os.RemoveAll(dir)
	})
	check(t, err)
	return c
}

// available reports errMissing unless the API server and etcd are there.
func available() error {
	bin, err := Binary()
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err == nil {
		_, err = exec.LookPath("etcd")
	}
	if err != nil {
		return fmt.Errorf("%w (kube-apiserver %s: build it with bash internal/testkube/build.sh; etcd: Debian's etcd-server)", errMissing, Version)
	}
	return nil
}

// check skips t for a missing API server or etcd (fails it with CI=true), and fails it for
// any other error.
func check(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errMissing) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("a Kubernetes API server is required with CI=true: %v", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Main runs a test package's tests, then stops the shared cluster if one was started. Use it
// from TestMain: os.Exit(testkube.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	return code
}

var errMissing = errors.New("no Kubernetes API server to test against")

// shmDir is where etcd keeps its data: memory if the machine has /dev/shm (the tests need no
// durability, and fsyncs on a busy disk make the API server slow).
func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// logBuffer keeps a process's output (stdout and stderr together) for error reports.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 1<<20 {
		l.buf.Reset()
	}
	return l.buf.Write(p)
}

// tail returns the last 4,000 bytes written.
func (l *logBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return strings.TrimSpace(s)
}
