package jitgate

import "strconv"

// KubernetesGroupPrefix starts the group a grant on a kubernetes resource is bound to.
const KubernetesGroupPrefix = "jitgate:grant:"

// KubernetesUserPrefix starts the user name the Kubernetes gateway impersonates.
const KubernetesUserPrefix = "jitgate:"

// KubernetesGroup returns the group g's RBAC bindings bind, jitgate:grant:<id>. Only the
// Kubernetes gateway asserts it, by impersonation, for requests made with g's credential.
func KubernetesGroup(g *Grant) string { return KubernetesGroupPrefix + strconv.FormatInt(g.ID, 10) }

// KubernetesUser returns the user the Kubernetes gateway impersonates for g, jitgate:<user>:
// the cluster's own audit log then names the person or agent holding the grant.
func KubernetesUser(g *Grant) string { return KubernetesUserPrefix + g.User }
