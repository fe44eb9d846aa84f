//go:build tools

// Package apiserver pins k8s.io/kubernetes so that `go build k8s.io/kubernetes/cmd/kube-apiserver`
// in this directory builds the API server that jitgate's Kubernetes tests run against.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
