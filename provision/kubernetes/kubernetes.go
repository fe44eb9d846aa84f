// Package kubernetes switches Kubernetes roles on and off per grant with the cluster's own RBAC.
// A role's grants name ClusterRoles or Roles (clusterrole/view, role/deployer); while a grant is
// active, RoleBindings in the role's namespaces (or, without namespaces, ClusterRoleBindings)
// bind them to the grant's own group, jitgate:grant:<id>, which only the Kubernetes gateway
// ever asserts (by impersonation). The bindings are labelled with the installation, so that
// the drift reconciler finds and removes those no live grant explains, and the end of a grant
// deletes them and reads the cluster again to prove they are gone (the revocation receipt).
//
// jitgate's identity in the cluster needs the permissions in docs/kubernetes.md: manage
// RoleBindings and ClusterRoleBindings, bind the named roles, read roles, and impersonate.
package kubernetes

import (
	"context"
	"crypto/tls"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"
)

// Labels and annotations on the bindings jitgate creates.
const (
	LabelManagedBy    = "app.kubernetes.io/managed-by"
	LabelInstallation = "jitgate.dev/installation"
	LabelGrant        = "jitgate.dev/grant"
	AnnotationUser    = "jitgate.dev/user"
	AnnotationRole    = "jitgate.dev/role"
	AnnotationEndsAt  = "jitgate.dev/ends-at"
	managedBy         = "jitgate"
)

// Group returns the group g's bindings bind (jitgate.KubernetesGroup).
func Group(g *jitgate.Grant) string { return jitgate.KubernetesGroup(g) }

// Provisioner manages the bindings of one kubernetes resource.
type Provisioner struct {
	res     *jitgate.Resource
	install string
	// rbac is a client of the RBAC API alone (the whole clientset would double the binary).
	rbac rbacclient.RbacV1Interface
}

var (
	_ jitgate.Provisioner            = (*Provisioner)(nil)
	_ jitgate.RevocationVerifier     = (*Provisioner)(nil)
	_ jitgate.Reconciler             = (*Provisioner)(nil)
	_ jitgate.StandingAccessReporter = (*Provisioner)(nil)
)

// labelValue is what a label value may be.
var labelValue = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// RESTConfig returns how jitgate reaches res's API server as itself: its URL, the CA bundle,
// and token (read from where res.Token says) or the client certificate res names.
func RESTConfig(res *jitgate.Resource, token string) (*rest.Config, error) {
	if res.Kind != jitgate.KindKubernetes {
		return nil, fmt.Errorf("resource %s is %s, not kubernetes", res.Name, res.Kind)
	}
	cfg := &rest.Config{Host: res.Address, Timeout: 30 * time.Second, UserAgent: "jitgate"}
	cfg.TLSClientConfig.CAFile = res.CAFile
	switch {
	case token != "":
		cfg.BearerToken = strings.TrimSpace(token)
	case res.ClientCert != "":
		cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = res.ClientCert, res.ClientKey
	default:
		return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: no token or client certificate for the cluster", res.Name)
	}
	return cfg, nil
}

// TLSConfig returns the TLS settings of res's API server (its CA, jitgate's client
// certificate if any), for the gateway's own connections to it.
func TLSConfig(res *jitgate.Resource, token string) (*tls.Config, error) {
	cfg, err := RESTConfig(res, token)
	if err != nil {
		return nil, err
	}
	return rest.TLSConfigFor(cfg)
}

// New returns a provisioner for res of the jitgate installation install, whose bindings it
// marks, acting with token (see RESTConfig). It connects lazily.
func New(res *jitgate.Resource, install, token string) (*Provisioner, error) {
	if !labelValue.MatchString(install) {
		return nil, fmt.Errorf("resource %s: invalid installation id %q", res.Name, install)
	}
	cfg, err := RESTConfig(res, token)
	if err != nil {
		return nil, err
	}
	rbac, err := rbacclient.NewForConfig(cfg)
	if err != nil {
		return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: %v", res.Name, err)
	}
	return &Provisioner{res: res, install: install, rbac: rbac}, nil
}

