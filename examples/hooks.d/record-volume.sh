#!/bin/sh
# record-volume.sh: an example volume-agent lifecycle hook (see docs/hooks.md).
#
# It appends the volume state that volume-agent writes to its standard input
# (one JSON object: stage, pod namespace, name and UID, volume, plugin, path,
# annotations) to the file named by --log, one line per call. Install it where
# 50-record-volume.json's hook.path says, and that file in a hook directory.
set -eu

log=""
while [ $# -gt 0 ]; do
	case "$1" in
	--log)
		[ $# -ge 2 ] || { echo "record-volume: --log needs a file" >&2; exit 2; }
		log="$2"
		shift 2
		;;
	*)
		echo "record-volume: unknown argument: $1" >&2
		exit 2
		;;
	esac
done
[ -n "$log" ] || { echo "record-volume: --log is required" >&2; exit 2; }

state=$(cat)
mkdir -p "$(dirname "$log")"
printf '%s\n' "$state" >>"$log"
echo "record-volume: recorded the volume in $log"
