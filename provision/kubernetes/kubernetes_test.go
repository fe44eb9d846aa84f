package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testkube"
	"github.com/jitgate/jitgate/provision/kubernetes"
)

func TestMain(m *testing.M) { os.Exit(testkube.Main(m)) }

// setup returns a provisioner of a new installation on the shared cluster, with a namespaced
// role (view in two fresh namespaces) and a cluster-wide one.
func setup(t *testing.T) (*testkube.Cluster, *kubernetes.Provisioner, *jitgate.Resource, []string) {
	t.Helper()
	c := testkube.Shared(t)
	suffix := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(suffix) > 30 {
		suffix = suffix[:30]
	}
	nss := []string{c.Namespace(t, "shop-"+suffix), c.Namespace(t, "web-"+suffix)}
	res := &jitgate.Resource{Name: "k8s", Kind: jitgate.KindKubernetes, Address: c.URL, CAFile: c.CAFile,
		Roles: []jitgate.Role{
			{Name: "view", Grants: []string{"clusterrole/view"}, Namespaces: nss},
			{Name: "cluster-view", Grants: []string{"clusterrole/view"}},
		}}
	p, err := kubernetes.New(res, nss[0], c.JitgateToken)
	if err != nil {
		t.Fatal(err)
	}
	return c, p, res, nss
}

// can asks the API server, as the grant's impersonated subject, whether it may list pods in ns.
func can(t *testing.T, c *testkube.Cluster, g *jitgate.Grant, verb, resource, ns string) bool {
	t.Helper()
	body := fmt.Sprintf(`{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":%q,"groups":[%q,"system:authenticated"],
		"resourceAttributes":{"verb":%q,"resource":%q,"namespace":%q}}}`, jitgate.KubernetesUser(g), jitgate.KubernetesGroup(g), verb, resource, ns)
	var out struct {
		Status struct {
			Allowed bool `json:"allowed"`
		} `json:"status"`
	}
	if err := c.Admin(context.Background(), http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", []byte(body), &out); err != nil {
		t.Fatal(err)
	}
	return out.Status.Allowed
}

func TestBindingsLiveOnlyWhileTheGrantIs(t *testing.T) {
	c, p, _, nss := setup(t)
	ctx := context.Background()
	g := &jitgate.Grant{ID: 7001, User: "alice", Resource: "k8s", Role: "view", EndsAt: time.Now().Add(time.Hour)}
	if can(t, c, g, "list", "pods", nss[0]) {
		t.Fatal("allowed before the grant")
	}
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if !can(t, c, g, "list", "pods", ns) {
			t.Errorf("cannot list pods in %s during the grant", ns)
		}
	}
	if can(t, c, g, "list", "pods", "default") {
		t.Error("may list pods outside the role's namespaces")
	}
	if can(t, c, g, "get", "secrets", nss[0]) || can(t, c, g, "delete", "pods", nss[0]) {
		t.Error("view grants secrets or delete")
	}
	// Granting again (a retry) is harmless.
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	accounts, err := p.ManagedAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(accounts) != 2 {
		t.Fatalf("managed accounts = %+v, want the 2 RoleBindings", accounts)
	}
	for _, a := range accounts {
		if a.GrantID != g.ID || a.Name != p.AccountFor(g) || !strings.HasPrefix(a.Ref, "rolebinding/") {
			t.Errorf("account %+v: want grant %d, name %s, a rolebinding", a, g.ID, p.AccountFor(g))
		}
	}

	if err := p.Revoke(ctx, g); err != nil {
		t.Fatal(err)
	}
	receipt, err := p.VerifyRevoked(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(receipt, "no binding of grant 7001") {
		t.Errorf("receipt %q", receipt)
	}
	if can(t, c, g, "list", "pods", nss[0]) {
		t.Error("still allowed after the revoke")
	}
	// Revoking again succeeds.
	if err := p.Revoke(ctx, g); err != nil {
		t.Fatal(err)
	}
}