// Manages reports true for every role of the resource: each is bound per grant.
func (p *Provisioner) Manages(role string) bool { return p.res.Role(role) != nil }

// AccountFor returns the subject g's bindings bind: its group.
func (p *Provisioner) AccountFor(g *jitgate.Grant) string { return Group(g) }

// binding is one binding a grant needs: a RoleBinding in Namespace, or a ClusterRoleBinding
// when Namespace is empty.
type binding struct {
	Namespace, Name string
	Ref             rbacv1.RoleRef
}

// bindings returns the bindings g needs, in a stable order.
func (p *Provisioner) bindings(g *jitgate.Grant) ([]binding, error) {
	role := p.res.Role(g.Role)
	if role == nil {
		return nil, fmt.Errorf("resource %s has no role %s", p.res.Name, g.Role)
	}
	var out []binding
	for i, gr := range role.Grants {
		kind, name, _ := strings.Cut(gr, "/")
		ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}
		if kind == "role" {
			ref.Kind = "Role"
		}
		bname := fmt.Sprintf("jitgate-grant-%d-%d", g.ID, i)
		if len(role.Namespaces) == 0 {
			out = append(out, binding{Name: bname, Ref: ref})
			continue
		}
		for _, ns := range role.Namespaces {
			out = append(out, binding{Namespace: ns, Name: bname, Ref: ref})
		}
	}
	return out, nil
}

func (p *Provisioner) meta(g *jitgate.Grant, name, ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns,
		Labels: map[string]string{LabelManagedBy: managedBy, LabelInstallation: p.install, LabelGrant: strconv.FormatInt(g.ID, 10)},
		Annotations: map[string]string{AnnotationUser: g.User, AnnotationRole: g.Role,
			AnnotationEndsAt: g.EndsAt.UTC().Format(time.RFC3339)}}
}

func subjects(g *jitgate.Grant) []rbacv1.Subject {
	return []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: Group(g)}}
}

// Grant creates g's bindings, or brings existing ones back in line (a retry after a partial
// failure, or a binding edited by hand).
func (p *Provisioner) Grant(ctx context.Context, g *jitgate.Grant) error {
	bs, err := p.bindings(g)
	if err != nil {
		return err
	}
	rbac := p.rbac
	for _, b := range bs {
		if b.Namespace == "" {
			want := &rbacv1.ClusterRoleBinding{ObjectMeta: p.meta(g, b.Name, ""), RoleRef: b.Ref, Subjects: subjects(g)}
			_, err = rbac.ClusterRoleBindings().Create(ctx, want, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// A roleRef cannot change: start that binding again.
				if err = rbac.ClusterRoleBindings().Delete(ctx, b.Name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
					_, err = rbac.ClusterRoleBindings().Create(ctx, want, metav1.CreateOptions{})
				}
			}
		} else {
			want := &rbacv1.RoleBinding{ObjectMeta: p.meta(g, b.Name, b.Namespace), RoleRef: b.Ref, Subjects: subjects(g)}
			_, err = rbac.RoleBindings(b.Namespace).Create(ctx, want, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				if err = rbac.RoleBindings(b.Namespace).Delete(ctx, b.Name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
					_, err = rbac.RoleBindings(b.Namespace).Create(ctx, want, metav1.CreateOptions{})
				}
			}
		}
		if err != nil {
			return fmt.Errorf("bind %s to %s: %w", describe(b.Namespace, b.Name, b.Ref), Group(g), err)
		}
	}
	return nil
}

// selector selects this installation's bindings, of one grant if id > 0.
func (p *Provisioner) selector(id int64) string {
	s := LabelManagedBy + "=" + managedBy + "," + LabelInstallation + "=" + p.install
	if id > 0 {
		s += "," + LabelGrant + "=" + strconv.FormatInt(id, 10)
	}
	return s
}

