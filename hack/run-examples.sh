#!/usr/bin/env bash
# Runs volume-agent on the bundled examples/, with no network: it starts the
# example git server and the Flocker control-service emulator on loopback, a
# second volume-agent as the CSI driver volume-agent.io (for
# examples/pods/csi.yaml), then the agent in the foreground, printing volumes as they become ready,
# until interrupted (Ctrl-C). The example configuration tears every volume
# down on exit, and this script then stops the servers, so nothing is left
# mounted. Called by `make run`; state lives under $RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${RUN_DIR:-$PWD/.run}
BINARY=${BINARY:-$PWD/bin/volume-agent}
GIT_PORT=19418
FLOCKER_PORT=14523

if [ "$(id -u)" != 0 ]; then
	echo "make run: not root: Memory emptyDirs and Flocker bind mounts will fail (run as root for the full example)" >&2
fi

mkdir -p "$RUN_DIR/bin" "$RUN_DIR/hooks.d" "$RUN_DIR/libexec"
go build -o "$RUN_DIR/bin/gitserver" ./test/gitserver/cmd/gitserver
go build -o "$RUN_DIR/bin/flocker-emulator" ./test/flocker/cmd/flocker-emulator

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for_file() {
	for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done
	echo "make run: $2 did not start (no $1)" >&2
	return 1
}

rm -f "$RUN_DIR/gitserver.ready" "$RUN_DIR/flocker.env"
"$RUN_DIR/bin/gitserver" --dir "$RUN_DIR/git" --port "$GIT_PORT" --ready-file "$RUN_DIR/gitserver.ready" &
pids+=($!)
"$RUN_DIR/bin/flocker-emulator" --state-dir "$RUN_DIR/flocker" --listen "127.0.0.1:$FLOCKER_PORT" \
	--env-file "$RUN_DIR/flocker.env" --dataset uploads \
	--remote-node 192.0.2.10 --remote-dataset pg-data &
pids+=($!)
wait_for_file "$RUN_DIR/gitserver.ready" "the example git server"
wait_for_file "$RUN_DIR/flocker.env" "the Flocker emulator"
set -a
# shellcheck disable=SC1091
. "$RUN_DIR/flocker.env"
set +a

# The example hook runs from a copy whose path the hook file names.
sed -e "s#/usr/local/libexec/volume-agent/record-volume.sh#$RUN_DIR/libexec/record-volume.sh#" \
	-e "s#/var/log/volume-agent/volumes.log#$RUN_DIR/volumes.log#" \
	examples/hooks.d/50-record-volume.json >"$RUN_DIR/hooks.d/50-record-volume.json"
install -m 0755 examples/hooks.d/record-volume.sh "$RUN_DIR/libexec/record-volume.sh"

# A second volume-agent as the CSI driver volume-agent.io, registered in the
# agent's registration dir, for examples/pods/csi.yaml. It runs in a session
# of its own, so that Ctrl-C reaches the agent alone and the agent can
# unpublish its CSI volumes through the driver before the driver stops.
mkdir -p "$RUN_DIR/root/plugins_registry"
setsid "$BINARY" run --root-dir "$RUN_DIR/csi-driver-root" --csi-endpoint "unix://$RUN_DIR/csi.sock" \
	--kubelet-registration-dir "$RUN_DIR/root/plugins_registry" &
pids+=($!)
echo $! >"$RUN_DIR/csi-driver.pid"

echo "make run: volume-agent on examples/pods with root dir $RUN_DIR/root; Ctrl-C stops it and tears the volumes down"
"$BINARY" run --config "$PWD/examples/agent-config.yaml" --root-dir "$RUN_DIR/root" \
	--pod-manifest-path "$PWD/examples/pods" --hook-dir "$RUN_DIR/hooks.d" &
agent=$!
trap 'kill -TERM "$agent" 2>/dev/null || true' INT TERM
wait "$agent" || true
# A second wait: the first returns when the trap runs, before the agent is done.
wait "$agent" 2>/dev/null || true
