#!/usr/bin/env bash
# Whole-system benchmark: the mock upstream direct, gptapi, an nginx
# proxy_pass baseline and a bare fasthttp proxy (bench/floor), measured in
# the same run. See bench/README.md.
#
#   bench/run.sh              one full run, results in bench/results/
#   bench/run.sh -runs 3      three runs: medians and min–max
#   bench/run.sh -quick       the same pipeline in under a minute; checks
#                             correctness only; results in a temp folder
#   bench/run.sh -keep        keep each run's folder (configs, logs, SQLite)
#
# Builds bin/gptapi, bin/mockllm and bin/floor, installs nginx and wrk from
# Debian when missing (as root), then runs bench/harness pinned to CPU 0.
# Every process it starts is stopped on exit, on Ctrl-C and on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
MAKE=${MAKE:-make}
args=()
quick=0
runs=1
while [ $# -gt 0 ]; do
	case "$1" in
	-quick | --quick) quick=1; args+=(-quick) ;;
	-runs | --runs) runs=${2:?-runs needs a number}; shift ;;
	-runs=* | --runs=*) runs=${1#*=} ;;
	-keep | --keep) args+=(-keep) ;;
	-h | --help) sed -n '2,14p' "$0"; exit 0 ;;
	*) echo "bench: unknown argument $1 (try -h)" >&2; exit 2 ;;
	esac
	shift
done
case "$runs" in '' | *[!0-9]*) echo "bench: -runs wants a number, got '$runs'" >&2; exit 2 ;; esac
[ "$quick" = 1 ] || args+=(-runs "$runs")

# need CMD PKG...: install the first Debian package that has a candidate.
APT_UPDATED=/tmp/.gptapi-apt-updated
need() {
	local cmd=$1
	shift
	command -v "$cmd" >/dev/null 2>&1 && return 0
	[ -x "/usr/sbin/$cmd" ] && return 0
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "bench: $cmd is missing and cannot be installed here" >&2
		return 0
	fi
	if [ ! -f "$APT_UPDATED" ]; then
		if apt-get update -qq >/dev/null 2>&1; then touch "$APT_UPDATED"; fi
	fi
	local pkg
	for pkg in "$@"; do
		if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
			if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
				echo "bench: installed $pkg"
				return 0
			fi
		fi
	done
	echo "bench: could not install $cmd; its part of the benchmark is skipped" >&2
}
need nginx nginx-light nginx
need wrk wrk
need taskset util-linux

"$MAKE" -s build mockllm GO="$GO"
"$GO" build -trimpath -o bin/floor ./bench/floor

work=$(mktemp -d /tmp/gptapi-bench-XXXXXX)
hp=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	if [ -n "$hp" ] && kill -0 "$hp" 2>/dev/null; then
		kill -TERM -- "-$hp" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$hp" 2>/dev/null || break
			sleep 0.3
		done
		kill -KILL -- "-$hp" 2>/dev/null || true
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# -trimpath like `make build`, so the cgo SQLite driver comes from the same cache entry.
"$GO" build -trimpath -o "$work/harness" ./bench/harness

# The harness and everything it starts form one process group (setsid), so
# that cleanup can stop them all whatever state they are in.
# With two CPUs or more, the harness and the load generators run on CPU 0,
# the mock and the proxies on CPU 1.
pin=()
if [ "$(nproc --all)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	pin=(taskset -c 0)
	args+=(-gen-cpus 0 -sut-cpus 1)
fi
# Full runs ask for priority (nice -10, as root) so that other work on a
# shared machine disturbs the measurement less; quick runs time nothing.
prio=()
if [ "$quick" = 1 ]; then
	limit=170
else
	limit=$((runs * 600 + 120))
	[ "$(id -u)" = 0 ] && prio=(nice -n -10)
fi
setsid ${prio[@]+"${prio[@]}"} ${pin[@]+"${pin[@]}"} "$work/harness" -root "$PWD" -limit "${limit}s" ${args[@]+"${args[@]}"} &
hp=$!
set +e
wait "$hp"
rc=$?
set -e
hp=""
exit "$rc"
