#!/usr/bin/env bash
# build-kube.sh VERSION OUTDIR: builds kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kubectl
# VERSION (e.g. v1.37.2) from the Go module proxy into OUTDIR, unless OUTDIR
# already holds them all. OUTDIR lives outside the repository (a cache named
# by version), so a second run skips the build.
#
# `go install k8s.io/kubernetes/cmd/kubelet@VERSION` does not work because
# kubernetes' go.mod replaces every staging module with ./staging/...; a
# throwaway module that requires k8s.io/kubernetes and replaces each staging
# module with its published k8s.io/<name> v0.Y.Z does.
set -euo pipefail

version=${1:?usage: build-kube.sh VERSION OUTDIR}
out=${2:?usage: build-kube.sh VERSION OUTDIR}
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

have=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || have=0; done
if [ "$have" = 1 ]; then
	echo "kube binaries $version: cached in $out"
	exit 0
fi

minor=${version#v1.}; minor=${minor%%.*}
staging="v0.${version#v1.}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "kube binaries $version: building into $out (cold: ~8-20 min)"
start=$(date +%s)
cd "$work"
cat > go.mod <<MOD
module kubebuild

go 1.26
MOD
GOFLAGS=-mod=mod go mod download k8s.io/kubernetes@"$version"
kdir=$(go mod download -json k8s.io/kubernetes@"$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -f "$kdir/go.mod" ] || { echo "build-kube: cannot find k8s.io/kubernetes@$version in the module cache" >&2; exit 1; }

{
	echo "require k8s.io/kubernetes $version"
	echo "replace ("
	# Every staging module of the replace block, at its published version.
	# k8s.io/sample-cli-plugin is not served and not needed.
	sed -n '/^replace (/,/^)/p' "$kdir/go.mod" |
		sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' |
		grep -v '^k8s.io/sample-cli-plugin$' |
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
	echo ")"
} >> go.mod

cat > tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO

go mod tidy
mkdir -p "$out.tmp"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
pkgs=()
for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "kube binaries $version: built in $(( $(date +%s) - start ))s"
