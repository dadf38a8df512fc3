"""Random stage: inputs drawn at random, each answer checked against what
SPEC says it must be. Request bodies are mutated at random (any member
replaced by a value of any type, removed, or new ones added) and the body
the upstream got is checked; streams are generated at random and written in
pieces split anywhere, and every event the caller got is checked against
the upstream's, rewritten as SPEC §4.4 says, and so is the record. The
seeds are fixed, so a failure replays."""

import copy
import gzip
import json
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from e2e_common import metric_values, read_to_end
from e2e_infra import CheckFail, client, deep_merge, ensure, eq, free_port, http_request, wait_until
from e2e_mock import Cut, Fail, Hold, Json, Pieces, Raw, Sse, Stall, chat_answer, chat_chunks

PREFIX = 'P\x1b"> '
# Texts that have broken JSON writers, line scanners and prefix logic.
TEXTS = ["", "", "a", " b", "\u00e9", "\u2028", "\x00", "\x1b[31m\"", "\U0001F3F4\U000e0067",
         "<think>", "\\", "\"", "\n", "data: x", "\r\n\r\n", "xyz" * 20]


def groups():
    return [random_group, faults_group, reload_group, raw_group, garbage_group, shutdown_group,
            prefix_group, pool_group]


def _text(r):
    return "".join(r.choice(TEXTS) for _ in range(r.randint(0, 3)))


# ---------------------------------------------------------------- requests