// found is a binding read back from the cluster.
type found struct {
	Namespace, Name string
	Ref             rbacv1.RoleRef
	Subjects        []rbacv1.Subject
	Grant           string
}

// list reads this installation's bindings (of one grant if id > 0) across the cluster.
func (p *Provisioner) list(ctx context.Context, id int64) ([]found, error) {
	opts := metav1.ListOptions{LabelSelector: p.selector(id)}
	rbac := p.rbac
	crbs, err := rbac.ClusterRoleBindings().List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list ClusterRoleBindings: %w", err)
	}
	rbs, err := rbac.RoleBindings(metav1.NamespaceAll).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list RoleBindings: %w", err)
	}
	var out []found
	for _, b := range crbs.Items {
		out = append(out, found{Name: b.Name, Ref: b.RoleRef, Subjects: b.Subjects, Grant: b.Labels[LabelGrant]})
	}
	for _, b := range rbs.Items {
		out = append(out, found{Namespace: b.Namespace, Name: b.Name, Ref: b.RoleRef, Subjects: b.Subjects, Grant: b.Labels[LabelGrant]})
	}
	return out, nil
}

func (p *Provisioner) remove(ctx context.Context, namespace, name string) error {
	var err error
	if namespace == "" {
		err = p.rbac.ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
	} else {
		err = p.rbac.RoleBindings(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// Revoke deletes every binding of g (found by its labels, so a binding of a role since
// changed in the config goes too); deleting what is already gone succeeds.
func (p *Provisioner) Revoke(ctx context.Context, g *jitgate.Grant) error {
	bs, err := p.list(ctx, g.ID)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if err := p.remove(ctx, b.Namespace, b.Name); err != nil {
			return fmt.Errorf("delete %s: %w", describe(b.Namespace, b.Name, b.Ref), err)
		}
	}
	return nil
}

// VerifyRevoked reads the cluster again after Revoke: no binding of g may remain, and none may
// bind its group (a binding made by hand without jitgate's labels included).
func (p *Provisioner) VerifyRevoked(ctx context.Context, g *jitgate.Grant) (string, error) {
	bs, err := p.list(ctx, g.ID)
	if err != nil {
		return "", err
	}
	if len(bs) > 0 {
		return "", fmt.Errorf("%d binding(s) of grant %d remain: %s", len(bs), g.ID, describe(bs[0].Namespace, bs[0].Name, bs[0].Ref))
	}
	group := Group(g)
	rbac := p.rbac
	crbs, err := rbac.ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	n := 0
	for _, b := range crbs.Items {
		if bindsGroup(b.Subjects, group) {
			return "", fmt.Errorf("ClusterRoleBinding %s still binds %s", b.Name, group)
		}
		n++
	}
	role := p.res.Role(g.Role)
	var namespaces []string
	if role != nil {
		namespaces = role.Namespaces
	}
	for _, ns := range namespaces {
		rbs, err := rbac.RoleBindings(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		for _, b := range rbs.Items {
			if bindsGroup(b.Subjects, group) {
				return "", fmt.Errorf("RoleBinding %s/%s still binds %s", ns, b.Name, group)
			}
		}
	}
	where := "cluster-wide"
	if len(namespaces) > 0 {
		where = "cluster-wide and in " + strings.Join(namespaces, ", ")
	}
	return fmt.Sprintf("no binding of grant %d and none of %s (%s)", g.ID, group, where), nil
}

func bindsGroup(ss []rbacv1.Subject, group string) bool {
	return slices.ContainsFunc(ss, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.GroupKind && s.Name == group })
}

// ManagedAccounts lists this installation's bindings, one account each: its Name is the
// subject it binds (the grant's group, as AccountFor gives it, when the binding is as jitgate
// made it), and its Ref the binding. A binding whose subjects or role no role of the resource
// explains (edited by hand) gets a name that matches no grant, so the reconciler removes it.
func (p *Provisioner) ManagedAccounts(ctx context.Context) ([]jitgate.ManagedAccount, error) {
	bs, err := p.list(ctx, 0)
	if err != nil {
		return nil, err
	}
	out := make([]jitgate.ManagedAccount, 0, len(bs))
	for _, b := range bs {
		id, _ := strconv.ParseInt(b.Grant, 10, 64)
		a := jitgate.ManagedAccount{GrantID: id, Ref: ref(b.Namespace, b.Name)}
		switch {
		case len(b.Subjects) != 1 || b.Subjects[0].Kind != rbacv1.GroupKind || b.Subjects[0].Name != jitgate.KubernetesGroupPrefix+strconv.FormatInt(id, 10):
			a.Name = "subjects " + describeSubjects(b.Subjects)
		case !p.explains(b):
			a.Name = fmt.Sprintf("%s bound to %s, which no role of %s names", b.Subjects[0].Name, describe(b.Namespace, b.Name, b.Ref), p.res.Name)
		default:
			a.Name = b.Subjects[0].Name
		}
		out = append(out, a)
	}
	return out, nil
}

// explains reports whether some role of the resource makes a binding like b.
func (p *Provisioner) explains(b found) bool {
	for _, r := range p.res.Roles {
		if b.Namespace == "" && len(r.Namespaces) > 0 || b.Namespace != "" && !slices.Contains(r.Namespaces, b.Namespace) {
			continue
		}
		for _, gr := range r.Grants {
			kind, name, _ := strings.Cut(gr, "/")
			if name == b.Ref.Name && strings.EqualFold(kind, b.Ref.Kind) {
				return true
			}
		}
	}
	return false
}

// RemoveAccount deletes the binding a.Ref names.
func (p *Provisioner) RemoveAccount(ctx context.Context, a jitgate.ManagedAccount) error {
	ns, name, err := parseRef(a.Ref)
	if err != nil {
		return err
	}
	return p.remove(ctx, ns, name)
}

// ref names a binding: clusterrolebinding/NAME or rolebinding/NAMESPACE/NAME.
func ref(ns, name string) string {
	if ns == "" {
		return "clusterrolebinding/" + name
	}
	return "rolebinding/" + ns + "/" + name
}

func parseRef(s string) (ns, name string, err error) {
	if n, ok := strings.CutPrefix(s, "clusterrolebinding/"); ok && n != "" && !strings.Contains(n, "/") {
		return "", n, nil
	}
	if rest, ok := strings.CutPrefix(s, "rolebinding/"); ok {
		if ns, name, ok := strings.Cut(rest, "/"); ok && ns != "" && name != "" && !strings.Contains(name, "/") {
			return ns, name, nil
		}
	}
	return "", "", fmt.Errorf("not a binding reference: %q", s)
}

func describe(ns, name string, r rbacv1.RoleRef) string {
	kind := "clusterrole"
	if r.Kind == "Role" {
		kind = "role"
	}
	if ns == "" {
		return fmt.Sprintf("ClusterRoleBinding %s (%s/%s)", name, kind, r.Name)
	}
	return fmt.Sprintf("RoleBinding %s/%s (%s/%s)", ns, name, kind, r.Name)
}

func describeSubjects(ss []rbacv1.Subject) string {
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		parts = append(parts, subjectName(s))
	}
	return strings.Join(parts, ", ")
}

func subjectName(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return "ServiceAccount " + s.Namespace + "/" + s.Name
	}
	return s.Kind + " " + s.Name
}

