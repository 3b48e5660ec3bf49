#!/bin/sh
# run-ab.sh - bench/ab.py (A/B of mxgate binaries) in the benchmark's private
# network + mount namespace, like run.sh.  Needs root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/run-ab.sh: needs root" >&2; exit 1; }
exec timeout -k 30 1200 unshare --net --mount --propagation private \
	/usr/bin/python3 "$here/ab.py" "$@"
