#!/bin/sh
# run.sh - run mxgate's benchmark (bench/bench.py) in a private network and
# mount namespace: a fresh loopback of its own (nothing else is reachable, no
# port clashes with other work on the machine), unbound on 127.0.0.1:53 and
# /etc/resolv.conf bind-mounted to point at it - for the benchmark's
# processes only.  Needs root (unshare, cgroups, Postfix).
#
#   bench/run.sh [bench.py options]       e.g. --runs 1 --sessions 1,50
#   bench/run.sh --flood-only [--flood-rate N ...]   only the flood (flood.py)
#   bench/run.sh --blackhole-only [--blackhole-rounds N]   only the black-holed
#                                          route (blackhole.py)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench/run.sh: needs root (network namespace, cgroups, Postfix)" >&2
	exit 1
fi
# Inside the namespace (run.sh runs itself there, see the end): bench.py, then
# the black-holed route (bench/blackhole.py, issue 11), then the connection
# flood, mxgate vs Postfix postscreen (bench/flood.py, issue 17).
# --no-blackhole / --no-flood skip one of them, --blackhole-only /
# --flood-only everything else; the --blackhole-* and --flood-* options are
# theirs alone.
if [ "${MXBENCH_INNER:-}" = 1 ]; then
	bench_py() {
		skip=
		for a in "$@"; do
			shift
			if [ -n "$skip" ]; then skip=; continue; fi
			case $a in
			--flood-rate|--flood-secs|--flood-rounds|--flood-unlisted|\
			--flood-gateways|--flood-max-rate|\
			--blackhole-rounds|--blackhole-slow-rounds|--blackhole-sessions|\
			--blackhole-msgs|--blackhole-stall) skip=1 ;;
			--no-flood|--flood-*|--no-blackhole|--blackhole-*) ;;
			*) set -- "$@" "$a" ;;
			esac
		done
		/usr/bin/python3 "$here/bench.py" "$@"
	}
	rc=0
	case " $* " in
	*" --flood-only "*|*" --blackhole-only "*) ;;
	*) bench_py "$@" || rc=$? ;;
	esac
	case " $* " in
	*" --flood-only "*) ;;
	*) /usr/bin/python3 "$here/blackhole.py" "$@" || rc=$? ;;
	esac
	case " $* " in
	*" --blackhole-only "*) ;;
	*) /usr/bin/python3 "$here/flood.py" "$@" || rc=$? ;;
	esac
	exit $rc
fi
export MXBENCH_INNER=1
# 10,000 idle connections need 10,000+ descriptors in mxgate and in the client
hard=$(ulimit -Hn)
ulimit -n "$hard"
if [ "$hard" != unlimited ] && [ "$hard" -lt 12000 ]; then
	echo "bench/run.sh: note: fd limit is $hard; the connection-scale part will open fewer" >&2
fi
# a hard bound on the whole run (make bench stays under ~20 minutes)
exec timeout -k 30 1500 unshare --net --mount --propagation private \
	/bin/sh "$here/run.sh" "$@"
