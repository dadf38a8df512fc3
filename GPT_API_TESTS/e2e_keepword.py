"""Keep every word (issue 12): metrics Prometheus accepts, shutdown that
records everything, timeouts that bound, pools that wait, live reload,
models per tenant, and the small edge cases of what upstreams and callers
send."""

import copy
import gzip
import json
import shutil
import signal
import socket
import subprocess
import threading
import time

from e2e_common import expect_status, hdr, rid
from e2e_infra import (CheckFail, Stream, client, ensure, eq, http_request,
                       short, wait_until)
from e2e_mock import Hold, Json, Sse, Trickle, chat_answer, chat_chunks


def groups():
    return [metrics_group, shutdown_group, send_timeout_group, first_byte_group, pool_group,
            edges_group, models_group, cancel_group, reload_group]


def _gw_log(gw):
    try:
        with open(gw.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ====================================================================== metrics

def metrics_group(R):
    mA = R.mock("A")
    gw = R.gateway("kw-metrics", {"openai_clients": [client("a", mA, ["m-a"])]})

    @R.check("keepword.metrics.promtool")
    def _():
        promtool = shutil.which("promtool")
        ensure(promtool, "promtool not installed (make deps installs Debian's prometheus)")
        gw.ensure()
        expect_status(gw.chat("m-a"), 200)
        s = gw.stream_chat("m-a", timeout=10)
        s.read_all()
        r = gw.get("/metrics")
        expect_status(r, 200)
        p = subprocess.run([promtool, "check", "metrics"], input=r.body,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode("utf-8", "replace").strip()
        ensure(p.returncode == 0 and not out,
               "promtool check metrics (rc %d): %s" % (p.returncode, short(out, 600)))
        text = r.body.decode()
        for fam, typ in (("gptapi_requests_total", "counter"),
                         ("gptapi_upstream_latency_seconds", "histogram"),
                         ("gptapi_ttft_seconds", "histogram"),
                         ("gptapi_active_streams", "gauge")):
            ensure("# TYPE %s %s\n" % (fam, typ) in text, "no # TYPE %s %s" % (fam, typ))


# ====================================================================== shutdown

def _start_streams(gw, model, n, tag, timeout=30):
    """n streams read by threads; returns (ids, streams, results, threads)
    once every stream has its first event."""
    ids = [rid(tag) for _ in range(n)]
    streams, results = {}, {}

    def reader(req_id):
        try:
            s = Stream(gw.port, "/v1/chat/completions",
                       {"model": model, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]},
                       hdr(req_id), timeout=timeout)
            streams[req_id] = s
            s.next_event()
            s.read_all()
            results[req_id] = s
        except Exception as e:
            results[req_id] = e
    ts = [threading.Thread(target=reader, args=(i,), daemon=True) for i in ids]
    for t in ts:
        t.start()
    wait_until(lambda: len(streams) == n and all(s.events for s in streams.values()),
               10, 0.02, "%d streams to start" % n)
    return ids, streams, results, ts


def _wait_exit(gw, timeout):
    try:
        gw.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        gw.kill()
        raise CheckFail("gptapi did not exit within %ds: %s" % (timeout, gw.log_tail(6)))
    return gw.proc.returncode


def _rows_after_replay(gw, ids, timeout=10):
    """Restart gptapi on the same database (it replays the spill folder)
    and return the rows of ids once all are there, or what is there."""
    gw.proc = None
    gw.err = None
    gw.start()
    want = set(ids)

    def got():
        rows = [r for r in gw.rows("request_id LIKE ?", (ids[0].rsplit("-", 1)[0] + "-%",))
                if r["request_id"] in want]
        return rows if len(rows) == len(want) else None
    try:
        return wait_until(got, timeout, 0.1, "records")
    except CheckFail:
        rows = gw.rows("request_id LIKE ?", (ids[0].rsplit("-", 1)[0] + "-%",))
        return [r for r in rows if r["request_id"] in want]


def shutdown_group(R):
    mA = R.mock("A")
    pieces = ["p%d " % i for i in range(40)]

    @R.check("keepword.shutdown.second_signal_open_streams")
    def _():
        gw = R.gateway("kw-sig2", {"server": {"shutdown_timeout": "20s"},
                                   "check_config": {"stream_idle_timeout": "5s"},
                                   "openai_clients": [client("a", mA, ["m-s"])]})
        mA.always(lambda rec: Sse(chat_chunks("m-s", pieces), interval=0.2))
        gw.ensure()
        ids, streams, results, ts = _start_streams(gw, "m-s", 20, "sig2")
        gw.signal(signal.SIGTERM)
        time.sleep(0.3)
        t2 = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = _wait_exit(gw, 15)
        took = time.monotonic() - t2
        for t in ts:
            t.join(5)
        eq(rc, 0, "exit code after a second SIGTERM")
        ensure(took < 5, "exited %.1fs after the second SIGTERM, not at once" % took)
        log = _gw_log(gw)
        ensure("every record written" in log, "no 'every record written' line: %s" % gw.log_tail(4))
        cut = [s for s in results.values() if isinstance(s, Stream)
               and any("shutting down" in (e.get("error") or {}).get("message", "")
                       for e in s.errors())]
        eq(len(cut), 20, "streams that got the shutting-down error event")
        rows = _rows_after_replay(gw, ids)
        eq(len(rows), 20, "records of the 20 cut streams (database + replayed spill)")
        eq(sorted({r["status"] for r in rows}), [502], "statuses")
        ensure(all("shutting down" in r["error"] for r in rows), "errors: %s" % short({r["error"] for r in rows}))

    @R.check("keepword.shutdown.second_signal_full_queue")
    def _():
        # Records wait in memory up to flush_interval (4s) and the queue is
        # full: a second SIGTERM right after the streams ended must still
        # put every one in the database or the spill folder.
        gw = R.gateway("kw-sig2q", {"server": {"shutdown_timeout": "20s"},
                                    "logsink": {"queue_size": 8, "batch_size": 4096,
                                                "flush_interval": "4s"},
                                    "openai_clients": [client("a", mA, ["m-q"])]})
        mA.always(lambda rec: Sse(chat_chunks("m-q", ["a", "b", "c", "d"]), interval=0.25))
        gw.ensure()
        ids, streams, results, ts = _start_streams(gw, "m-q", 30, "sig2q")
        gw.signal(signal.SIGTERM)
        for t in ts:
            t.join(10)
        gw.signal(signal.SIGTERM)
        rc = _wait_exit(gw, 15)
        eq(rc, 0, "exit code after a second SIGTERM")
        rows = _rows_after_replay(gw, ids)
        eq(len(rows), 30, "records of 30 streams (database + replayed spill)")


# ====================================================================== send_timeout

def _stalled_caller(port, model, req_id, rcvbuf=4096):
    """A streaming request whose caller reads the status line and headers,
    then never reads again, with a small receive window."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(15)
    s.connect(("127.0.0.1", port))
    body = ('{"model":"%s","stream":true,"messages":[{"role":"user","content":"hi"}]}' % model).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nX-Request-Id: " + req_id.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            raise CheckFail("connection closed before the headers")
        head += b
    return s, head


def _big_stream(model):
    """A long stream of 32 KiB events: enough to fill every socket buffer
    between gptapi and a caller that stopped reading."""
    piece = "x" * 32768
    return Sse(chat_chunks(model, [piece] * 600), interval=0.01)


def _active_streams(gw):
    r = http_request(gw.port, "GET", "/metrics", timeout=5)
    for line in r.body.decode().splitlines():
        if line.startswith("gptapi_active_streams "):
            return float(line.split()[1])
    return None


def send_timeout_group(R):
    mA = R.mock("A")

    @R.check("keepword.send_timeout.stalled_caller_499")
    def _():
        gw = R.gateway("kw-send", {"server": {"send_timeout": "2s"},
                                   "openai_clients": [client("a", mA, ["m-big"])]})
        mA.always(lambda rec: _big_stream("m-big"))
        gw.ensure()
        req_id = rid("stall")
        s, head = _stalled_caller(gw.port, "m-big", req_id)
        try:
            ensure(b" 200 " in head.split(b"\r\n")[0], "status line %r" % head[:40])
            row = gw.row(req_id, timeout=20)
            eq(row["status"], 499, "record status of a caller that stopped reading")
            ensure("send_timeout" in row["error"], "record error %r" % row["error"])
            up = mA.last("/chat/completions")
            wait_until(lambda: up.write_failed_at or up.finished_at, 5, 0.05,
                       "the upstream to see its connection closed")
            ensure(up.write_failed_at is not None, "the upstream finished its answer instead of being cut")
            eq(_active_streams(gw), 0.0, "gptapi_active_streams")
        finally:
            s.close()

    @R.check("keepword.send_timeout.stalled_caller_at_shutdown")
    def _():
        gw = R.gateway("kw-send-shut", {"server": {"send_timeout": "60s", "shutdown_timeout": "2s"},
                                        "openai_clients": [client("a", mA, ["m-big"])]})
        mA.always(lambda rec: _big_stream("m-big"))
        gw.ensure()
        req_id = rid("stallshut")
        s, _ = _stalled_caller(gw.port, "m-big", req_id)
        try:
            time.sleep(1)
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            rc = _wait_exit(gw, 20)
            took = time.monotonic() - t0
        finally:
            s.close()
        eq(rc, 0, "exit code")
        ensure(took < 8, "exit took %.1fs after SIGTERM with shutdown_timeout 2s" % took)
        rows = gw.rows("request_id = ?", (req_id,))
        ensure(rows, "no record of the stalled stream; log: %s" % gw.log_tail(3))
        eq(rows[0]["status"], 502, "record status")
        ensure("shutting down" in rows[0]["error"], "record error %r" % rows[0]["error"])


# ====================================================================== first_byte_timeout

def first_byte_group(R):
    mT, mB = R.mock("T"), R.mock("B")
    gw = R.gateway("kw-firstbyte", {
        "check_config": {"first_byte_timeout": "2s", "stream_idle_timeout": "10s",
                         "request_timeout": "30s"},
        "openai_clients": [client("trickle", mT, ["m-fb"], priority=1),
                           client("backup", mB, ["m-fb"], priority=0)]})

    @R.check("keepword.first_byte.trickled_headers_plain")
    def _():
        mT.always(Trickle(chat_answer("m-fb", "late"), gap=0.5))
        gw.ensure()  # its start is not part of the wait measured
        t0 = time.monotonic()
        r = gw.chat("m-fb", timeout=25)
        took = time.monotonic() - t0
        expect_status(r, 200)
        eq(r.header("X-Gptapi-Upstream"), "backup", "X-Gptapi-Upstream")
        ensure(took < 5, "failed over after %.1fs; first_byte_timeout is 2s" % took)

    @R.check("keepword.first_byte.trickled_headers_stream")
    def _():
        mT.always(Trickle(chat_answer("m-fb", "late"), gap=0.5))
        t0 = time.monotonic()
        s = gw.stream_chat("m-fb", timeout=25)
        took = time.monotonic() - t0
        s.read_all()
        eq(s.status, 200, "status")
        eq(s.header("X-Gptapi-Upstream"), "backup", "X-Gptapi-Upstream")
        ensure(took < 5, "failed over after %.1fs; first_byte_timeout is 2s" % took)

    @R.check("keepword.first_byte.ping_comments_stream")
    def _():
        pings = [": ping\n\n"] * 100
        mT.always(Sse(pings + chat_chunks("m-fb", ["late"]), interval=0.5))
        t0 = time.monotonic()
        s = gw.stream_chat("m-fb", timeout=25)
        took = time.monotonic() - t0
        s.read_all()
        eq(s.status, 200, "status")
        eq(s.header("X-Gptapi-Upstream"), "backup", "X-Gptapi-Upstream")
        ensure(took < 5, "failed over after %.1fs; first_byte_timeout is 2s" % took)


# ====================================================================== pool

def pool_group(R):
    mP = R.mock("P")
    gw = R.gateway("kw-pool", {
        "check_config": {"max_conn_wait": "5s", "failure_threshold": 1, "cooldown": "30s"},
        "openai_clients": [client("p", mP, ["m-pool"], max_conns=2)]})

    @R.check("keepword.pool.exhaustion_waits_no_cooldown")
    def _():
        mP.always(lambda rec: Sse(chat_chunks("m-pool", ["a", "b", "c", "d"]), interval=0.2))
        gw.ensure()
        out = [None] * 6

        def one(i):
            try:
                s = gw.stream_chat("m-pool", timeout=20)
                s.read_all()
                out[i] = (s.status, s.content(), s.done)
            except Exception as e:
                out[i] = e
        ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(25)
        bad = [o for o in out if o != (200, "abcd", True)]
        ensure(not bad, "%d of 6 streams over max_conns 2 failed: %s" % (len(bad), short(bad[:2])))
        r = gw.get("/metrics")
        ensure('gptapi_upstream_cooldown{upstream="p"} 0' in r.body.decode(),
               "the upstream went into cooldown for pool overflow")


# ====================================================================== edges

KW_KEY = "sk-gateway-own-key"


def edges_group(R):
    mG, mX, mP, mC = R.mock("G"), R.mock("X"), R.mock("P"), R.mock("C")
    gw = R.gateway("kw-edges", {
        "auth": {"keys": [KW_KEY]},
        "openai_clients": [client("gz", mG, ["m-gz"]),
                           client("brk", mX, ["m-brk"]),
                           client("pass", mP, ["m-pass"], key_mode="passthrough"),
                           client("nokey", mP, ["m-nokey"]),
                           client("cfgkey", mC, ["m-cfg"], api_key="sk-upstream-c")]})
    auth = {"Authorization": "Bearer " + KW_KEY}

    @R.check("keepword.edges.gzip_answer_decoded")
    def _():
        raw = json.dumps(chat_answer("m-gz", "squeezed")).encode()
        mG.always(Json(gzip.compress(raw), headers={"Content-Encoding": "gzip"}))
        req_id = rid("gz")
        r = gw.chat("m-gz", headers=dict(auth, **{"X-Request-Id": req_id}))
        expect_status(r, 200)
        ensure(not r.header("Content-Encoding"), "Content-Encoding %r relayed" % r.header("Content-Encoding"))
        ensure(isinstance(r.json, dict) and r.json["choices"][0]["message"]["content"] == "squeezed",
               "caller got %s" % short(r.body))
        eq(mG.last("/chat/completions").headers.get("accept-encoding"), "identity", "Accept-Encoding upstream")
        row = gw.row(req_id)
        ensure("squeezed" in (row["response_body"] or ""), "record response_body %s" % short(row["response_body"]))

    @R.check("keepword.edges.stream_break_names_no_address")
    def _():
        mX.always(Sse(chat_chunks("m-brk", ["a", "b", "c"]), break_after=2, reset=True))
        s = gw.stream_chat("m-brk", headers=auth)
        s.read_all()
        errs = s.errors()
        ensure(errs, "no error event after the break: %s" % short(s.raw))
        ensure("127.0.0.1" not in s.raw.decode("utf-8", "replace"),
               "the error event shows an address: %s" % short(errs))

    @R.check("keepword.edges.gateway_key_never_upstream")
    def _():
        for model in ("m-pass", "m-nokey"):
            expect_status(gw.chat(model, headers=auth), 200)
            got = mP.last("/chat/completions").headers.get("authorization")
            ensure(got is None, "%s: upstream got Authorization %r" % (model, got))
        expect_status(gw.chat("m-cfg", headers=auth), 200)
        eq(mC.last("/chat/completions").headers.get("authorization"), "Bearer sk-upstream-c",
           "a client's own api_key")
        mP.reset()
        expect_status(gw.get("/v1/models", headers=auth), 200)
        for c in mP.calls("/models"):
            ensure(c.headers.get("authorization") is None, "/models got Authorization %r" % c.headers.get("authorization"))

    @R.check("keepword.edges.check_warns_gateway_key")
    def _():
        p = subprocess.run([R.binary, "-check", "-config", gw.config_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode()
        eq(p.returncode, 0, "-check exit code")
        ensure("openai_clients[2]" in out and "openai_clients[3]" in out and "openai_clients[4]" not in out,
               "-check warnings: %s" % short(out))

    @R.check("keepword.edges.cl_te_refused_and_closed")
    def _():
        gw.ensure()
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + KW_KEY.encode() + b"\r\n"
                      b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    raise CheckFail("the connection stayed open: %s" % short(data))
                if not b:
                    break
                data += b
        finally:
            s.close()
        ensure(data.startswith(b"HTTP/1.1 400"), "answer %s" % short(data))
        eq(data.count(b"HTTP/1.1 "), 1, "responses on the connection (a smuggled GET was served)")


# ====================================================================== models

def models_group(R):
    mT, mF = R.mock("T"), R.mock("F")
    gw = R.gateway("kw-models", {
        "check_config": {"models_cache_ttl": "60s"},
        "openai_clients": [client("tenant", mT, ["m-t"], key_mode="passthrough"),
                           client("flaky", mF, ["m-f"], api_key="sk-flaky")]})

    def per_key(rec):
        key = rec.headers.get("authorization", "")
        ids = {"Bearer sk-tenant-a": ["shared", "secret-finetune-of-tenant-a"],
               "Bearer sk-tenant-b": ["shared", "model-b"]}.get(key, [])
        return Json({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    def ids(r):
        expect_status(r, 200)
        return sorted(m["id"] for m in r.json["data"])

    @R.check("keepword.models.per_tenant")
    def _():
        mT.models_action = per_key
        mF.models = ["flaky-model"]
        a = ids(gw.get("/v1/models", headers={"Authorization": "Bearer sk-tenant-a"}))
        b = ids(gw.get("/v1/models", headers={"Authorization": "Bearer sk-tenant-b"}))
        ensure("secret-finetune-of-tenant-a" in a, "tenant a's list: %s" % a)
        ensure("secret-finetune-of-tenant-a" not in b, "tenant b sees tenant a's model: %s" % b)
        ensure("model-b" in b, "tenant b's list: %s" % b)

    @R.check("keepword.models.failure_not_cached")
    def _():
        mT.models_action = per_key
        mF.models = ["flaky-model"]
        calls = {"n": 0}

        def flaky(rec):
            calls["n"] += 1
            if calls["n"] == 1:
                return Json({"error": {"message": "down"}}, 503)
            return Json({"object": "list", "data": [{"id": "flaky-model", "object": "model"}]})
        mF.models_action = flaky
        h = {"Authorization": "Bearer sk-tenant-c"}
        first = ids(gw.get("/v1/models", headers=h))
        ensure("flaky-model" not in first, "first list %s" % first)
        second = ids(gw.get("/v1/models", headers=h))
        ensure("flaky-model" in second, "a failed fetch was cached: %s" % second)


# ====================================================================== non-stream cancel

def _plain_caller(port, model, req_id, stream=False):
    """A chat request (non-stream unless stream) on a raw socket, left open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = ('{"model":"%s","stream":%s,"messages":[{"role":"user","content":"hi"}]}'
            % (model, "true" if stream else "false")).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nX-Request-Id: " + req_id.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def cancel_group(R):
    mH = R.mock("H")

    def leave_while_waiting(gw, action, req_id, stream):
        """The caller leaves 1s after its request reached the upstream,
        which would answer (or send its first event) after 8s: the upstream
        must see its connection closed within 3s; returns the record."""
        gw.ensure()
        mH.reset()
        mH.always(action)
        s = _plain_caller(gw.port, "m-hold", req_id, stream=stream)
        wait_until(lambda: mH.calls("/chat/completions"), 5, 0.05, "the request to reach the upstream")
        time.sleep(1)
        s.close()
        up = mH.last("/chat/completions")
        wait_until(lambda: up.peer_closed_at or up.finished_at or up.sent, 10, 0.05,
                   "the upstream to see its connection closed or to answer")
        ensure(up.peer_closed_at is not None,
               "the upstream went on answering: gptapi did not cancel it when the caller left")
        ensure(up.peer_closed_at - up.t < 3, "cancelled %.1fs after the request" % (up.peer_closed_at - up.t))
        return gw.row(req_id, timeout=10)

    @R.check("keepword.cancel.plain_caller_leaves_499")
    def _():
        gw = R.gateway("kw-leave", {"openai_clients": [client("h", mH, ["m-hold"])]})
        row = leave_while_waiting(gw, Hold(chat_answer("m-hold", "late"), 8), rid("leave"), False)
        eq(row["status"], 499, "record status of a non-stream caller that left")
        ensure(row["latency_ms"] < 3000, "record latency %s ms" % row["latency_ms"])

    @R.check("keepword.cancel.stream_caller_leaves_before_first_event_499")
    def _():
        # Headers at once, the first event after 8s (a long prefill).
        # first_byte_timeout is longer than the prefill: only noticing the
        # caller can end the wait early.
        gw = R.gateway("kw-leave-stream", {"check_config": {"first_byte_timeout": "20s", "request_timeout": "30s"},
                                           "openai_clients": [client("h", mH, ["m-hold"])]})
        row = leave_while_waiting(gw, Sse(chat_chunks("m-hold", ["late"]), head_delay=8), rid("leave-stream"), True)
        eq(row["status"], 499, "record status of a stream caller that left before the first event")
        eq(row["stream"], 1, "record stream flag")

    @R.check("keepword.cancel.plain_cut_at_shutdown_502")
    def _():
        gw = R.gateway("kw-plainshut", {"server": {"shutdown_timeout": "2s"},
                                        "openai_clients": [client("h", mH, ["m-hold"])]})
        gw.ensure()
        mH.reset()
        mH.always(Hold(chat_answer("m-hold", "late"), 20))
        req_id = rid("plainshut")
        s = _plain_caller(gw.port, "m-hold", req_id)
        try:
            wait_until(lambda: mH.calls("/chat/completions"), 5, 0.05, "the request to reach the upstream")
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            rc = _wait_exit(gw, 20)
            took = time.monotonic() - t0
            s.settimeout(2)
            try:
                got = s.recv(65536)
            except OSError:
                got = b""
        finally:
            s.close()
        eq(rc, 0, "exit code")
        ensure(took < 8, "exit took %.1fs after SIGTERM with shutdown_timeout 2s" % took)
        ensure(got.startswith(b"HTTP/1.1 502"), "the caller got %s" % short(got))
        log = _gw_log(gw)
        ensure("every record written" in log, "no 'every record written' line: %s" % gw.log_tail(4))
        up = mH.last("/chat/completions")
        ensure(up.peer_closed_at is not None, "the upstream connection stayed open after the cut")
        rows = _rows_after_replay(gw, [req_id])
        ensure(rows, "no record of the cut request; log: %s" % gw.log_tail(3))
        eq(rows[0]["status"], 502, "record status")
        ensure("shutting down" in rows[0]["error"], "record error %r" % rows[0]["error"])


# ====================================================================== reload

def reload_group(R):
    mR = R.mock("R")

    @R.check("keepword.reload.client_headers_apply")
    def _():
        # A reload that keeps a client's address and key keeps its
        # connections; its new headers still go out from then on.
        gw = R.gateway("kw-reload-headers", {"openai_clients": [
            client("r", mR, ["m-r"], api_key="k1", headers={"X-Team": "a"})]})
        gw.ensure()
        mR.reset()
        expect_status(gw.chat("m-r"), 200)
        sent = mR.last("/chat/completions").headers
        eq((sent.get("x-team"), sent.get("authorization")), ("a", "Bearer k1"), "headers before the reload")
        cfg = copy.deepcopy(gw.cfg)
        cfg["openai_clients"][0]["headers"] = {"X-Team": "b"}
        gw.write_config(cfg)

        def team_b():
            expect_status(gw.chat("m-r"), 200)
            return mR.last("/chat/completions").headers.get("x-team") == "b"
        wait_until(team_b, 5, 0.1, "X-Team b after the reload")
        for _ in range(5):
            expect_status(gw.chat("m-r"), 200)
            eq(mR.last("/chat/completions").headers.get("x-team"), "b", "X-Team after the reload")

    @R.check("keepword.reload.level_store_bodies_live_listen_waits")
    def _():
        from e2e_mock import free_port
        gw = R.gateway("kw-reload", {"openai_clients": [client("r", mR, ["m-r"])]})
        gw.ensure()
        mR.reset()
        before = rid("rl-before")
        expect_status(gw.chat("m-r", headers=hdr(before)), 200)
        row = gw.row(before)
        ensure(row["request_body"], "store_bodies true: no request_body stored")
        ensure(before in _gw_log(gw), "no access log line at level info for %s" % before)

        cfg = copy.deepcopy(gw.cfg)
        cfg["log"]["level"] = "error"
        cfg["logsink"]["store_bodies"] = False
        cfg["logsink"]["flush_interval"] = "60ms"
        cfg["server"]["listen"] = "127.0.0.1:%d" % free_port()
        gw.write_config(cfg)
        wait_until(lambda: "wait for a restart" in _gw_log(gw) or "waits for a restart" in _gw_log(gw),
                   5, 0.05, "the reload to be applied")
        log = _gw_log(gw)
        ensure("server.listen" in log, "the listen change is not logged: %s" % gw.log_tail(4))
        ensure("logsink.flush_interval" in log, "logsink.flush_interval not named as waiting: %s" % gw.log_tail(4))
        ensure("logsink.store_bodies" not in log.split("wait for a restart")[-1],
               "store_bodies named as waiting for a restart")

        after = rid("rl-after")
        expect_status(gw.chat("m-r", headers=hdr(after)), 200)
        row = gw.row(after)
        ensure(row["request_body"] is None and row["response_body"] is None,
               "store_bodies false after reload: bodies stored %s" % short(row["request_body"]))
        time.sleep(0.3)
        ensure(after not in _gw_log(gw), "log.level error after reload, but the access line was logged")