// StandingAccess lists every subject that a binding jitgate does not manage gives a role,
// with the roles and where; subjects bound to powerful roles are flagged. The control plane's
// own users and groups (system:...) are left out; service accounts are not. Read-only.
func (p *Provisioner) StandingAccess(ctx context.Context) ([]jitgate.StandingAccount, error) {
	rbac := p.rbac
	crs, err := rbac.ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ClusterRoles: %w", err)
	}
	roles, err := rbac.Roles(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Roles: %w", err)
	}
	flagsOf := map[string][]string{}
	for _, r := range crs.Items {
		flagsOf["ClusterRole/"+r.Name] = RuleFlags(r.Name, r.Rules)
	}
	for _, r := range roles.Items {
		flagsOf["Role/"+r.Namespace+"/"+r.Name] = RuleFlags(r.Name, r.Rules)
	}
	crbs, err := rbac.ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ClusterRoleBindings: %w", err)
	}
	rbs, err := rbac.RoleBindings(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list RoleBindings: %w", err)
	}
	accounts := map[string]*jitgate.StandingAccount{}
	add := func(labels map[string]string, ss []rbacv1.Subject, ns string, r rbacv1.RoleRef) {
		if labels[LabelManagedBy] == managedBy {
			return
		}
		key := "ClusterRole/" + r.Name
		if r.Kind == "Role" {
			key = "Role/" + ns + "/" + r.Name
		}
		where := "cluster-wide"
		if ns != "" {
			where = "in " + ns
		}
		for _, s := range ss {
			if s.Kind != rbacv1.ServiceAccountKind && strings.HasPrefix(s.Name, "system:") {
				continue
			}
			name := subjectName(s)
			a := accounts[name]
			if a == nil {
				a = &jitgate.StandingAccount{Name: name}
				accounts[name] = a
			}
			a.MemberOf = append(a.MemberOf, fmt.Sprintf("%s/%s %s", strings.ToLower(r.Kind), r.Name, where))
			for _, f := range flagsOf[key] {
				if !slices.Contains(a.Flags, f) {
					a.Flags = append(a.Flags, f)
				}
			}
		}
	}
	for _, b := range crbs.Items {
		add(b.Labels, b.Subjects, "", b.RoleRef)
	}
	for _, b := range rbs.Items {
		add(b.Labels, b.Subjects, b.Namespace, b.RoleRef)
	}
	out := make([]jitgate.StandingAccount, 0, len(accounts))
	for _, a := range accounts {
		sort.Strings(a.MemberOf)
		sort.Strings(a.Flags)
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Flags of a Kubernetes standing-access report.
const (
	FlagClusterAdmin  = "cluster-admin"
	FlagAdmin         = "admin"
	FlagEdit          = "edit"
	FlagWildcard      = "wildcard"
	FlagSecrets       = "secrets"
	FlagExec          = "exec"
	FlagEscalate      = "escalate"
	FlagImpersonation = "impersonate"
)

// RuleFlags names what makes a role with these rules powerful: the built-in cluster-admin,
// admin and edit roles, wildcard verbs or resources, reading secrets, exec or attach into
// pods, and changing RBAC or impersonating others.
func RuleFlags(name string, rules []rbacv1.PolicyRule) []string {
	var flags []string
	add := func(f string) {
		if !slices.Contains(flags, f) {
			flags = append(flags, f)
		}
	}
	switch name {
	case "cluster-admin":
		add(FlagClusterAdmin)
	case "admin":
		add(FlagAdmin)
	case "edit":
		add(FlagEdit)
	}
	for _, r := range rules {
		has := func(list []string, v ...string) bool {
			return slices.Contains(list, "*") || slices.ContainsFunc(v, func(x string) bool { return slices.Contains(list, x) })
		}
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") {
			add(FlagWildcard)
		}
		core := len(r.APIGroups) == 0 || has(r.APIGroups, "")
		if core && has(r.Resources, "secrets") && has(r.Verbs, "get", "list", "watch") {
			add(FlagSecrets)
		}
		if core && has(r.Resources, "pods/exec", "pods/attach") && has(r.Verbs, "create", "get") {
			add(FlagExec)
		}
		if has(r.APIGroups, rbacv1.GroupName) && has(r.Verbs, "escalate", "bind") {
			add(FlagEscalate)
		}
		if has(r.Verbs, "impersonate") {
			add(FlagImpersonation)
		}
	}
	sort.Strings(flags)
	return flags
}