def _value(r, depth=0):
    k = r.randint(0, 9 if depth < 3 else 5)
    if k == 0:
        return None
    if k == 1:
        return r.choice([True, False])
    if k == 2:
        return r.choice([0, -1, 1, 511, 512, 513, 4096, 2 ** 31, 2 ** 63, 10 ** 30])
    if k == 3:
        return r.choice([0.5, 1e3, 513.0, -0.0, 1e308])
    if k in (4, 5):
        return _text(r)
    if k in (6, 7):
        return [_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    keys = ["role", "content", "type", "text", "name", "x", "tool_calls", "image_url"]
    return {r.choice(keys): _value(r, depth + 1) for _ in range(r.randint(0, 3))}


BASES = {
    "/v1/chat/completions": {"model": "m-r", "messages": [
        {"role": "system", "content": " s "}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>t</think>b"},
        {"role": "user", "content": [{"type": "text", "text": " q "},
                                     {"type": "image_url", "image_url": {"url": "http://x"}}]},
        {"role": "user", "content": "z"}], "max_tokens": 1000, "stop": ["\n"]},
    "/v1/completions": {"model": "m-r", "prompt": "hello", "max_tokens": 1000, "stop": "x"},
    "/v1/embeddings": {"model": "m-r", "input": ["a", "b"]},
    "/v1/rerank": {"model": "m-r", "query": "q", "documents": ["a", "b"]},
}
GENERATES = ("/v1/chat/completions", "/v1/completions")


def _paths(v, p=()):
    yield p
    if isinstance(v, dict):
        for k in v:
            yield from _paths(v[k], p + (k,))
    elif isinstance(v, list):
        for i, e in enumerate(v):
            yield from _paths(e, p + (i,))


def _mutate(r, b):
    for _ in range(r.randint(1, 3)):
        ps = [p for p in _paths(b) if p]
        x = r.random()
        if x < 0.6 and ps:
            p = r.choice(ps)
            parent = b
            for k in p[:-1]:
                parent = parent[k]
            parent[p[-1]] = _value(r)
        elif x < 0.8:
            b[r.choice(["max_completion_tokens", "stream", "stop", "n", "extra", "model",
                        "stream_options", "tools"])] = _value(r)
        elif ps:
            p = r.choice(ps)
            parent = b
            for k in p[:-1]:
                parent = parent[k]
            del parent[p[-1]]
    b.pop("stream", None)  # streams are the other check's
    return b


# ---------------------------------------------------------------- streams

def _stream(r, model):
    """Upstream events: ("data", obj), ("event", obj) with an event: line,
    ("raw", payload) that is not a chunk object, ("comment", text)."""
    n = r.randint(1, 3)

    def chunk():
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model}
    evs = []
    for k in range(r.randint(1, 12)):
        x = r.random()
        if x < 0.08:
            evs.append(("comment", "ping"))
            continue
        if x < 0.10:
            evs.append(("raw", r.choice(["not json {", "42", "\"str\"", "[1,2]", "null", "{\"model\":\"m\"}"])))
            continue
        if x < 0.16:
            c = chunk()
            c["choices"], c["usage"] = [], {"prompt_tokens": 3, "completion_tokens": k, "total_tokens": 3 + k}
            evs.append(("data", c))
            continue
        c = chunk()
        c["choices"] = []
        for i in r.sample(range(n), r.randint(1, n)):
            delta, y = {}, r.random()
            if y < 0.15:
                delta["role"] = "assistant"
            if y < 0.05:
                delta["content"] = None
            elif y < 0.75:
                delta["content"] = _text(r)
            elif y < 0.85:
                delta["reasoning_content"] = _text(r)
            elif y < 0.95:
                delta["tool_calls"] = [{"index": 0, "function": {"arguments": _text(r)}}]
            c["choices"].append({"index": i, "delta": delta, "finish_reason": None})
        evs.append(("event" if r.random() < 0.1 else "data", c))
    c = chunk()
    c["choices"] = [{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)]
    evs.append(("data", c))
    c = chunk()
    c["choices"], c["usage"] = [], {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    evs.append(("data", c))
    return evs


def _body(r, evs):
    x = r.random()
    eol = "\r\n" if x < 0.3 else "\r" if x < 0.4 else "\n"
    out = []
    for kind, v in evs:
        if kind == "comment":
            out.append(": " + v + eol + eol)
            continue
        text = v if kind == "raw" else json.dumps(v, ensure_ascii=r.random() < 0.5)
        head = "event: message" + eol if kind == "event" else ""
        out.append(head + "data: " + text + eol + eol)
    out.append("data: [DONE]" + eol + eol)
    return "".join(out).encode("utf-8", "surrogatepass")


def _expected(evs, asked_usage):
    """The events the caller must get (parsed JSON, or ("raw", text) for a
    payload that is not JSON) and each choice's text in the record."""
    want, prefixed, texts = [], set(), {}
    for kind, v in evs:
        if kind == "comment":
            continue
        if kind == "raw":
            try:
                v = json.loads(v)
            except ValueError:
                want.append(("raw", v))
                continue
            if isinstance(v, dict) and "model" in v:
                v = dict(v, model="m-s")
            want.append(v)
            continue
        if v["choices"] == [] and v.get("usage") is not None and not asked_usage:
            continue  # the usage-only chunk gptapi asked for is hidden
        w = copy.deepcopy(v)
        w["model"] = "m-s"
        for ch in w["choices"]:
            c = ch["delta"].get("content")
            if isinstance(c, str):
                if c and ch["index"] not in prefixed:
                    ch["delta"]["content"] = PREFIX + c
                    prefixed.add(ch["index"])
                texts[ch["index"]] = texts.get(ch["index"], "") + ch["delta"]["content"]
        want.append(w)
    return want, {i: t for i, t in texts.items() if i in prefixed}


def _events(raw, errors="surrogatepass"):
    """The data payloads of an SSE body, in order."""
    out, cur = [], []
    for line in raw.decode("utf-8", errors).replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if cur:
                out.append("\n".join(cur))
                cur = []
        elif line.startswith("data:"):
            cur.append(line[6:] if line.startswith("data: ") else line[5:])
    if cur:
        out.append("\n".join(cur))
    return out


# ---------------------------------------------------------------- checks

def _bodies(gw, mocks, r, n):
    """n request bodies mutated member by member: each upstream body is
    JSON, clamped, renamed, with the client's stops exactly where text
    is generated; each refusal an OpenAI-shaped 400 or 404 that reached
    no upstream."""
    gw.ensure()
    seen = {"answered": 0, "refused": 0}

    def calls():
        return sorted((c for m in mocks() for c in m.calls()), key=lambda c: c.t)
    for i in range(n):
        path = r.choice(list(BASES))
        sent = _mutate(r, copy.deepcopy(BASES[path]))
        body = json.dumps(sent, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass")
        before = len(calls())
        resp = gw.req("POST", path, body, {"Content-Type": "application/json"})
        if resp.status != 200:
            err = resp.json.get("error") if isinstance(resp.json, dict) else None
            ensure(resp.status in (400, 404) and isinstance(err, dict) and err.get("message"),
                   "request %d to %s: %d %s" % (i, path, resp.status, resp.body[:200]))
            ensure(len(calls()) == before, "request %d: refused with %d yet sent upstream" % (i, resp.status))
            seen["refused"] += 1
            continue
        seen["answered"] += 1
        got = calls()[-1]
        up = got.json
        ensure(isinstance(up, dict), "request %d: the upstream body is not JSON: %r" % (i, got.body[:200]))
        eq(up.get("model"), "served-r", "request %d: upstream model" % i)
        for k in ("max_tokens", "max_completion_tokens"):
            v = up.get(k)
            if path in GENERATES and isinstance(v, (int, float)) and not isinstance(v, bool):
                ensure(v <= 512, "request %d: %s %r reached the upstream" % (i, k, v))
        stop = up.get("stop")
        if path in GENERATES:
            ensure(stop == "<|im_end|>" or (isinstance(stop, list) and "<|im_end|>" in stop),
                   "request %d: upstream stop %r" % (i, stop))
        else:
            eq(stop, sent.get("stop"), "request %d: stop of a request that generates no text" % i)
    ensure(seen["answered"] > 100 and seen["refused"] > 100, "too few of a kind: %s" % seen)
    return seen


def random_group(R):
    mR, mS = R.mock("R"), R.mock("S")
    gw = R.gateway("random", {"openai_clients": [
        client("r", mR, ["m-r"], model="served-r", max_tokens=512, stop=["<|im_end|>"]),
        client("s", mS, ["m-s"], model="served-s", special_prefix=PREFIX),
    ]})

    # The same client behind the prefix strategy, which also reads the
    # prompt of every endpoint (messages, prompt, input, query and
    # documents) to route it.
    mP = R.mock("RP")
    gwp = R.gateway("random-prefix", {"routing": {"strategy": "prefix"}, "openai_clients": [
        client("r", mR, ["m-r"], model="served-r", max_tokens=512, stop=["<|im_end|>"]),
        client("rp", mP, ["m-r"], model="served-r", max_tokens=512, stop=["<|im_end|>"])]})

    @R.check("random.request_bodies")
    def _():
        return _bodies(gw, lambda: [mR], random.Random(20261202), 400)

    @R.check("random.request_bodies_prefix_routing")
    def _():
        return _bodies(gwp, lambda: [mR, mP], random.Random(7), 300)

    @R.check("random.streams")
    def _():
        gw.ensure()
        r = random.Random(4242)
        for i in range(150):
            evs = _stream(r, "served-s")
            asked_usage = r.random() < 0.3
            mS.always(Pieces(_body(r, evs), seed=i))
            req_id = "rand-%d" % i
            body = {"model": "m-s", "stream": True, "messages": [{"role": "user", "content": "q"}]}
            if asked_usage:
                body["stream_options"] = {"include_usage": True}
            s = gw.stream("/v1/chat/completions", body, {"X-Request-Id": req_id}).read_all()
            eq(s.status, 200, "stream %d: status" % i)
            got = _events(s.raw)
            ensure(got and got[-1] == "[DONE]", "stream %d: no [DONE] at its end: %r" % (i, got[-2:]))
            parsed = []
            for g in got[:-1]:
                try:
                    parsed.append(json.loads(g))
                except ValueError:
                    parsed.append(("raw", g))
            want, texts = _expected(evs, asked_usage)
            if parsed != want:
                for j, (a, b) in enumerate(zip(parsed, want)):
                    if a != b:
                        raise CheckFail("stream %d event %d: got %s, want %s" % (
                            i, j, json.dumps(a)[:300], json.dumps(b)[:300]))
                raise CheckFail("stream %d: %d events, want %d" % (i, len(parsed), len(want)))
            row = gw.row(req_id)
            eq((row["status"], row["completion_tokens"]), (200, 9), "stream %d: record status and usage" % i)
            choices = {c["index"]: c for c in json.loads(row["response_body"])["choices"]}
            for idx, text in texts.items():
                eq(choices[idx]["message"].get("content"), text, "stream %d: recorded text of choice %d" % (i, idx))


# ---------------------------------------------------------------- faults

# What an upstream does with one attempt. Failover kinds (SPEC §4.1): the
# next candidate is tried; the others are the answer.
FAILOVER = {"5xx", "429", "408", "stall", "break"}
WORDS = ["Hel", "lo", " th", "ere", "!"]
USAGE5 = {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def _token(rec):
    """The token a request carries, which picks its planned answer: its
    last message's text, up to a colon."""
    msgs = rec.json.get("messages") if isinstance(rec.json, dict) else None
    text = msgs[-1].get("content") if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) else None
    return text.split(":")[0] if isinstance(text, str) else None


def planned(plans, name=None):
    """A mock's answer: the action plans holds for the request's token (a
    {upstream name: action} map when name is given), or the default."""
    def act(rec):
        plan = plans.get(_token(rec))
        return plan if plan is None or name is None else plan[name]
    return act


def _fault(r, kind, stream, served, slow, stall):
    """The mock action for kind. slow: the answer lasts long enough for a
    caller that leaves after its start (or, plain, after 0.4 s) to be gone
    before it ends. stall: how long a silent upstream stays silent, past
    first_byte_timeout."""
    if kind == "ok":
        if stream:
            return Sse(chat_chunks(served, WORDS), usage=USAGE5, interval=0.2 if slow else 0.0)
        if slow:
            return Hold(chat_answer(served, "".join(WORDS)), 3.0)
        return Json(chat_answer(served, "".join(WORDS)))
    if kind == "5xx":
        return Fail(r.choice([500, 502, 503, 504]))
    if kind in ("429", "408"):
        return Fail(int(kind))
    if kind == "4xx":
        return Fail(r.choice([400, 404, 413, 422]))
    if kind == "stall":
        return Stall(stall)
    if kind == "break":  # before the caller got a byte
        if stream:
            return Sse(chat_chunks(served, WORDS), break_after=0, reset=r.random() < 0.5)
        body = chat_answer(served, "".join(WORDS))
        return Cut(body, r.randint(0, len(json.dumps(body)) - 1), reset=r.random() < 0.5)
    if kind == "mid":  # streams: after k events reached the caller
        # A FIN: a reset may discard events still queued at the mock
        # (Nagle), and the break would come before the first byte.
        return Sse(chat_chunks(served, WORDS), break_after=r.randint(2, 5))
    if kind == "silent":  # streams: silence past stream_idle_timeout after k events
        return Sse(chat_chunks(served, WORDS), pauses={r.randint(2, 5): stall})
    raise ValueError(kind)


def _kind(r, stream):
    kinds = ["ok", "ok", "5xx", "5xx", "429", "408", "4xx", "stall", "break", "break"]
    if stream:
        kinds += ["mid", "silent"]
    return r.choice(kinds)


def faults_group(R):
    mocks = [R.mock("F%d" % i) for i in range(3)]
    names = ["f%d" % i for i in range(3)]
    clients = [client(names[i], m, ["m-f"], model="served-f%d" % i) for i, m in enumerate(mocks)]
    # Bounds well above what a mock in the runner's process takes to answer
    # on a loaded machine, and silences well above the bounds.
    timeouts = {"first_byte_timeout": "600ms", "stream_idle_timeout": "600ms", "request_timeout": "4s"}
    pprof = [free_port(), free_port()]
    gw = R.gateway("faults", {"check_config": timeouts, "openai_clients": clients},
                   args=["-pprof", "127.0.0.1:%d" % pprof[0]])
    # A plain caller leaves after 0.4 s, and the watcher notices within
    # 0.25 s more: the first byte may take longer than that here.
    cooling = R.gateway("faults-cooling", {
        "check_config": dict(timeouts, first_byte_timeout="1500ms", failure_threshold=2, cooldown="400ms"),
        "openai_clients": clients}, args=["-pprof", "127.0.0.1:%d" % pprof[1]])

    @R.check("random.faults")
    def _():
        """Each of 240 requests, 6 at a time, meets a random misbehaviour at
        each of three upstreams (errors of every class, silence, connections
        cut or reset before and after the first byte); the caller's answer,
        the path tried and the record must follow SPEC §4.1, §4.4 and §4.5."""
        return _faults(gw, pprof[0], mocks, names, random.Random(1207), 240, leaving=0.0, stall=1.5)

    @R.check("random.faults_cooldown_and_callers_leaving")
    def _():
        """The same with cooldowns reordering the candidates (2 failures in a
        row, 400 ms), and a caller in six that leaves once its answer has
        begun (plain: after 0.4 s): its record says 499 and the upstream's
        work is cancelled."""
        return _faults(cooling, pprof[1], mocks, names, random.Random(77), 180, leaving=1 / 6, stall=2.0)


def _goroutines(port):
    """A gateway's goroutines that run gptapi's code or serve a caller's
    connection; the libraries' own housekeepers (fasthttp's idle workers and
    pool cleaners, which end after a while idle) are not counted."""
    r = http_request(port, "GET", "/debug/pprof/goroutine?debug=1", timeout=10)
    n = 0
    for group in r.body.decode().split("\n\n"):
        head = [ln for ln in group.strip().splitlines() if " @ " in ln]
        if head and ("github.com/gptapi/gptapi/" in group or "fasthttp.(*Server).serveConn" in group):
            n += int(head[0].split()[0])
    return n


def _faults(gw, pprof, mocks, names, r, n, leaving, stall):
    gw.ensure()
    idle = _goroutines(pprof)
    plans, kinds = {}, {}  # token -> {client name: action}, {client name: kind}
    for name, m in zip(names, mocks):
        m.always(planned(plans, name))
    reqs = []
    for i in range(n):
        stream, leave = r.random() < 0.5, r.random() < leaving
        tok = "fault-%s-%d" % (gw.name, i)
        plans[tok], kinds[tok] = {}, {}
        for name in names:
            k = kinds[tok][name] = _kind(r, stream)
            plans[tok][name] = _fault(r, k, stream, "served-" + name, leave, stall)
        reqs.append((i, tok, stream, leave))

    def send(q):
        """The answer: status, headers, the stream or the body, and when
        the caller left (None if it stayed)."""
        i, tok, stream, leave = q
        msgs = [{"role": "user", "content": tok}]
        hdr = {"X-Request-Id": tok}
        if leave and not stream:
            body = json.dumps({"model": "m-f", "messages": msgs}).encode()
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as c:
                c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (tok.encode(), len(body), body))
                time.sleep(0.4)
            return None, {}, None, None, time.monotonic()
        if stream:
            s = gw.stream_chat("m-f", msgs, hdr, timeout=20)
            try:
                if s.status == 200 and "event-stream" in s.header("content-type"):
                    if leave:
                        s.next_event()
                        s.close()
                        return s.status, s.headers, s, None, time.monotonic()
                    s.read_all()
                    return s.status, s.headers, s, None, None
                return s.status, s.headers, None, s.body(), None
            finally:
                s.close()
        resp = gw.chat("m-f", msgs, hdr, timeout=20)
        return resp.status, resp.headers, None, resp.body, None
    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(send, reqs))
    seen = {}
    for (i, tok, stream, leave), (status, headers, s, body, left_at) in zip(reqs, got):
        where = "request %d (%s%s, %s)" % (i, "stream" if stream else "plain", ", caller leaves" if leave else "",
                                           kinds[tok])
        calls = sorted(((c.t, names[j], c) for j, m in enumerate(mocks) for c in m.calls() if _token(c) == tok),
                       key=lambda x: x[0])
        tried = [n for _, n, _ in calls]
        ensure(tried and len(set(tried)) == len(tried), "%s: upstreams tried %s" % (where, tried))
        met = [kinds[tok][n] for n in tried]
        ensure(all(k in FAILOVER for k in met[:-1]), "%s: went on after %s" % (where, met))
        last = met[-1]
        for k in met:
            seen[k] = seen.get(k, 0) + 1
        row = gw.row(tok)
        eq([t.split("/")[0] for t in json.loads(row["tried"] or "[]")], tried, "%s: record's tried" % where)
        eq(row["stream"], int(stream), "%s: record's stream flag" % where)
        if leave:
            seen["left"] = seen.get("left", 0) + 1
            if left_at is not None:
                # The watcher looks every 250 ms: no upstream is tried once
                # the caller has gone (with a margin for a loaded machine).
                late = [(n, round(t - left_at, 2)) for t, n, _ in calls if t > left_at + 1.0]
                ensure(not late, "%s: upstreams tried after the caller left (s after): %s" % (where, late))
            if last == "ok":
                # The answer lasts 1.4 s (stream) or 3 s (plain): the caller
                # left first, and the upstream must see its work cancelled.
                eq(row["status"], 499, "%s: record status of a caller that left" % where)
                c = calls[-1][2]
                ensure(wait_until(lambda: c.write_failed_at or c.peer_closed_at, 3, what="cancel"),
                       "%s: the upstream's work was not cancelled" % where)
            elif last in FAILOVER or last in ("mid", "silent"):
                ensure(row["status"] in (499, 502, 504), "%s: record status %s" % (where, row["status"]))
            continue
        if last in FAILOVER:
            eq(sorted(tried), names, "%s: every candidate tried before failing" % where)
            want = 504 if last == "stall" else 502
            eq(status, want, "%s: status when all failed" % where)
            err = json.loads(body)["error"]
            eq((err["type"], err["code"]), ("upstream_error", "all_upstreams_failed"), "%s: error" % where)
            eq([t.split("/")[0] for t in err["tried"]], tried, "%s: tried in the error" % where)
            eq((row["status"], row["upstream"]), (want, ""), "%s: record" % where)
            eq(row["error"], err["message"], "%s: record's error" % where)
            continue
        served = tried[-1]
        eq(headers.get("x-gptapi-upstream"), served, "%s: X-Gptapi-Upstream" % where)
        eq(row["upstream"], served, "%s: record's upstream" % where)
        if last == "4xx":
            up = plans[tok][served]
            eq(status, up.status, "%s: the upstream's status" % where)
            eq(json.loads(body), up.body, "%s: the upstream's body" % where)
            eq(row["status"], up.status, "%s: record status" % where)
            continue
        eq(status, 200, "%s: status" % where)
        if not stream:
            a = json.loads(body)
            eq((a["model"], a["choices"][0]["message"]["content"]), ("m-f", "".join(WORDS)),
               "%s: answer" % where)
            eq(row["status"], 200, "%s: record status" % where)
            continue
        data = [d for _, d in s.events]
        if last == "ok":
            ensure(data and data[-1] == "[DONE]", "%s: stream end %r" % (where, data[-2:]))
            eq(s.content(), "".join(WORDS), "%s: streamed text" % where)
            eq((row["status"], row["completion_tokens"]), (200, 5), "%s: record" % where)
            continue
        # mid or silent: the caller got part of the answer, then an error event
        ensure(data and "[DONE]" not in data, "%s: a broken stream must not end with [DONE]" % where)
        err = json.loads(data[-1]).get("error")
        ensure(isinstance(err, dict) and err.get("message"), "%s: last event %r" % (where, data[-1]))
        text = s.content()
        ensure(len(text) < len("".join(WORDS)) and "".join(WORDS).startswith(text),
               "%s: partial text %r" % (where, text))
        eq(row["status"], 504 if last == "silent" else 502, "%s: record status" % where)
        eq(row["error"], err["message"], "%s: record's error" % where)
        rec_text = json.loads(row["response_body"])["choices"][0]["message"].get("content") or ""
        eq(rec_text, text, "%s: recorded partial text" % where)
    # Nothing is left behind: no request in flight, no stream open, no
    # goroutine more than before (idle upstream connections have none, nor
    # caller ones once closed).
    def settled():
        m = gw.get("/metrics").body.decode()
        busy = [k + "=" + str(v) for name in ("gptapi_upstream_inflight", "gptapi_active_streams")
                for k, v in metric_values(m, name).items() if v]
        left = _goroutines(pprof)
        return None if busy or left > idle else (busy, left)
    try:
        _, after = wait_until(settled, 5, 0.1, "idle")
    except CheckFail:
        m = gw.get("/metrics").body.decode()
        raise CheckFail("after the run: in flight %s, streams %s, goroutines %d (%d before)" % (
            metric_values(m, "gptapi_upstream_inflight"), metric_values(m, "gptapi_active_streams"),
            _goroutines(pprof), idle))
    # The metrics count what the records say, by upstream and status.
    counted = {}
    for labels, v in metric_values(gw.get("/metrics").body.decode(), "gptapi_requests_total").items():
        lab = dict(x.split("=", 1) for x in labels.strip("{}").split(","))
        k = (lab["upstream"].strip('"'), int(lab["status"].strip('"')))
        counted[k] = counted.get(k, 0) + int(v)
    recorded = {}
    for row in gw.rows("request_id LIKE 'fault-%'"):
        k = (row["upstream"], row["status"])
        recorded[k] = recorded.get(k, 0) + 1
    eq(counted, recorded, "gptapi_requests_total by upstream and status against the records")
    # Every misbehaviour was met often enough to count (attempts of each kind).
    ensure(len(seen) == (10 if leaving else 9) and min(seen.values()) >= 10, "too few of a kind: %s" % seen)
    return {"attempts": seen, "goroutines": "%d before, %d after" % (idle, after)}


