#!/usr/bin/env bash
# Builds the kube-apiserver jitgate's Kubernetes tests run against (see internal/testkube), from
# the module proxy, into the user's cache directory, unless it is there already. About 15 minutes
# on 2 cores the first time; the Go build cache makes a rebuild quick.
set -euo pipefail
cd "$(dirname "$0")/apiserver"
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' go.mod)
out="${XDG_CACHE_HOME:-$HOME/.cache}/jitgate/kube-apiserver-$version"
if [ -x "$out" ]; then
  echo "kube-apiserver $version: $out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
echo "building kube-apiserver $version into $out (about 15 minutes the first time)"
go build -trimpath -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out.tmp" "$out"
echo "kube-apiserver $version: $out"
