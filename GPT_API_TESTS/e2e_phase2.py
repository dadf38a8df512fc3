"""Phase 2: request records in the SQLite file."""

import datetime
import http.client
import json
import os
import re
import secrets
import signal
import sqlite3
import threading
import time

from e2e_common import (expect_error, expect_status, expect_upstream, files_under,
                        hdr, metric_values, parallel, rid)
from e2e_infra import (CheckFail, Stream, client, ensure, eq, http_request,
                       raw_exchange, short)
from e2e_mock import (Fail, Json, Sse, chat_answer, chat_chunks, USAGE)
from e2e_xxh3 import xxh3_hex

KEY1 = "sk-e2e-" + secrets.token_hex(12)
KEY2 = "sk-e2e-" + secrets.token_hex(12)

COLUMNS = ["id", "request_id", "ts_ms", "client_ip", "key_hash", "endpoint", "model",
           "served_model", "upstream", "tried", "stream", "status", "error",
           "prompt_tokens", "completion_tokens", "total_tokens", "has_tools",
           "tool_calls", "multimodal", "ttft_ms", "latency_ms", "request_body",
           "response_body", "truncated"]


def groups():
    return [records_group, store_bodies_off_group, burst_group, spill_group,
            shutdown_group, rotation_group]


def now_ms():
    return int(time.time() * 1000)


def jcol(row, col):
    v = row.get(col)
    if v is None:
        raise CheckFail("%s is NULL" % col)
    if isinstance(v, bytes):
        v = v.decode()
    try:
        return json.loads(v)
    except ValueError:
        raise CheckFail("%s is not JSON: %s" % (col, short(v)))


def common_row(row, req_id, endpoint, model, t0, t1, stream=0, status=200, key=KEY1,
               client_ip="127.0.0.1"):
    eq(row["request_id"], req_id, "request_id")
    eq(row["endpoint"], endpoint, "endpoint")
    eq(row["model"], model, "model")
    eq(row["stream"], stream, "stream")
    eq(row["status"], status, "status")
    eq(row["client_ip"], client_ip, "client_ip")
    kh = row["key_hash"]
    ensure(isinstance(kh, str) and re.fullmatch(r"[0-9a-f]{16}", kh),
           "key_hash is not 16 lowercase hex digits: %r" % kh)
    eq(kh, xxh3_hex(key), "key_hash (xxh3-64 of the bearer key)")
    ensure(isinstance(row["ts_ms"], int) and t0 - 1500 <= row["ts_ms"] <= t1 + 1500,
           "ts_ms %r not within the request's time [%d, %d]" % (row["ts_ms"], t0, t1))
    for col in ("ttft_ms", "latency_ms"):
        ensure(isinstance(row[col], (int, float)) and row[col] >= 0,
               "%s = %r" % (col, row[col]))


def ok_row(row, upstream, served_model, tried):
    eq(row["upstream"], upstream, "upstream")
    eq(row["served_model"], served_model, "served_model")
    eq(jcol(row, "tried"), tried, "tried")
    eq(row["error"] or "", "", "error")


# ====================================================================== records

