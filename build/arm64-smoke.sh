#!/usr/bin/env bash
# arm64-smoke.sh MOCKLLM GPTAPI_ARM64...
#
# Proves each arm64 gptapi binary starts and serves under qemu-user: a native
# mock upstream on 127.0.0.1, the arm64 proxy in front of it, one chat request,
# one stream, -version, SIGTERM, then the SQLite records it flushed on the way
# out. Everything stays on 127.0.0.1, every wait is bounded, and every process
# started here is stopped on exit.
#
# Environment: QEMU (qemu-aarch64[-static]), ARM64_SYSROOT (for the dynamic
# binary's loader and libc), QEMU_CPU (the emulated core; default neoverse-n1,
# an ARMv8.2-A like Kunpeng 920's tsv110).
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 MOCKLLM GPTAPI_ARM64..." >&2
	exit 2
fi
mockllm=$1
shift

QEMU=${QEMU:-$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)}
ARM64_SYSROOT=${ARM64_SYSROOT:-/usr/aarch64-linux-gnu}
export QEMU_CPU=${QEMU_CPU:-neoverse-n1}
[ -n "$QEMU" ] || { echo "no qemu-aarch64 found (apt-get install qemu-user-static)" >&2; exit 2; }
for tool in curl sqlite3 python3; do
	command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done

work=$(mktemp -d /tmp/gptapi-arm64-smoke.XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAIL: $*" >&2
	for f in "$work"/*/gptapi.log "$work"/mock.log; do
		[ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
	done
	exit 1
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_health URL SECONDS PID: poll until 200, or fail when the process died
# or the time ran out.
wait_health() {
	local url=$1 secs=$2 pid=$3 i
	for ((i = 0; i < secs * 5; i++)); do
		if curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || fail "$url: process $pid exited before it served"
		sleep 0.2
	done
	fail "$url: no 200 within ${secs}s"
}

# wait_exit PID SECONDS: sets exit_code to the process's exit code, or fails
# on timeout. (Not run in $(...): wait only knows this shell's children.)
wait_exit() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			exit_code=0
			wait "$pid" || exit_code=$?
			return 0
		fi
		sleep 0.1
	done
	fail "process $pid still running ${secs}s after SIGTERM"
}

mock_port=$(free_port)
"$mockllm" -listen "127.0.0.1:$mock_port" -chunks 8 -chunk-delay 5ms >"$work/mock.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")
wait_health "http://127.0.0.1:$mock_port/health" 10 "$mock_pid"

smoke() {
	local bin=$1 name dir port cfg pid out
	name=$(basename "$bin")
	dir="$work/$name"
	mkdir -p "$dir"
	[ -x "$bin" ] || fail "$bin: not an executable"
	local t0=$SECONDS

	# The build facts, read from the arm64 binary itself.
	out=$("$QEMU" -L "$ARM64_SYSROOT" "$bin" -version 2>&1) || fail "$name -version: $out"
	grep -q 'linux/arm64' <<<"$out" || fail "$name -version does not say linux/arm64: $out"
	grep -q 'GOARM64=v8.2' <<<"$out" || fail "$name -version does not say GOARM64=v8.2: $out"
	grep -q 'json parser: fastjson' <<<"$out" || fail "$name -version does not say fastjson: $out"

	# The level is real: on an ARMv8.0 core (no LSE atomics) it dies of
	# SIGILL (exit 128+4), so GOARM64=v8.2 reached the compiler.
	local rc
	rc=$( (QEMU_CPU=cortex-a57 exec "$QEMU" -L "$ARM64_SYSROOT" "$bin" -version) >/dev/null 2>&1; echo $?) 2>/dev/null
	[ "$rc" = 132 ] || fail "$name on an ARMv8.0 core (cortex-a57): exit $rc, want 132 (SIGILL)"

	port=$(free_port)
	cfg="$dir/config.yaml"
	cat >"$cfg" <<EOF
server:
  listen: "127.0.0.1:$port"
  shutdown_timeout: 5s
log:
  level: info
logsink:
  path: $dir/data/gptapi.db
  flush_interval: 50ms
  spill_dir: $dir/data/spill
openai_clients:
  - name: arm-mock
    base_url: http://127.0.0.1:$mock_port/v1
    model_match:
      type: keyword
      value: [qwen]
EOF
	out=$("$QEMU" -L "$ARM64_SYSROOT" "$bin" -check -config "$cfg" 2>&1) || fail "$name -check: $out"

	"$QEMU" -L "$ARM64_SYSROOT" "$bin" -config "$cfg" >"$dir/gptapi.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	wait_health "http://127.0.0.1:$port/health" 30 "$pid"
	local started=$((SECONDS - t0))

	# One chat answer: 200, from our client, with a choice in it.
	out=$(curl -sS -m 30 -D "$dir/chat.headers" -o "$dir/chat.body" -w '%{http_code}' \
		-H 'Content-Type: application/json' \
		-d '{"model":"qwen-7b","messages":[{"role":"user","content":"hello from arm64"}]}' \
		"http://127.0.0.1:$port/v1/chat/completions") || fail "$name chat: curl failed"
	[ "$out" = 200 ] || fail "$name chat: status $out: $(head -c 300 "$dir/chat.body")"
	grep -qi '^x-gptapi-upstream: arm-mock' "$dir/chat.headers" ||
		fail "$name chat: no X-Gptapi-Upstream: arm-mock in $(tr -d '\r' <"$dir/chat.headers")"
	grep -q '"choices"' "$dir/chat.body" || fail "$name chat: no choices in $(head -c 300 "$dir/chat.body")"

	# One stream: SSE chunks, then the [DONE] terminator.
	out=$(curl -sS -N -m 30 -D "$dir/stream.headers" -o "$dir/stream.body" -w '%{http_code}' \
		-H 'Content-Type: application/json' \
		-d '{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"stream from arm64"}]}' \
		"http://127.0.0.1:$port/v1/chat/completions") || fail "$name stream: curl failed"
	[ "$out" = 200 ] || fail "$name stream: status $out: $(head -c 300 "$dir/stream.body")"
	grep -qi '^x-gptapi-upstream: arm-mock' "$dir/stream.headers" || fail "$name stream: no X-Gptapi-Upstream"
	local chunks
	chunks=$(grep -c '^data: {' "$dir/stream.body" || true)
	[ "$chunks" -ge 2 ] || fail "$name stream: $chunks data chunks: $(head -c 300 "$dir/stream.body")"
	[ "$(grep -v '^\r\?$' "$dir/stream.body" | tail -n 1 | tr -d '\r')" = 'data: [DONE]' ] ||
		fail "$name stream: does not end with data: [DONE]"

	# SIGTERM: a clean exit (0) with every record flushed.
	kill -TERM "$pid"
	wait_exit "$pid" 20
	[ "$exit_code" = 0 ] || fail "$name: exit code $exit_code after SIGTERM"

	local db="$dir/data/gptapi.db" rows
	[ -f "$db" ] || fail "$name: no database at $db"
	rows=$(sqlite3 -readonly "$db" \
		"SELECT stream, status, upstream, endpoint, model FROM requests ORDER BY stream")
	local want=$'0|200|arm-mock|chat|qwen-7b\n1|200|arm-mock|chat|qwen-7b'
	[ "$rows" = "$want" ] || fail "$name: records are
$rows
want
$want"
	echo "ok   $name: started under qemu in ${started}s, chat + stream served, 2 records, $((SECONDS - t0))s"
}

for bin in "$@"; do
	smoke "$bin"
done
echo "arm64 smoke: $# binaries passed"