func TestClusterWideGrant(t *testing.T) {
	c, p, _, nss := setup(t)
	ctx := context.Background()
	g := &jitgate.Grant{ID: 7002, User: "bob", Resource: "k8s", Role: "cluster-view", EndsAt: time.Now().Add(time.Hour)}
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if !can(t, c, g, "list", "pods", "default") || !can(t, c, g, "list", "pods", nss[1]) {
		t.Error("a cluster-wide view grant cannot list pods everywhere")
	}
	if err := p.Revoke(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyRevoked(ctx, g); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRevokedCatchesAHandMadeBinding(t *testing.T) {
	c, p, _, nss := setup(t)
	ctx := context.Background()
	g := &jitgate.Grant{ID: 7003, User: "carol", Resource: "k8s", Role: "view"}
	// Bound by hand, without jitgate's labels: the grant's group still has access.
	body := fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"by-hand"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
		"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":%q}]}`, jitgate.KubernetesGroup(g))
	if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+nss[0]+"/rolebindings", []byte(body), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyRevoked(ctx, g); err == nil || !strings.Contains(err.Error(), "by-hand") {
		t.Fatalf("VerifyRevoked = %v, want the hand-made binding named", err)
	}
}

func TestManagedAccountsExposeTamperedBindings(t *testing.T) {
	c, p, res, nss := setup(t)
	ctx := context.Background()
	g := &jitgate.Grant{ID: 7004, User: "dave", Resource: "k8s", Role: "view", EndsAt: time.Now().Add(time.Hour)}
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	labels := fmt.Sprintf(`{"app.kubernetes.io/managed-by":"jitgate","jitgate.dev/installation":%q,"jitgate.dev/grant":"7004"}`,
		nss[0])
	plant := func(name, role, subject string) {
		body := fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":%q,"labels":%s},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":%q},
			"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":%q}]}`, name, labels, role, subject)
		if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+nss[0]+"/rolebindings", []byte(body), nil); err != nil {
			t.Fatal(err)
		}
	}
	plant("planted-admin", "admin", jitgate.KubernetesGroup(g)) // a role no role of the resource names
	plant("planted-others", "view", "system:authenticated")     // everyone
	accounts, err := p.ManagedAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var odd []string
	for _, a := range accounts {
		if a.Name != p.AccountFor(g) {
			odd = append(odd, a.Ref)
			if err := p.RemoveAccount(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Sort(odd)
	want := []string{"rolebinding/" + nss[0] + "/planted-admin", "rolebinding/" + nss[0] + "/planted-others"}
	if !slices.Equal(odd, want) {
		t.Fatalf("unexplained bindings %v, want %v", odd, want)
	}
	// The grant's own bindings stayed.
	if !can(t, c, g, "list", "pods", nss[1]) {
		t.Error("removing the planted bindings removed the grant's own")
	}
	_ = res
}

func TestStandingAccess(t *testing.T) {
	c, p, _, nss := setup(t)
	ctx := context.Background()
	g := &jitgate.Grant{ID: 7005, User: "erin", Resource: "k8s", Role: "view", EndsAt: time.Now().Add(time.Hour)}
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	user := "mallory-" + strings.ToLower(t.Name())
	body := fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":%q},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},
		"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":%q}]}`, user, user)
	if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", []byte(body), nil); err != nil {
		t.Fatal(err)
	}
	body = fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"dev-edit"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},
		"subjects":[{"kind":"ServiceAccount","name":"deployer","namespace":%q}]}`, nss[1])
	if err := c.Admin(ctx, http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+nss[1]+"/rolebindings", []byte(body), nil); err != nil {
		t.Fatal(err)
	}
	accounts, err := p.StandingAccess(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]jitgate.StandingAccount{}
	for _, a := range accounts {
		byName[a.Name] = a
		if strings.Contains(a.Name, jitgate.KubernetesGroup(g)) {
			t.Errorf("jitgate's own binding reported as standing access: %+v", a)
		}
	}
	m := byName["User "+user]
	if !slices.Contains(m.Flags, kubernetes.FlagClusterAdmin) || !slices.Contains(m.Flags, kubernetes.FlagWildcard) ||
		!slices.Contains(m.MemberOf, "clusterrole/cluster-admin cluster-wide") {
		t.Errorf("cluster-admin user: %+v", m)
	}
	sa := byName["ServiceAccount "+nss[1]+"/deployer"]
	if !slices.Contains(sa.Flags, kubernetes.FlagEdit) || !slices.Contains(sa.Flags, kubernetes.FlagExec) || !slices.Contains(sa.Flags, kubernetes.FlagSecrets) {
		t.Errorf("edit service account: %+v", sa)
	}
	j := byName["User "+testkube.JitgateUser]
	if !slices.Contains(j.Flags, kubernetes.FlagImpersonation) || !slices.Contains(j.Flags, kubernetes.FlagEscalate) {
		t.Errorf("jitgate's own identity: %+v", j)
	}
}

// jitgate's identity may be a client certificate instead of a token.
func TestClientCertificateIdentity(t *testing.T) {
	c, _, res, nss := setup(t)
	ctx := context.Background()
	res.ClientCert, res.ClientKey = c.ClientCert, c.ClientKey
	p, err := kubernetes.New(res, nss[0]+"-cert", "")
	if err != nil {
		t.Fatal(err)
	}
	g := &jitgate.Grant{ID: 7006, User: "frank", Resource: "k8s", Role: "view", EndsAt: time.Now().Add(time.Hour)}
	if err := p.Grant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if !can(t, c, g, "list", "pods", nss[0]) {
		t.Error("the grant made with a client certificate does not work")
	}
	if err := p.Revoke(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyRevoked(ctx, g); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	res := &jitgate.Resource{Name: "k8s", Kind: jitgate.KindKubernetes, Address: "https://127.0.0.1:1"}
	if _, err := kubernetes.New(res, "bad installation", "t"); err == nil {
		t.Error("accepted an installation id that is no label value")
	}
	if _, err := kubernetes.New(res, "ok", ""); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("New without an identity = %v", err)
	}
	if _, err := kubernetes.New(&jitgate.Resource{Name: "db", Kind: jitgate.KindPostgres}, "ok", "t"); err == nil {
		t.Error("accepted a postgres resource")
	}
}