# ---------------------------------------------------------------- reloads

def reload_group(R):
    ma, mb = R.mock("RA"), R.mock("RB")
    murl = {"a": ma.base_url[:-len("/v1")] + "/metrics", "b": mb.base_url[:-len("/v1")] + "/metrics"}

    def version(v, strategy, members, valid=True):
        cs = [client(n, {"a": ma, "b": mb}[n], ["m-x"], model="s%d%s" % (v, n),
                     special_prefix="%d%s:" % (v, n), metrics_url=murl[n]) for n in members]
        if not valid:
            cs[0]["model_match"]["type"] = "regex"
        return {"routing": {"strategy": strategy, "poll_interval": "100ms"}, "openai_clients": cs}
    versions = {1: version(1, "weighted", "a"), 2: version(2, "least_loaded", "b"),
                3: version(3, "prefix", "ab"), 4: version(4, "weighted", "ab", valid=False)}
    gw = R.gateway("reloads", versions[1])

    @R.check("random.reload_under_traffic")
    def _():
        """Four callers send plain and stream requests while the config file
        is rewritten every 80 ms, at random, between three valid versions
        (different clients, model renames, prefixes and routing strategies)
        and an invalid one. Each answer must come whole from one version:
        its prefix, the client named in X-Gptapi-Upstream, the model the
        upstream was sent and the record all agree, and that version's
        client served it (SPEC §2: running requests finish on the old
        config, new ones use the new one, an invalid one is refused)."""
        gw.ensure()
        r = random.Random(31)
        stop = threading.Event()
        results, errors = [], []

        def caller(k):
            i = 0
            while not stop.is_set():
                tok = "rl-%d-%d" % (k, i)
                msgs = [{"role": "user", "content": tok}]
                try:
                    if i % 2:
                        s = gw.stream_chat("m-x", msgs, {"X-Request-Id": tok}, timeout=10)
                        try:
                            s.read_all()
                            results.append((tok, s.status, s.header("x-gptapi-upstream"),
                                            s.content() if s.status == 200 else s.raw))
                        finally:
                            s.close()
                    else:
                        resp = gw.chat("m-x", msgs, {"X-Request-Id": tok}, timeout=10)
                        text = resp.json["choices"][0]["message"]["content"] if resp.status == 200 else resp.body
                        results.append((tok, resp.status, resp.header("x-gptapi-upstream"), text))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append("%s: %r" % (tok, e))
                i += 1
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(40):
                gw.write_config(deep_merge(gw.cfg, versions[r.choice([1, 2, 3, 3, 4])]))
                time.sleep(0.08)
            gw.write_config(deep_merge(gw.cfg, versions[2]))
            wait_until(lambda: gw.chat("m-x").header("x-gptapi-upstream") == "b"
                       and gw.chat("m-x").json["choices"][0]["message"]["content"].startswith("2b:"),
                       5, 0.1, "version 2 in force")
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        ensure(not errors, "callers failed: %s" % errors[:3])
        ensure(gw.running(), "gptapi exited during the reloads")
        seen = {}
        for tok, status, up, text in results:
            eq(status, 200, "%s: status (%r)" % (tok, text[:200] if isinstance(text, bytes) else text))
            v = text.split(":", 1)[0]
            ensure(v in ("1a", "2b", "3a", "3b"), "%s: answer %r has no valid version's prefix" % (tok, text))
            eq(up, v[1], "%s: X-Gptapi-Upstream of an answer prefixed %s" % (tok, v))
            mock = ma if up == "a" else mb
            got = [c for c in mock.calls() if _token(c) == tok]
            eq([c.json["model"] for c in got], ["s" + v], "%s: model sent upstream" % tok)
            eq(gw.row(tok)["upstream"], up, "%s: record's upstream" % tok)
            seen[v] = seen.get(v, 0) + 1
        ensure(len(seen) == 4 and min(seen.values()) >= 5, "too few answers of a version: %s" % seen)
        return seen