def records_group(R):
    mA = R.mock("A", ["m-rec"])
    mP = R.mock("P")
    mF1 = R.mock("F1")
    mF2 = R.mock("F2")
    mFB1 = R.mock("FB1")
    mFB2 = R.mock("FB2")
    mE = R.mock("E")
    mBRK = R.mock("BRK")
    gw = R.gateway("records", {
        "server": {"trusted_proxies": ["127.0.0.1/32"], "max_body_bytes": 65536},
        "auth": {"keys": [KEY1, KEY2]},
        "logsink": {"max_body_log_bytes": 8192},
        "check_config": {"first_byte_timeout": "1s", "stream_idle_timeout": "1s",
                         "request_timeout": "4s"},
        "openai_clients": [
            client("rA", mA, ["m-rec"]),
            client("rP", mP, ["m-recp"], special_prefix="PFX: "),
            client("rfa", mF1, ["m-recfo"], priority=1),
            client("rfb", mF2, ["m-recfo"], priority=0),
            client("rfb1", mFB1, ["m-recfb1"], fallback="m-recfb2"),
            client("rfb2", mFB2, ["m-recfb2"]),
            client("r400", mE, ["m-rec400"]),
            client("rBRK", mBRK, ["m-recbrk"]),
        ]})
    ck = R.check

    def send(path, body, key=KEY1, **h):
        req_id = rid("rec")
        t0 = now_ms()
        r = gw.post(path, body, hdr(req_id, key, **h))
        return req_id, r, t0, now_ms()

    @ck("phase2.records.schema")
    def _():
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        gw.row(req_id)
        db = sqlite3.connect("file:%s?mode=ro" % gw.db_path, uri=True, timeout=5)
        try:
            cols = [c[1] for c in db.execute("PRAGMA table_info(requests)")]
            missing = [c for c in COLUMNS if c not in cols]
            ensure(not missing, "requests table lacks %s (has %s)" % (missing, cols))
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            eq(meta.get("month"), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m"),
               "meta month")
            idx = " ".join(r[0] or "" for r in db.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='requests'"))
            for col in ("ts_ms", "model", "upstream", "status"):
                ensure(re.search(r"\(\s*%s\b" % col, idx), "no index on %s: %s" % (col, idx))
        finally:
            db.close()

    @ck("phase2.records.chat_json")
    def _():
        body = {"model": "m-rec", "messages": [{"role": "user", "content": "  padded  "}],
                "temperature": 0.5}
        req_id, r, t0, t1 = send("/v1/chat/completions", body)
        expect_status(r, 200)
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-rec", t0, t1)
        ok_row(row, "rA", "m-rec", ["rA/m-rec"])
        eq((row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
           (11, 7, 18), "tokens")
        eq(jcol(row, "request_body"), mA.last().json, "request_body (as sent upstream)")
        eq(jcol(row, "request_body")["messages"][0]["content"], "padded", "preprocessed content")
        eq(jcol(row, "response_body"), r.json, "response_body (as given to the caller)")
        eq((row["has_tools"], row["multimodal"], row["truncated"]), (0, 0, 0),
           "has_tools, multimodal, truncated")

    @ck("phase2.records.chat_stream_assembled")
    def _():
        req_id = rid("recs")
        t0 = now_ms()
        s = gw.stream_chat("m-recp", headers=hdr(req_id, KEY1)).read_all()
        t1 = now_ms()
        expect_status(s, 200)
        eq(s.content(), "PFX: Hello from P", "caller content")
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-recp", t0, t1, stream=1)
        ok_row(row, "rP", "m-recp", ["rP/m-recp"])
        eq((row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
           (11, 7, 18), "tokens (from the hidden usage chunk)")
        eq(jcol(row, "request_body"), mP.last().json, "request_body (as sent upstream)")
        resp = jcol(row, "response_body")
        eq(resp.get("object"), "chat.completion", "response_body.object")
        ch = resp["choices"][0]
        eq(ch["message"]["content"], s.content(), "assembled content")
        eq(ch.get("finish_reason"), "stop", "assembled finish_reason")
        eq(resp.get("usage"), USAGE, "assembled usage")

    @ck("phase2.records.completions_json")
    def _():
        req_id, r, t0, t1 = send("/v1/completions", {"model": "m-rec", "prompt": "Once"})
        expect_status(r, 200)
        row = gw.row(req_id)
        common_row(row, req_id, "completions", "m-rec", t0, t1)
        ok_row(row, "rA", "m-rec", ["rA/m-rec"])
        eq(row["total_tokens"], 18, "total_tokens")
        eq(jcol(row, "response_body"), r.json, "response_body")

    @ck("phase2.records.completions_stream_assembled")
    def _():
        req_id = rid("recs")
        t0 = now_ms()
        s = gw.stream("/v1/completions", {"model": "m-rec", "prompt": "p"},
                      hdr(req_id, KEY1)).read_all()
        t1 = now_ms()
        expect_status(s, 200)
        row = gw.row(req_id)
        common_row(row, req_id, "completions", "m-rec", t0, t1, stream=1)
        resp = jcol(row, "response_body")
        eq(resp.get("object"), "text_completion", "response_body.object")
        eq(resp["choices"][0].get("text"), "Hello from A", "assembled text")
        eq(resp.get("usage"), USAGE, "assembled usage")
        eq(row["completion_tokens"], 7, "completion_tokens")

    @ck("phase2.records.embeddings")
    def _():
        req_id, r, t0, t1 = send("/v1/embeddings", {"model": "m-rec", "input": ["a", "b"]})
        expect_status(r, 200)
        row = gw.row(req_id)
        common_row(row, req_id, "embeddings", "m-rec", t0, t1)
        ok_row(row, "rA", "m-rec", ["rA/m-rec"])
        eq((row["prompt_tokens"], row["total_tokens"]), (5, 5), "prompt/total tokens")
        eq(jcol(row, "request_body"), mA.last().json, "request_body")

    @ck("phase2.records.rerank")
    def _():
        for path in ("/v1/rerank", "/rerank"):
            req_id, r, t0, t1 = send(path, {"model": "m-rec", "query": "q",
                                            "documents": ["d1", "d2"]})
            expect_status(r, 200)
            row = gw.row(req_id)
            common_row(row, req_id, "rerank", "m-rec", t0, t1)
            ok_row(row, "rA", "m-rec", ["rA/m-rec"])
            eq(row["total_tokens"], 9, "total_tokens (%s)" % path)

    @ck("phase2.records.timings")
    def _():
        mA.always(Json(chat_answer("m-rec", "slow"), delay=0.3))
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        row = gw.row(req_id)
        ensure(250 <= row["ttft_ms"] <= 2000, "non-stream ttft_ms %r for a 300ms upstream" % row["ttft_ms"])
        ensure(row["latency_ms"] >= row["ttft_ms"], "latency_ms %r < ttft_ms %r" %
               (row["latency_ms"], row["ttft_ms"]))
        chunks = chat_chunks("m-rec", ["a", "b"])
        mA.always(Sse(chunks, pauses={1: 0.4, 3: 0.4}))
        req_id = rid("tim")
        s = gw.stream_chat("m-rec", headers=hdr(req_id, KEY1)).read_all()
        expect_status(s, 200)
        row = gw.row(req_id)
        ensure(350 <= row["ttft_ms"] < 750,
               "stream ttft_ms %r: the first content chunk came 400ms after the role chunk" % row["ttft_ms"])
        ensure(row["latency_ms"] >= 750, "stream latency_ms %r for an 800ms stream" % row["latency_ms"])

    @ck("phase2.records.key_hash_per_key")
    def _():
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]}, key=KEY2)
        expect_status(r, 200)
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-rec", t0, t1, key=KEY2)

    @ck("phase2.records.client_ip_from_trusted_proxy")
    def _():
        req_id, r, t0, t1 = send("/v1/embeddings", {"model": "m-rec", "input": "x"},
                                 X_Forwarded_For="203.0.113.7")
        expect_status(r, 200)
        row = gw.row(req_id)
        eq(row["client_ip"], "203.0.113.7", "client_ip")

    @ck("phase2.records.failover")
    def _():
        mF1.always(Fail(500))
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "m-recfo", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        expect_upstream(r, "rfb")
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-recfo", t0, t1)
        ok_row(row, "rfb", "m-recfo", ["rfa/m-recfo", "rfb/m-recfo"])

    @ck("phase2.records.fallback")
    def _():
        mFB1.always(Fail(503))
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "m-recfb1", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        expect_upstream(r, "rfb2")
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-recfb1", t0, t1)
        ok_row(row, "rfb2", "m-recfb2", ["rfb1/m-recfb1", "rfb2/m-recfb2"])

    @ck("phase2.records.all_failed")
    def _():
        mF1.always(Fail(500))
        mF2.always(Fail(502))
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "m-recfo", "messages": [
            {"role": "user", "content": "hi"}]})
        e = expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-recfo", t0, t1, status=502)
        eq(row["upstream"], "", "upstream")
        eq(row["error"], e["message"], "error (same text as the answer)")
        eq(jcol(row, "tried"), ["rfa/m-recfo", "rfb/m-recfo"], "tried")

    @ck("phase2.records.unknown_model_404")
    def _():
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "no-such-model", "messages": [
            {"role": "user", "content": "hi"}]})
        e = expect_error(r, 404, "invalid_request_error", "model_not_found")
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "no-such-model", t0, t1, status=404)
        eq(row["upstream"], "", "upstream")
        eq(row["error"], e["message"], "error")

    @ck("phase2.records.upstream_400")
    def _():
        mE.always(Json({"error": {"message": "bad temperature", "type": "BadRequestError"}}, 400))
        req_id, r, t0, t1 = send("/v1/chat/completions", {"model": "m-rec400", "messages": [
            {"role": "user", "content": "hi"}], "temperature": 7})
        expect_status(r, 400)
        row = gw.row(req_id)
        common_row(row, req_id, "chat", "m-rec400", t0, t1, status=400)
        eq(row["upstream"], "r400", "upstream")
        eq(jcol(row, "response_body"), json.loads(mE.last().answer), "response_body")

    def stream_row(action, reader, mock=mA, model="m-rec"):
        mock.always(action)
        req_id = rid("recs")
        t0 = now_ms()
        s = gw.stream_chat(model, headers=hdr(req_id, KEY1), timeout=10)
        expect_status(s, 200)
        reader(s)
        row = gw.row(req_id, timeout=8)
        common_row(row, req_id, "chat", model, t0, now_ms(), stream=1,
                   status=row["status"])
        return s, row

    @ck("phase2.records.stream_break_502_partial_kept")
    def _():
        s, row = stream_row(lambda rec: Sse(chat_chunks("m-recbrk", ["Hello", " from", " there"]),
                                            break_after=3), lambda s: s.read_all(),
                            mock=mBRK, model="m-recbrk")
        eq(row["status"], 502, "status")
        errs = s.errors()
        ensure(errs, "no error event")
        eq(row["error"], errs[0]["error"]["message"], "error (same text as the event)")
        eq(jcol(row, "response_body")["choices"][0]["message"]["content"], "Hello from",
           "partial content kept")

    @ck("phase2.records.stream_idle_504")
    def _():
        s, row = stream_row(lambda rec: Sse(chat_chunks("m-rec", ["Hello", " from"]),
                                            pauses={3: 5}), lambda s: s.read_all())
        eq(row["status"], 504, "status")
        ensure(row["error"], "error empty")
        eq(jcol(row, "response_body")["choices"][0]["message"]["content"], "Hello from",
           "partial content kept")

    @ck("phase2.records.caller_disconnect_499")
    def _():
        def leave(s):
            for _ in range(3):
                s.next_event()
            s.close()
        s, row = stream_row(lambda rec: Sse(chat_chunks("m-rec", ["tok"] * 100), interval=0.05),
                            leave)
        eq(row["status"], 499, "status")

    @ck("phase2.records.tool_calls_in_stream")
    def _():
        base = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1,
                "model": "m-rec"}

        def tc(idx, **fn):
            d = {"index": idx, "function": fn}
            if "name" in fn:
                d.update({"id": "call_%d" % idx, "type": "function"})
            return dict(base, choices=[{"index": 0, "delta": {"tool_calls": [d]},
                                        "finish_reason": None}])
        chunks = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant",
                                                              "content": None},
                                       "finish_reason": None}]),
                  tc(0, name="get_weather", arguments=""),
                  tc(0, arguments="{\"city\":"),
                  tc(0, arguments="\"Paris\"}"),
                  tc(1, name="get_time", arguments="{\"tz\":"),
                  tc(1, arguments="\"CET\"}"),
                  dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])]
        s, row = stream_row(Sse(chunks, usage=dict(USAGE)), lambda s: s.read_all())
        eq(row["status"], 200, "status")
        eq(row["has_tools"], 1, "has_tools")
        eq(jcol(row, "tool_calls"), ["get_weather", "get_time"], "tool_calls")
        ch = jcol(row, "response_body")["choices"][0]
        calls = ch["message"].get("tool_calls") or []
        eq([c["function"]["name"] for c in calls], ["get_weather", "get_time"], "assembled names")
        eq([c["function"]["arguments"] for c in calls],
           ["{\"city\":\"Paris\"}", "{\"tz\":\"CET\"}"], "assembled arguments")
        eq(ch.get("finish_reason"), "tool_calls", "finish_reason")

    @ck("phase2.records.tool_calls_in_json_answer")
    def _():
        ans = chat_answer("m-rec", None)
        ans["choices"][0]["message"]["tool_calls"] = [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]
        ans["choices"][0]["finish_reason"] = "tool_calls"
        mA.always(Json(ans))
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        row = gw.row(req_id)
        eq(row["has_tools"], 1, "has_tools")
        eq(jcol(row, "tool_calls"), ["search"], "tool_calls")

    @ck("phase2.records.tools_offered")
    def _():
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {}}}}]
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}], "tools": tools})
        expect_status(r, 200)
        eq(mA.last().json.get("tools"), tools, "tools passed upstream")
        eq(gw.row(req_id)["has_tools"], 1, "has_tools with tools offered")
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}], "functions": [{"name": "legacy", "parameters": {}}]})
        expect_status(r, 200)
        eq(gw.row(req_id)["has_tools"], 1, "has_tools with functions offered")

    @ck("phase2.records.multimodal")
    def _():
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
        expect_status(r, 200)
        eq(gw.row(req_id)["multimodal"], 1, "multimodal")

    @ck("phase2.records.truncated_long_body")
    def _():
        mA.always(Json(chat_answer("m-rec", "z" * 20000)))
        req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]})
        expect_status(r, 200)
        ensure(len(r.body) > 20000, "caller got a cut answer (%d bytes)" % len(r.body))
        row = gw.row(req_id)
        eq(row["truncated"], 1, "truncated")
        rb = row["response_body"]
        n = len(rb.encode() if isinstance(rb, str) else rb or b"")
        ensure(0 < n <= 8192, "response_body is %d bytes with max_body_log_bytes 8192" % n)

    def no_row(status, path, body, key=KEY1):
        req_id = rid("norow")
        h = hdr(req_id, key)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" % path
        head += "".join("%s: %s\r\n" % kv for kv in h.items())
        head += "Content-Length: %d\r\n\r\n" % len(data)
        gw.ensure()
        r = raw_exchange(gw.port, head.encode() + data)
        eq(r.status, status, "status")
        # a later good request's row proves the writer got past this one
        ok_id, r2, _, _ = send("/v1/embeddings", {"model": "m-rec", "input": "x"})
        expect_status(r2, 200)
        gw.row(ok_id)
        time.sleep(0.2)
        rows = gw.rows("request_id = ?", (req_id,))
        ensure(not rows, "a %d request produced a record: %s" % (status, short(rows)))

    @ck("phase2.records.no_row_for_400")
    def _():
        no_row(400, "/v1/chat/completions", b"{oops")
        no_row(400, "/v1/chat/completions", {"model": "m-rec", "messages": []})

    @ck("phase2.records.no_row_for_401")
    def _():
        no_row(401, "/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]}, key="sk-wrong-key")
        no_row(401, "/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "hi"}]}, key=None)

    @ck("phase2.records.no_row_for_413")
    def _():
        no_row(413, "/v1/chat/completions", {"model": "m-rec", "messages": [
            {"role": "user", "content": "y" * 100000}]})

    @ck("phase2.records.no_raw_key_in_db_files")
    def _():
        for key in (KEY1, KEY2):
            req_id, r, _, _ = send("/v1/chat/completions", {"model": "m-rec", "messages": [
                {"role": "user", "content": "hi"}]}, key=key)
            expect_status(r, 200)
            gw.row(req_id)
        s = gw.stream_chat("m-rec", headers=hdr(rid("key"), KEY1)).read_all()
        expect_status(s, 200)
        # look at the live WAL first, then at everything after a clean stop
        seen = []
        for path in files_under(os.path.dirname(gw.db_path)):
            data = open(path, "rb").read()
            for key in (KEY1, KEY2):
                if key.encode() in data:
                    seen.append(os.path.basename(path))
        rc = gw.stop()
        eq(rc, 0, "exit code after SIGTERM")
        files = files_under(os.path.dirname(gw.db_path))
        ensure(any(f.endswith(".db") for f in files), "no database file: %s" % files)
        for path in files:
            data = open(path, "rb").read()
            for key in (KEY1, KEY2):
                if key.encode() in data:
                    seen.append(os.path.basename(path))
        ensure(not seen, "a raw caller key is stored in %s" % sorted(set(seen)))


def store_bodies_off_group(R):
    mA = R.mock("A")
    gw = R.gateway("nobodies", {"logsink": {"store_bodies": False},
                                "openai_clients": [client("rA", mA, ["m-rec"])]})

    @R.check("phase2.records.store_bodies_off")
    def _():
        req_id = rid("nb")
        r = gw.chat("m-rec", headers=hdr(req_id))
        expect_status(r, 200)
        row = gw.row(req_id)
        eq(row["request_body"], None, "request_body")
        eq(row["key_hash"], "", "key_hash without a bearer key")
        eq(row["total_tokens"], 18, "total_tokens still recorded")

    @R.check("phase2.records.client_ip_ignores_untrusted_forwarded_for")
    def _():
        req_id = rid("xff")
        r = gw.chat("m-rec", headers=hdr(req_id, X_Forwarded_For="198.51.100.9"))
        expect_status(r, 200)
        eq(gw.row(req_id)["client_ip"], "127.0.0.1", "client_ip with no trusted_proxies")


# ====================================================================== burst

def burst_group(R):
    mA = R.mock("A")
    emb = {"object": "list", "model": "m-burst", "data": [
        {"object": "embedding", "index": 0, "embedding": [0.5]}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    gw = R.gateway("burst", {
        "logsink": {"queue_size": 16, "batch_size": 16, "flush_interval": "50ms"},
        "server": {"shutdown_timeout": "30s"},
        "openai_clients": [client("bA", mA, ["m-burst"])]})
    N = 3000
    state = {}

    def run():
        if "done" in state:
            if "err" in state:
                raise CheckFail(state["err"])
            return state
        state["done"] = True
        try:
            mA.always(Json(emb))
            gw.ensure()
            ids = ["burst-%s-%d" % (rid("b"), i) for i in range(N)]

            def one(req_id, st):
                conn = st.get("conn")
                if conn is None:
                    conn = st["conn"] = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
                try:
                    r = http_request(gw.port, "POST", "/v1/embeddings",
                                     {"model": "m-burst", "input": "x"},
                                     {"X-Request-Id": req_id}, conn=conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    st.pop("conn", None)
                    raise
                return r.status
            t0 = time.monotonic()
            res = parallel(24, ids, one, timeout=120)
            state["secs"] = time.monotonic() - t0
            state["statuses"] = res
            state["ids"] = ids
            try:
                m = gw.get("/metrics").body.decode()
                state["spilled"] = sum(metric_values(m, "gptapi_logsink_spilled_total").values())
            except Exception:
                state["spilled"] = None
            state["rc"] = gw.stop(timeout=60)
            db = sqlite3.connect("file:%s?mode=ro" % gw.db_path, uri=True, timeout=5)
            try:
                got = db.execute("SELECT count(*), count(DISTINCT request_id) FROM requests "
                                 "WHERE request_id LIKE 'burst-%'").fetchone()
            finally:
                db.close()
            state["rows"] = got
        except CheckFail as e:
            state["err"] = str(e)
            raise
        except Exception as e:
            state["err"] = "%s: %s" % (type(e).__name__, e)
            raise CheckFail(state["err"])
        return state

    @R.check("phase2.burst.all_requests_answered")
    def _():
        st = run()
        bad = [s for s in st["statuses"] if s != 200]
        ensure(not bad, "%d of %d requests failed, e.g. %s" % (len(bad), N, short(bad[:3])))
        return "%d requests in %.1fs, %s spilled" % (N, st["secs"], st["spilled"])

    @R.check("phase2.burst.clean_exit")
    def _():
        eq(run()["rc"], 0, "exit code after SIGTERM")

    @R.check("phase2.burst.rows_equal_requests")
    def _():
        st = run()
        ok = sum(1 for s in st["statuses"] if s == 200)
        eq(st["rows"], (ok, ok), "rows (count, distinct request_id)")
        eq(ok, N, "answered requests")

    @R.check("phase2.burst.spill_dir_empty")
    def _():
        run()
        left = files_under(gw.spill_dir)
        ensure(not left, "spill files left: %s" % short([os.path.basename(f) for f in left]))


def spill_group(R):
    """The database is held locked for a while (a slow disk) during a burst:
    records must go to spill files, requests must not wait, nothing is lost."""
    mA = R.mock("A")
    emb = {"object": "list", "model": "m-spill", "data": [
        {"object": "embedding", "index": 0, "embedding": [0.5]}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    gw = R.gateway("spill", {
        "logsink": {"queue_size": 16, "batch_size": 16, "flush_interval": "20ms"},
        "server": {"shutdown_timeout": "30s"},
        "openai_clients": [client("sp", mA, ["m-spill"])]})
    N = 1200
    LOCK_SECS = 1.5
    state = {}

    def run():
        if "done" in state:
            if "err" in state:
                raise CheckFail(state["err"])
            return state
        state["done"] = True
        try:
            mA.always(Json(emb))
            warm = rid("warm")
            expect_status(gw.post("/v1/embeddings", {"model": "m-spill", "input": "x"},
                                  hdr(warm)), 200)
            gw.row(warm)
            ids = ["spill-%s-%d" % (rid("s"), i) for i in range(N)]
            lock = sqlite3.connect(gw.db_path, timeout=5, isolation_level=None,
                                   check_same_thread=False)
            lock.execute("BEGIN IMMEDIATE")
            t_lock = time.monotonic()
            released = {}

            def release():
                time.sleep(LOCK_SECS)
                lock.execute("ROLLBACK")
                lock.close()
                released["t"] = time.monotonic()
            rel = threading.Thread(target=release, daemon=True)
            rel.start()

            def one(req_id, st):
                conn = st.get("conn")
                if conn is None:
                    conn = st["conn"] = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
                t = time.monotonic()
                try:
                    r = http_request(gw.port, "POST", "/v1/embeddings",
                                     {"model": "m-spill", "input": "x"},
                                     {"X-Request-Id": req_id}, conn=conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    st.pop("conn", None)
                    raise
                return (r.status, t, time.monotonic() - t)
            res = parallel(16, ids, one, timeout=120)
            rel.join(10)
            state["statuses"] = [r[0] if isinstance(r, tuple) else r for r in res]
            during = [r[2] for r in res if isinstance(r, tuple) and
                      t_lock <= r[1] < released.get("t", 0)]
            state["during"] = during
            m = gw.get("/metrics").body.decode()
            state["spilled"] = sum(metric_values(m, "gptapi_logsink_spilled_total").values())
            state["rc"] = gw.stop(timeout=60)
            db = sqlite3.connect("file:%s?mode=ro" % gw.db_path, uri=True, timeout=5)
            try:
                state["rows"] = db.execute(
                    "SELECT count(*), count(DISTINCT request_id) FROM requests "
                    "WHERE request_id LIKE 'spill-%'").fetchone()
            finally:
                db.close()
        except CheckFail as e:
            state["err"] = str(e)
            raise
        except Exception as e:
            state["err"] = "%s: %s" % (type(e).__name__, e)
            raise CheckFail(state["err"])
        return state

    @R.check("phase2.spill.requests_do_not_wait_for_locked_db")
    def _():
        st = run()
        bad = [s for s in st["statuses"] if s != 200]
        ensure(not bad, "%d of %d requests failed, e.g. %s" % (len(bad), N, short(bad[:3])))
        ensure(len(st["during"]) >= 50, "only %d requests ran while the DB was locked" % len(st["during"]))
        worst = max(st["during"])
        ensure(worst < 0.5, "a request took %.2fs while the database was locked" % worst)
        return "%d requests while locked, slowest %.3fs" % (len(st["during"]), worst)

    @R.check("phase2.spill.records_spilled")
    def _():
        st = run()
        ensure(st["spilled"] and st["spilled"] > 0,
               "gptapi_logsink_spilled_total is %s after a burst against a locked DB "
               "with queue_size 16" % st["spilled"])
        return "%d spilled" % st["spilled"]

    @R.check("phase2.spill.no_record_lost")
    def _():
        st = run()
        eq(st["rc"], 0, "exit code after SIGTERM")
        eq(st["rows"], (N, N), "rows (count, distinct request_id)")

    @R.check("phase2.spill.spill_dir_empty")
    def _():
        run()
        left = files_under(gw.spill_dir)
        ensure(not left, "spill files left: %s" % short([os.path.basename(f) for f in left]))


# ====================================================================== shutdown

def shutdown_group(R):
    mA = R.mock("A")
    gw = R.gateway("shutdown", {
        "server": {"shutdown_timeout": "20s"},
        "check_config": {"stream_idle_timeout": "5s"},
        "openai_clients": [client("sA", mA, ["m-slow"])]})
    state = {}
    pieces = ["p%d " % i for i in range(10)]

    def run():
        if "done" in state:
            if "err" in state:
                raise CheckFail(state["err"])
            return state
        state["done"] = True
        try:
            mA.always(lambda rec: Sse(chat_chunks("m-slow", pieces), interval=0.2))
            gw.ensure()
            ids = [rid("shut") for _ in range(20)]
            streams = {}
            results = {}

            def reader(req_id):
                try:
                    s = Stream(gw.port, "/v1/chat/completions",
                               {"model": "m-slow", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]},
                               hdr(req_id), timeout=30)
                    streams[req_id] = s
                    s.next_event()
                    s.read_all()
                    results[req_id] = (s.status, s.content(), s.done)
                except Exception as e:
                    results[req_id] = e
            ts = [threading.Thread(target=reader, args=(i,), daemon=True) for i in ids]
            for t in ts:
                t.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if len(streams) == 20 and all(s.events for s in streams.values()):
                    break
                time.sleep(0.02)
            else:
                raise CheckFail("the 20 streams did not all start within 10s")
            t_sig = time.monotonic()
            gw.signal(signal.SIGTERM)
            time.sleep(0.3)
            try:
                r = http_request(gw.port, "GET", "/health", timeout=2)
                state["after"] = "answered %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                state["after"] = "refused (%s)" % type(e).__name__
            try:
                gw.proc.wait(30)
            except Exception:
                gw.kill()
                raise CheckFail("gptapi did not exit within 30s of SIGTERM")
            state["rc"] = gw.proc.returncode
            state["exit_after"] = time.monotonic() - t_sig
            for t in ts:
                t.join(10)
            state["results"] = results
            state["ids"] = ids
            state["rows"] = gw.rows("request_id LIKE ?", (ids[0].rsplit("-", 1)[0] + "-%",))
            state["rows"] = [r for r in state["rows"] if r["request_id"] in ids]
        except CheckFail as e:
            state["err"] = str(e)
            raise
        except Exception as e:
            state["err"] = "%s: %s" % (type(e).__name__, e)
            raise CheckFail(state["err"])
        return state

    @R.check("phase2.shutdown.streams_finish")
    def _():
        st = run()
        want = (200, "".join(pieces), True)
        bad = {k: v for k, v in st["results"].items() if v != want}
        eq(len(st["results"]), 20, "streams finished")
        ensure(not bad, "%d of 20 streams cut by SIGTERM, e.g. %s" % (len(bad), short(list(bad.values())[:2])))

    @R.check("phase2.shutdown.exit_0_after_streams")
    def _():
        st = run()
        eq(st["rc"], 0, "exit code")
        ensure(st["exit_after"] >= 1.0, "exited %.2fs after SIGTERM, before the 2s streams ended" % st["exit_after"])
        return "exited %.2fs after SIGTERM" % st["exit_after"]

    @R.check("phase2.shutdown.stops_accepting")
    def _():
        st = run()
        ensure(st["after"].startswith("refused"), "a new connection after SIGTERM was %s" % st["after"])

    @R.check("phase2.shutdown.all_rows_written")
    def _():
        st = run()
        eq(len(st["rows"]), 20, "rows for the 20 streams")
        eq(sorted({r["status"] for r in st["rows"]}), [200], "statuses")


# ====================================================================== rotation

def make_old_db(path, month, with_requests=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('month', ?)", (month,))
    if with_requests:
        db.execute("""CREATE TABLE requests (
            id INTEGER PRIMARY KEY, request_id TEXT, ts_ms INTEGER, client_ip TEXT,
            key_hash TEXT, endpoint TEXT, model TEXT, served_model TEXT, upstream TEXT,
            tried TEXT, stream INTEGER, status INTEGER, error TEXT,
            prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
            has_tools INTEGER, tool_calls TEXT, multimodal INTEGER, ttft_ms INTEGER,
            latency_ms INTEGER, request_body TEXT, response_body TEXT, truncated INTEGER)""")
        db.execute("INSERT INTO requests (request_id, ts_ms, endpoint, model, status) "
                   "VALUES ('old-row-1', 1577836800000, 'chat', 'm-old', 200)")
    db.commit()
    db.close()


def rotation_group(R):
    mA = R.mock("A")
    cur = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")

    gw = R.gateway("rotation", {"openai_clients": [client("rA", mA, ["m-rot"])]})
    make_old_db(gw.db_path, "2020-01")
    old = os.path.join(os.path.dirname(gw.db_path), "gptapi-2020-01.db")

    def month_of(path):
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            return dict(db.execute("SELECT key, value FROM meta").fetchall()).get("month")
        finally:
            db.close()

    @R.check("phase2.rotation.old_month_renamed_at_start")
    def _():
        gw.ensure()
        ensure(os.path.exists(old), "%s not there; files: %s" % (
            os.path.basename(old), os.listdir(os.path.dirname(gw.db_path))))
        eq(month_of(old), "2020-01", "month of the renamed file")
        db = sqlite3.connect("file:%s?mode=ro" % old, uri=True, timeout=5)
        try:
            got = [r[0] for r in db.execute("SELECT request_id FROM requests")]
        finally:
            db.close()
        eq(got, ["old-row-1"], "rows of the renamed file")

    @R.check("phase2.rotation.new_file_current_month")
    def _():
        gw.ensure()
        eq(month_of(gw.db_path), cur, "month of the new file")
        req_id = rid("rot")
        expect_status(gw.chat("m-rot", headers=hdr(req_id)), 200)
        gw.row(req_id)
        ensure(not gw.rows("request_id = ?", (req_id,), path=old) if os.path.exists(old) else True,
               "new record written to the old month's file")
        ensure(not gw.rows("request_id = 'old-row-1'"), "old row still in the new file")

    gw2 = R.gateway("rotation-meta-only", {"openai_clients": [client("rA", mA, ["m-rot"])]})
    make_old_db(gw2.db_path, "2020-02", with_requests=False)

    @R.check("phase2.rotation.meta_only_file_renamed")
    def _():
        gw2.ensure()
        old2 = os.path.join(os.path.dirname(gw2.db_path), "gptapi-2020-02.db")
        ensure(os.path.exists(old2), "gptapi-2020-02.db not there; files: %s" %
               os.listdir(os.path.dirname(gw2.db_path)))
        eq(month_of(gw2.db_path), cur, "month of the new file")
