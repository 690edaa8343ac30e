#!/usr/bin/env bash
# make image: volume-agent's OCI image tarball, without docker or a registry:
# a Debian bookworm minbase root file system with git and CA certificates
# (debootstrap, cached outside the repository) plus the static binary.
# Load it with `ctr -n k8s.io images import _output/volume-agent-image.tar`.
#
# Environment: VOLUME_AGENT_CACHE (default ~/.cache/volume-agent), IMAGE
# (default docker.io/library/volume-agent:dev), VERSION (embedded version).
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${VOLUME_AGENT_CACHE:-$HOME/.cache/volume-agent}
IMAGE=${IMAGE:-docker.io/library/volume-agent:dev}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
ROOTFS=$CACHE/rootfs/bookworm-minbase-git
OUT=_output

if [ ! -d "$ROOTFS" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "make image: debootstrap needs root to build $ROOTFS once" >&2
		exit 1
	fi
	command -v debootstrap >/dev/null || {
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	}
	echo "debootstrap bookworm (minbase, git, ca-certificates) into $ROOTFS"
	rm -rf "$ROOTFS.tmp"
	mkdir -p "$(dirname "$ROOTFS")"
	debootstrap --variant=minbase --include=git,ca-certificates bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >"$CACHE/rootfs/debootstrap.log" 2>&1 ||
		{ echo "make image: debootstrap failed, see $CACHE/rootfs/debootstrap.log" >&2; exit 1; }
	# The package caches are not part of the image.
	rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*
	mv "$ROOTFS.tmp" "$ROOTFS"
fi

mkdir -p "$OUT/image"
CGO_ENABLED=0 go build -ldflags "-X github.com/volume-agent/volume-agent/cmd/volume-agent/app.version=$VERSION" \
	-o "$OUT/image/volume-agent" ./cmd/volume-agent
go run ./test/kube/mkimage --rootfs "$ROOTFS" --binary "$OUT/image/volume-agent" --name "$IMAGE" \
	--output "$OUT/volume-agent-image.tar"
echo "$OUT/volume-agent-image.tar: $IMAGE ($(du -h "$OUT/volume-agent-image.tar" | cut -f1))"