# ---------------------------------------------------------------- raw HTTP

def _raw_request(r, i):
    """One request as bytes, with random faults in its framing, and what
    must come of three of them: "badline" (a request line that is not
    HTTP/1.x: 400, before any header is read, however many follow), "431"
    (a head, request line to the blank line, over SPEC §3's 16 KiB limit)
    and "smuggle" (both Content-Length and Transfer-Encoding: 400,
    connection closed)."""
    body = json.dumps({"model": "m-h", "messages": [{"role": "user", "content": "raw-%d" % i}]}).encode()
    method, path, version = b"POST", b"/v1/chat/completions", b"HTTP/1.1"
    heads = [(b"Host", b"x"), (b"Content-Type", b"application/json"), (b"X-Request-Id", b"raw-%d" % i),
             (b"Content-Length", b"%d" % len(body))]
    tail = b""
    for _ in range(r.randint(0, 2)):
        k = r.randrange(16)
        if k == 0:
            method = r.choice([b"GET", b"PUT", b"DELETE", b"post", b"P0ST", b"PATCH", b"OPTIONS"])
        elif k == 1:
            path = r.choice([b"/v1/chat/completions?x=1", b"//v1/chat/completions", b"/v1/chat/completions/",
                             b"/V1/chat/completions", b"/v1/chat%2Fcompletions", b"/v1/" + b"a" * 5000,
                             b"*", b"http://x/v1/chat/completions", b"/v1/chat/completions#f", b""])
        elif k == 2:
            version = r.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/0.9", b"", b"http/1.1"])
        elif k == 3:  # Content-Length and Transfer-Encoding both
            heads.append((b"Transfer-Encoding", b"chunked"))
        elif k == 4:  # chunked instead, well or badly framed
            heads = [h for h in heads if h[0] != b"Content-Length"] + [(b"Transfer-Encoding", b"chunked")]
            n = r.randint(1, len(body))
            chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (n, body[:n], len(body) - n, body[n:]) \
                if n < len(body) else b"%x\r\n%s\r\n0\r\n\r\n" % (n, body)
            bad = r.choice([None, None, b"zz\r\n", b"%x\r\n" % (len(body) + 9), b"-1\r\n", b"0x10\r\n"])
            body = chunks if bad is None else bad + body
        elif k == 5:  # a second, different Content-Length
            heads.append((b"Content-Length", b"%d" % r.choice([0, 5, 10 ** 6])))
        elif k == 6:
            heads.append(r.choice([(b"X-Bad Name", b"v"), (b"X-No-Colon", None), (b" X-Lead", b"v"),
                                   (b"X-Nul", b"a\x00b"), (b"X-Fold", b"a\r\n b"), (b"X-Ctl", b"\x01\x7f"),
                                   (b"X-Utf8", "\u00e9\u2028".encode())]))
        elif k == 7:
            heads.append((b"X-Big", b"b" * r.choice([1000, 17000, 70000])))
        elif k == 8:
            heads.extend((b"X-H%d" % j, b"v") for j in range(r.choice([50, 400])))
        elif k == 9:
            heads.append((b"Expect", r.choice([b"100-continue", b"bogus"])))
        elif k == 10:
            heads.append((b"Connection", r.choice([b"close", b"keep-alive", b"Upgrade"])))
        elif k == 11:  # a body shorter than announced: read_timeout ends it
            body = body[:r.randint(0, len(body) - 1)]
        elif k == 12:  # bytes after the body: a pipelined request, or garbage
            tail = r.choice([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"garbage\r\n\r\n", b"\r\n", b"\x00" * 9])
        elif k == 13:
            heads = [(n, v) for n, v in heads if n != b"Content-Length"]
        elif k == 14:
            heads = [(n, v) for n, v in heads if n != b"Host"]
        else:
            heads.append((b"X-Request-Id", r.choice([b"", b"id with spaces", b"\xff\xfe", b"x" * 300])))
    line = method + b" " + path + (b" " + version if version else b"") + b"\r\n"
    hs = b"".join(n + b"\r\n" if v is None else n + b": " + v + b"\r\n" for n, v in heads)
    names = {n.lower() for n, _ in heads}
    expect = None
    if path == b"" or version in (b"HTTP/1.1x", b"", b"http/1.1"):
        expect = "badline"
    elif len(line) + len(hs) + 2 > 16 << 10:
        expect = "431"
    elif {b"content-length", b"transfer-encoding"} <= names and version in (b"HTTP/1.1", b"HTTP/1.0") \
            and method == b"POST" and path == b"/v1/chat/completions":
        expect = "smuggle"
    return line + hs + b"\r\n" + body + tail, expect


