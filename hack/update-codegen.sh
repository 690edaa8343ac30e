#!/usr/bin/env bash
# Regenerates the deepcopy, conversion and defaulting code of pkg/apis/config
# with k8s.io/code-generator. The generators are run with `go run pkg@version`,
# so they are not added to go.mod. Keep CODEGEN_VERSION in step with
# k8s.io/apimachinery in go.mod.
set -o errexit -o nounset -o pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

CODEGEN_VERSION="${CODEGEN_VERSION:-v0.37.2}"
MODULE="github.com/volume-agent/volume-agent"
INTERNAL="${MODULE}/pkg/apis/config"
V1ALPHA1="${INTERNAL}/v1alpha1"

gen() {
  go run "k8s.io/code-generator/cmd/$1@${CODEGEN_VERSION}" --go-header-file /dev/null "${@:2}"
}

gen deepcopy-gen --output-file zz_generated.deepcopy.go "${INTERNAL}" "${V1ALPHA1}"
gen conversion-gen --output-file zz_generated.conversion.go "${V1ALPHA1}"
gen defaulter-gen --output-file zz_generated.defaults.go "${V1ALPHA1}"
gofmt -w pkg/apis/config
