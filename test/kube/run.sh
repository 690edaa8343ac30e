#!/usr/bin/env bash
# make test-kube: installs the Debian packages the test node needs, builds
# (or takes from the cache) kube-apiserver, kubelet and kubectl, builds the
# harness's own binaries, then runs the harness (test/kube/main.go), which
# brings up a single-node Kubernetes on loopback, runs the scenarios and tears
# everything down. Extra arguments go to the harness (e.g. --run REGEXP).
#
# Environment: KUBE_VERSION (default: the release matching go.mod's
# k8s.io/api), VOLUME_AGENT_CACHE (default ~/.cache/volume-agent; the kube
# binaries go to $VOLUME_AGENT_CACHE/kube/$KUBE_VERSION).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
	echo "make test-kube: must run as root (it runs a kubelet and containerd, and mounts)" >&2
	exit 1
fi

start=$(date +%s)
api=$(go list -m -f '{{.Version}}' k8s.io/api)
KUBE_VERSION=${KUBE_VERSION:-v1.${api#v0.}}
CACHE=${VOLUME_AGENT_CACHE:-$HOME/.cache/volume-agent}
OUT=_output/kube

packages=(containerd runc etcd-server containernetworking-plugins debootstrap busybox-static git)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The DaemonSet scenario runs volume-agent's own image. Cold, its debootstrap
# (network and dpkg) runs while Kubernetes builds (CPU).
mkdir -p "$OUT"
# In a process group of its own (set -m), so that an interrupted run stops
# it, debootstrap included.
set -m
./test/kube/make-image.sh >"$OUT/make-image.log" 2>&1 &
image_pid=$!
set +m
trap 'kill -- "-$image_pid" 2>/dev/null || true' EXIT
./test/kube/build-kube.sh "$KUBE_VERSION" "$CACHE/kube/$KUBE_VERSION"
if ! wait "$image_pid"; then
	cat "$OUT/make-image.log" >&2
	echo "make test-kube: make image failed" >&2
	exit 1
fi
trap - EXIT
cat "$OUT/make-image.log"

mkdir -p "$OUT/bin"
CGO_ENABLED=0 go build -o "$OUT/bin/" ./cmd/volume-agent ./test/gitserver/cmd/gitserver \
	./test/flocker/cmd/flocker-emulator ./test/kube/pause
go build -o "$OUT/bin/kube-harness" ./test/kube
echo "build phase: $(( $(date +%s) - start ))s"

exec "$OUT/bin/kube-harness" --kube-bin "$CACHE/kube/$KUBE_VERSION" --bin-dir "$OUT/bin" --log-dir "$OUT/logs" "$@"