def _responses(data):
    """The HTTP responses in data: [(status, headers, body)], and the bytes
    left over that do not make a whole response."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            break
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            hdr[k.strip().lower().decode("latin-1")] = v.strip()
        status = int(parts[1])
        if "content-length" in hdr:
            n = int(hdr["content-length"])
            if len(rest) < n:
                break
            body, data = rest[:n], rest[n:]
        elif hdr.get("transfer-encoding", b"").lower() == b"chunked":
            body, ok = b"", False
            while True:
                size, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    break
                n = int(size.split(b";")[0], 16)
                if n == 0:
                    rest = rest.split(b"\r\n", 1)[1] if b"\r\n" in rest else b""
                    ok = True
                    break
                body, rest = body + rest[:n], rest[n + 2:]
            if not ok:
                break
            data = rest
        elif status in (204, 304) or 100 <= status < 200:
            body, data = b"", rest
        else:
            body, data = rest, b""
        out.append((status, hdr, body))
    return out, data


def raw_group(R):
    mH = R.mock("H")
    gw = R.gateway("raw", {"server": {"read_timeout": "1s"},
                           "openai_clients": [client("h", mH, ["m-h"])]})

    @R.check("random.raw_http")
    def _():
        """400 requests whose bytes carry random faults in the request line,
        headers and framing (both Content-Length and Transfer-Encoding, bad
        chunks, short bodies, huge or broken headers, pipelined bytes after
        the body), 8 at a time. Each connection must end within
        read_timeout's bound with only whole HTTP answers; every answer but
        a 200 is an OpenAI-shaped error; each 200 is the upstream's answer
        with a record; and gptapi keeps serving. A caller that half-closes
        after its request may get 499, as from nginx: its closed side reads
        as a caller gone."""
        gw.ensure()
        r = random.Random(99)
        reqs = [(i, _raw_request(r, i)) for i in range(400)]

        def send(q):
            """Half-closes after sending (most requests), so that the
            connection must end; else reads until 2 s pass without a byte."""
            i, raw, shut = q
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as c:
                try:
                    c.sendall(raw)
                    if shut:
                        c.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                data, ended = read_to_end(c, 4 if shut else 2)
            return i, raw, shut, data, ended
        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(send, [(i, raw, r.random() < 0.8) for i, (raw, _) in reqs]))
        statuses = {}
        for i, raw, shut, data, ended in got:
            where = "request %d %r" % (i, raw[:300])
            resps, left = _responses(data)
            ensure(ended or (resps and not shut),
                   "%s: no answer and the connection did not end within 4 s; got %r" % (where, data[:300]))
            expect = reqs[i][1][1]
            if expect:
                resps = [x for x in resps if x[0] != 100]
                statuses[expect] = statuses.get(expect, 0) + 1
                want = 431 if expect == "431" else 400
                ensure(resps and resps[0][0] == want, "%s: want %d first, got %s" % (
                    where, want, [x[0] for x in resps]))
                if expect == "smuggle":
                    ensure(len(resps) == 1 and ended, "%s: the connection goes on after both Content-Length "
                           "and Transfer-Encoding (%d answers, ended %s)" % (where, len(resps), ended))
            ensure(not left, "%s: bytes that are not a whole answer: %r" % (where, left[:300]))
            for status, hdr, body in resps:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 100:  # Expect: 100-continue
                    continue
                if status == 200:
                    if hdr.get("content-type", b"").startswith(b"application/json") and b'"status"' in body:
                        continue  # the pipelined /health
                    a = json.loads(body)
                    eq(a["choices"][0]["message"]["content"], "Hello from H", "%s: answer" % where)
                    rid = hdr.get("x-request-id", b"").decode("latin-1")
                    ensure(rid, "%s: no X-Request-Id" % where)
                    ensure(len(wait_until(lambda: gw.rows("request_id = ?", (rid,)), 5, 0.05, "record")) >= 1,
                           "%s: no record of %r" % (where, rid))
                    continue
                try:
                    err = json.loads(body)["error"]
                except (ValueError, KeyError, TypeError):
                    raise CheckFail("%s: %d answer is not an OpenAI error: %r" % (where, status, body[:300]))
                ensure(isinstance(err, dict) and err.get("message") and err.get("type"),
                       "%s: %d error %r" % (where, status, err))
        ensure(gw.get("/health").status == 200 and gw.running(), "gptapi stopped serving")
        return statuses


# ---------------------------------------------------------------- upstream garbage

def _raw_answer(r, stream):
    """An upstream's answer as bytes, valid, then with random faults in its
    status line, headers, encoding and framing."""
    status = b"HTTP/1.1 200 OK"
    if stream:
        events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chat_chunks("served-g", WORDS))
        events += b"data: [DONE]\n\n"
        ctype, body, chunked = b"text/event-stream", events, True
    else:
        ctype, body, chunked = b"application/json", json.dumps(chat_answer("served-g", "".join(WORDS))).encode(), False
    heads = [(b"Content-Type", ctype)]
    extra, cl = [], None
    for _ in range(r.randint(0, 2)):
        k = r.randrange(12)
        if k == 0:
            status = r.choice([b"HTTP/1.0 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 999 Odd", b"HTTP/1.1 2000 X",
                               b"ICY 200 OK", b"HTTP/1.1 -1 X", b"garbage", b"", b"HTTP/1.1 500 Oops",
                               b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content", b"HTTP/1.1 302 Found"])
        elif k == 1:
            chunked = not chunked
        elif k == 2:
            cl = r.choice([b"-1", b"abc", b"0", b"%d" % (len(body) + 50), b"%d" % max(0, len(body) - 30),
                           b"99999999999999999999"])
        elif k == 3:
            extra.append((b"Content-Length", b"%d" % len(body)))  # and chunked or a second length
        elif k == 4:
            body = gzip.compress(body) if r.random() < 0.7 else b"\x1f\x8b\x08\x00garbage"
            heads.append((b"Content-Encoding", r.choice([b"gzip", b"gzip", b"br", b"x-unknown"])))
        elif k == 5:
            heads.append((b"X-No-Colon", None))
        elif k == 6:
            heads.append((b"X-Big", b"b" * r.choice([2000, 70000])))
        elif k == 7:
            heads.extend((b"X-H%d" % j, b"v") for j in range(300))
        elif k == 8:  # truncated
            body = body[:r.randint(0, max(0, len(body) - 1))]
        elif k == 9:  # a byte changed
            if body:
                j = r.randrange(len(body))
                body = body[:j] + bytes([r.randrange(256)]) + body[j + 1:]
        elif k == 10:
            heads = [(n, v) for n, v in heads if n != b"Content-Type"] + [
                (b"Content-Type", r.choice([b"application/json", b"text/event-stream", b"text/html"]))]
        else:
            body += r.choice([b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", b"\x00" * 50, b"data: x\n\n"])
    if chunked:
        heads.append((b"Transfer-Encoding", b"chunked"))
        n = r.randint(1, 64)
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[j:j + n]), body[j:j + n]) for j in range(0, len(body), n))
        framed += b"0\r\n\r\n"
    else:
        framed = body
        heads.append((b"Content-Length", cl if cl is not None else b"%d" % len(body)))
    heads += extra
    hs = b"".join(n + b"\r\n" if v is None else n + b": " + v + b"\r\n" for n, v in heads)
    return status + b"\r\n" + hs + b"\r\n" + framed


def garbage_group(R):
    mG = R.mock("G")
    gw = R.gateway("garbage", {
        "check_config": {"first_byte_timeout": "1s", "stream_idle_timeout": "1s", "request_timeout": "2s",
                         "max_response_bytes": 65536},
        "openai_clients": [client("g", mG, ["m-g"], model="served-g")]})

    @R.check("random.upstream_garbage")
    def _():
        """300 requests, half of them streams, each answered by an upstream
        whose status line, headers, encoding or framing is broken at random
        (odd statuses, both lengths, lengths that lie, gzip good and bad,
        headers without a colon or too large, truncated or altered bodies,
        the wrong Content-Type, bytes after the end), 6 at a time. Each
        caller gets one whole HTTP answer within the timeouts: the
        upstream's answer relayed, or an OpenAI-shaped error; the record
        says the status the caller got (a stream that broke after its start:
        502 or 504 with the error event's text); gptapi keeps serving."""
        gw.ensure()
        r = random.Random(5)
        plans = {}
        reqs = []
        for i in range(300):
            stream = r.random() < 0.5
            tok = "garbage-%d" % i
            plans[tok] = Raw(_raw_answer(r, stream))
            reqs.append((i, tok, stream))
        mG.always(planned(plans))

        def send(q):
            i, tok, stream = q
            body = json.dumps({"model": "m-g", "stream": stream,
                               "messages": [{"role": "user", "content": tok}]}).encode()
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as c:
                c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s" % (tok.encode(), len(body), body))
                data, ended = read_to_end(c, 6)
            return i, tok, stream, data, ended
        with ThreadPoolExecutor(6) as ex:
            got = list(ex.map(send, reqs))
        statuses = {}
        for i, tok, stream, data, ended in got:
            where = "request %d (%s), upstream sent %r" % (i, "stream" if stream else "plain", plans[tok].data[:400])
            ensure(ended, "%s: the answer did not end within 6 s: %r" % (where, data[:300]))
            resps, left = _responses(data)
            ensure(len(resps) == 1 and not left, "%s: not one whole HTTP answer: %r" % (where, data[:400]))
            status, hdr, body = resps[0]
            statuses[status] = statuses.get(status, 0) + 1
            row = gw.row(tok)
            if b"x-gptapi-upstream" not in {k.encode() for k in hdr} and status >= 400:
                try:
                    err = json.loads(body)["error"]
                except (ValueError, KeyError, TypeError):
                    raise CheckFail("%s: %d from gptapi is not an OpenAI error: %r" % (where, status, body[:300]))
                eq(row["error"], err["message"], "%s: record's error" % where)
            sse = hdr.get("content-type", b"").startswith(b"text/event-stream")
            if status == 200 and stream and sse:
                evs = _events(body, "replace")  # an altered byte may not be UTF-8
                ensure(evs, "%s: a stream with no event" % where)
                if evs[-1] == "[DONE]":
                    eq(row["status"], 200, "%s: record of a whole stream" % where)
                else:
                    try:
                        err = json.loads(evs[-1]).get("error")
                    except ValueError:
                        err = None
                    ensure(isinstance(err, dict), "%s: a stream ending without [DONE] nor an error: %r; record %s %r" % (
                        where, evs[-3:], row["status"], row["error"]))
                    ensure(row["status"] in (502, 504), "%s: record status %s" % (where, row["status"]))
                    eq(row["error"], err["message"], "%s: record's error" % where)
                continue
            eq(row["status"], status, "%s: record status" % where)
        ensure(gw.get("/health").status == 200 and gw.running(), "gptapi stopped serving")
        return statuses


# ---------------------------------------------------------------- shutdown

def shutdown_group(R):
    mS = R.mock("SD")
    gw = R.gateway("shutdown-rand", {
        "server": {"shutdown_timeout": "2s"},
        "logsink": {"queue_size": 2, "batch_size": 2, "flush_interval": "200ms"},
        "openai_clients": [client("sd", mS, ["m-sd"])]})

    @R.check("random.shutdown_under_traffic")
    def _():
        """Eight callers send plain and stream requests of random lengths
        (some longer than shutdown_timeout) through a gateway whose record
        queue holds 2, while another process holds the database, so records
        spill; SIGTERM comes in the middle.
        gptapi must stop within shutdown_timeout and a little, and every
        request that got an answer has exactly one record saying what the
        caller got: 200 for a whole answer, 502 for one cut by the
        shutdown (a stream's error event), once the spill is replayed."""
        gw.ensure()
        r = random.Random(8)
        plans, lock = {}, threading.Lock()
        mS.always(planned(plans))
        stop = threading.Event()
        outcomes = []

        def caller(k):
            cr = random.Random(k)
            i = 0
            while not stop.is_set():
                tok = "sd-%d-%d" % (k, i)
                i += 1
                stream = cr.random() < 0.5
                long = cr.random() < 0.1
                with lock:
                    if stream:
                        plans[tok] = Sse(chat_chunks("m-sd", WORDS * (8 if long else 1)),
                                         interval=0.1 if long else cr.choice([0, 0.01]))
                    else:
                        plans[tok] = Hold(chat_answer("m-sd", "".join(WORDS)), 5.0) if long else \
                            Json(chat_answer("m-sd", "".join(WORDS)), delay=cr.choice([0, 0.02]))
                body = json.dumps({"model": "m-sd", "stream": stream,
                                   "messages": [{"role": "user", "content": tok}]}).encode()
                try:
                    c = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
                except OSError:
                    return  # the listener is closed: gptapi is stopping
                with c:
                    try:
                        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s" % (tok.encode(), len(body), body))
                        data = b""
                        while True:
                            b = c.recv(65536)
                            if not b:
                                break
                            data += b
                    except OSError:
                        pass
                outcomes.append((tok, stream, data))
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        # Another process holds the database for a while, as a long
        # query or a backup would: records queue up, then spill.
        time.sleep(0.3)
        lockdb = sqlite3.connect(gw.db_path, timeout=5, isolation_level=None)
        lockdb.execute("BEGIN EXCLUSIVE")
        time.sleep(1.2)
        spilled = sum(metric_values(gw.get("/metrics").body.decode(), "gptapi_logsink_spilled_total").values())
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        time.sleep(0.3)
        lockdb.execute("ROLLBACK")
        lockdb.close()
        try:
            gw.proc.wait(15)
        except subprocess.TimeoutExpired:
            gw.kill()
            raise CheckFail("gptapi did not exit within 15 s of SIGTERM: %s" % gw.log_tail(6))
        took = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(15)
        eq(gw.proc.returncode, 0, "exit code")
        ensure(took < 2 + 3, "exit took %.1f s after SIGTERM with shutdown_timeout 2s" % took)
        answered = {}
        for tok, stream, data in outcomes:
            resps, _ = _responses(data)
            if not resps:
                continue  # refused or closed before an answer began
            status, hdr, body = resps[0]
            if status == 200 and stream:
                evs = _events(body)
                status = 200 if evs and evs[-1] == "[DONE]" else 502
            answered[tok] = status
        # A restart replays what spilled.
        gw.proc, gw.err = None, None
        gw.start()

        def all_there():
            rows = gw.rows("request_id LIKE 'sd-%'")
            return rows if len({x["request_id"] for x in rows} & set(answered)) == len(answered) else None
        try:
            rows = wait_until(all_there, 10, 0.1, "records")
        except CheckFail:
            rows = gw.rows("request_id LIKE 'sd-%'")
            lost = sorted(set(answered) - {x["request_id"] for x in rows})
            raise CheckFail("%d of %d answered requests have no record, e.g. %s; log: %s" % (
                len(lost), len(answered), lost[:5], gw.log_tail(4)))
        by_id = {}
        for x in rows:
            ensure(x["request_id"] not in by_id, "two records of %s" % x["request_id"])
            by_id[x["request_id"]] = x
        seen = {}
        for tok, status in answered.items():
            eq(by_id[tok]["status"], status, "%s: record status" % tok)
            seen[status] = seen.get(status, 0) + 1
        ensure(seen.get(200, 0) > 50 and seen.get(502, 0) >= 3, "too few of a kind: %s" % seen)
        return {"statuses": seen, "spilled before SIGTERM": spilled}


# ---------------------------------------------------------------- prefix routing

def prefix_group(R):
    mocks = [R.mock("PX%d" % i) for i in range(3)]
    names = ["px%d" % i for i in range(3)]
    gw = R.gateway("prefix-faults", {
        "routing": {"strategy": "prefix", "poll_interval": "100ms"},
        "openai_clients": [client(n, m, ["m-px"], metrics_url=m.base_url[:-len("/v1")] + "/metrics")
                           for n, m in zip(names, mocks)]})

    @R.check("random.prefix_routing_faults")
    def _():
        """30 conversations of 5 turns, 6 at a time, sharing a long system
        prompt, through the prefix strategy while each attempt fails at
        random (5xx, 429, a cut answer; a stream's break before its first
        event). Only answered attempts teach (SPEC §4.7): each follow-up's
        record says prefix_hit with the upstream that answered its latest
        answered turn tried first, or prefix_balanced; a turn with no
        answered turn before it, whatever it shares of the system prompt,
        is never a hit (prefix_new, or prefix_balanced when the upstream
        its hash places it on is overloaded); and new conversations use
        every upstream."""
        gw.ensure()
        system = "You are the assistant of a big online shop. Answer briefly and politely. " * 60
        plans = {}
        r = random.Random(404)
        convs = []
        for c in range(30):
            ts = []
            for t in range(5):
                tok = "px-%d-%d" % (c, t)
                stream = r.random() < 0.3
                plans[tok] = {}
                for n in names:
                    k = r.choices(["ok", "5xx", "429", "break"], [70, 15, 7, 8])[0]
                    plans[tok][n] = _fault(r, k, stream, "m-px", False, 1.0)
                ts.append((tok, stream))
            convs.append(ts)

        for name, m in zip(names, mocks):
            m.always(planned(plans, name))

        def talk(ts):
            msgs = [{"role": "system", "content": system}]
            holder, out = None, []
            for tok, stream in ts:
                msgs.append({"role": "user", "content": tok + ": " + "tell me more about the order. " * 50})
                if stream:
                    s = gw.stream_chat("m-px", msgs, {"X-Request-Id": tok}, timeout=20)
                    try:
                        ok = s.status == 200 and "event-stream" in s.header("content-type")
                        if ok:
                            s.read_all()
                        text = s.content() if ok else ""
                        up = s.header("x-gptapi-upstream") if ok else None
                    finally:
                        s.close()
                else:
                    resp = gw.chat("m-px", msgs, {"X-Request-Id": tok}, timeout=20)
                    ok = resp.status == 200
                    text = resp.json["choices"][0]["message"]["content"] if ok else ""
                    up = resp.header("x-gptapi-upstream") if ok else None
                out.append((tok, holder, up))
                if ok:
                    holder = up
                    msgs.append({"role": "assistant", "content": text})
                else:
                    msgs.pop()  # the caller asks something else next
            return out
        with ThreadPoolExecutor(6) as ex:
            results = list(ex.map(talk, convs))
        routes, firsts = {}, {}
        taught_by_failover = 0  # follow-ups of a turn its first upstream failed
        for conv in results:
            after_failover = False
            for tok, holder, up in conv:
                row = gw.row(tok)
                route = row["route"]
                routes[route] = routes.get(route, 0) + 1
                tried = [t.split("/")[0] for t in json.loads(row["tried"] or "[]")]
                where = "%s (holder %s, tried %s, served %s)" % (tok, holder, tried, up)
                taught_by_failover += after_failover
                if up is not None:
                    after_failover = len(tried) > 1
                if holder is None:
                    # placed by its hash, or, that one overloaded, balanced
                    ensure(route in ("prefix_new", "prefix_balanced"),
                           "%s: route %s of a prompt nothing answered yet holds" % (where, route))
                    firsts[tried[0]] = firsts.get(tried[0], 0) + 1
                    continue
                ensure(route in ("prefix_hit", "prefix_balanced"), "%s: route %s" % (where, route))
                if route == "prefix_hit":
                    eq(tried[0], holder, "%s: first tried on a prefix hit" % where)
        ensure(routes.get("prefix_hit", 0) >= 60 and taught_by_failover >= 5,
               "too few hits (%s) or answers after a failover (%d)" % (routes, taught_by_failover))
        eq(sorted(firsts), names, "upstreams new conversations went to first (%s)" % firsts)
        return {"routes": routes, "new conversations first to": firsts,
                "follow-ups of an answer after a failover": taught_by_failover}


# ---------------------------------------------------------------- pools

def pool_group(R):
    mocks = [R.mock("PL%d" % i) for i in range(2)]
    names = ["pl%d" % i for i in range(2)]
    gw = R.gateway("pool-pressure", {
        "check_config": {"max_conn_wait": "300ms", "first_byte_timeout": "2s"},
        "openai_clients": [client(n, m, ["m-pl"], max_conns=2) for n, m in zip(names, mocks)]})

    @R.check("random.pool_pressure")
    def _():
        """16 callers at once against two upstreams of max_conns 2, answers
        taking up to 0.3 s, some failing (5xx, cut answers): no upstream
        ever has more than 2 requests of gptapi at once; a wait for a
        connection past max_conn_wait moves on to the next candidate; every
        caller gets an answer or an OpenAI-shaped 502 and a record saying
        it; nothing is left in flight."""
        gw.ensure()
        r = random.Random(3)
        plans = {}
        reqs = []
        for i in range(200):
            tok = "pl-%d" % i
            stream = r.random() < 0.4
            plans[tok] = {}
            for n in names:
                k = r.choices(["ok", "5xx", "break"], [80, 12, 8])[0]
                if k == "ok" and stream:
                    a = Sse(chat_chunks("m-pl", WORDS), interval=r.choice([0, 0.02, 0.06]))
                elif k == "ok":
                    a = Json(chat_answer("m-pl", "".join(WORDS)), delay=r.choice([0, 0.1, 0.3]))
                else:
                    a = _fault(r, k, stream, "m-pl", False, 1.0)
                plans[tok][n] = a
            reqs.append((tok, stream))

        for name, m in zip(names, mocks):
            m.always(planned(plans, name))

        def send(q):
            tok, stream = q
            msgs = [{"role": "user", "content": tok}]
            if stream:
                s = gw.stream_chat("m-pl", msgs, {"X-Request-Id": tok}, timeout=20)
                try:
                    if s.status == 200 and "event-stream" in s.header("content-type"):
                        s.read_all()
                        return s.status, (_events(s.raw) or [""])[-1], None
                    return s.status, None, s.body()
                finally:
                    s.close()
            resp = gw.chat("m-pl", msgs, {"X-Request-Id": tok}, timeout=20)
            return resp.status, None, resp.body
        with ThreadPoolExecutor(16) as ex:
            got = list(ex.map(send, reqs))
        statuses = {}
        for (tok, stream), (status, last, body) in zip(reqs, got):
            row = gw.row(tok)
            if status == 200 and stream and last != "[DONE]":
                status = 502  # broken after its start: the record says 502
            statuses[status] = statuses.get(status, 0) + 1
            eq(row["status"], status, "%s: record status" % tok)
            if status != 200:
                eq(status, 502, "%s: status" % tok)
                if body is not None:
                    err = json.loads(body)["error"]
                    eq(row["error"], err["message"], "%s: record's error" % tok)
        # Each upstream's requests overlap at most max_conns at a time. A
        # request holds its connection at least as long as its answer takes
        # by plan (a delay, or pauses between events), counted from when the
        # mock got it: that much is independent of how soon the mock's
        # threads get to their bookkeeping.
        def busy(a):
            if isinstance(a, Json):
                return a.delay
            if isinstance(a, Sse):
                return a.interval * len(a.chunks)
            return 0
        for name, m in zip(names, mocks):
            edges = []
            for c in m.calls():
                d = busy(plans[_token(c)][name]) if _token(c) in plans else 0
                if d > 0:
                    edges += [(c.t + d, -1), (c.t, 1)]
            depth = peak = 0
            for _, d in sorted(edges):
                depth += d
                peak = max(peak, depth)
            ensure(peak <= 2, "upstream %s had %d requests at once (max_conns 2)" % (m.name, peak))
        m = gw.get("/metrics").body.decode()
        ensure(not any(metric_values(m, "gptapi_upstream_inflight").values()), "requests left in flight")
        waits = sum(1 for x in gw.rows("request_id LIKE 'pl-%'") if "max_conns" in (x["error"] or ""))
        ensure(statuses.get(200, 0) > 100, "too few answered: %s" % statuses)
        return {"statuses": statuses, "refused for want of a connection": waits}
