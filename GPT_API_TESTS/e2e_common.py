"""Assertions shared by the phases of the gptapi end-to-end runner."""

import itertools
import json
import os
import re
import socket
import threading
import time

from e2e_infra import CheckFail, ensure, eq, short

_ids = itertools.count(1)
_RUN = "%x" % (int(time.time() * 1000) & 0xffffffff)


def rid(tag="r"):
    """A unique X-Request-Id for this run."""
    return "e2e-%s-%s-%d" % (_RUN, tag, next(_ids))


def hdr(request_id=None, key=None, **extra):
    h = {}
    if request_id:
        h["X-Request-Id"] = request_id
    if key:
        h["Authorization"] = "Bearer " + key
    for k, v in extra.items():
        h[k.replace("_", "-")] = v
    return h


def expect_status(r, status):
    if r.status != status:
        body = r.body() if callable(r.body) else r.body
        raise CheckFail("status: got %d, want %d; body %s" % (r.status, status, short(body)))


def expect_error(r, status, etype, code=None):
    """An OpenAI-shaped gateway error with the given status, type and code."""
    expect_status(r, status)
    j = r.json
    ensure(isinstance(j, dict) and isinstance(j.get("error"), dict),
           "body is not {\"error\":{...}}: %s" % short(r.body))
    e = j["error"]
    ensure(isinstance(e.get("message"), str) and e["message"],
           "error.message missing or empty: %s" % short(r.body))
    eq(e.get("type"), etype, "error.type")
    if code is not None:
        eq(e.get("code"), code, "error.code")
    ensure("param" in e and e["param"] is None, "error.param must be null: %s" % short(r.body))
    ensure(r.header("X-Request-Id"), "no X-Request-Id on the error answer")
    return e


def expect_upstream(r, name):
    eq(r.header("X-Gptapi-Upstream"), name, "X-Gptapi-Upstream")


def tried_of(r):
    """The tried list of an all-failed error, checked against its message."""
    e = expect_error(r, r.status, "upstream_error", "all_upstreams_failed")
    tried = e.get("tried")
    ensure(isinstance(tried, list) and tried, "error.tried missing: %s" % short(r.body))
    want_tail = "Tried: [" + ", ".join(json.dumps(t) for t in tried) + "]"
    ensure(e["message"].endswith(want_tail),
           "message %r does not end with %r" % (e["message"], want_tail))
    return tried


def parallel(n_threads, items, fn, timeout):
    """Run fn(item) over items on n_threads threads; returns the results in
    item order; an exception becomes the result. Bounded by timeout."""
    items = list(items)
    results = [None] * len(items)
    idx = itertools.count()
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def work():
        state = {}
        while time.monotonic() < deadline:
            with lock:
                i = next(idx)
            if i >= len(items):
                return
            try:
                results[i] = fn(items[i], state)
            except Exception as e:  # collected and reported by the caller
                results[i] = e
    ts = [threading.Thread(target=work, daemon=True) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in ts):
        raise CheckFail("work did not finish within %ds" % timeout)
    return results


def metric_values(text, name):
    """{labels string: value} for every sample of a metric in Prometheus text."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) == name:
            try:
                out[m.group(2) or ""] = float(m.group(3))
            except ValueError:
                pass
    return out


def files_under(path):
    out = []
    for root, _, files in os.walk(path):
        out.extend(os.path.join(root, f) for f in files)
    return out


def messages_of(mock):
    rec = mock.last("/chat/completions")
    ensure(isinstance(rec.json, dict), "upstream body is not JSON: %s" % short(rec.body))
    return rec.json.get("messages")


def read_to_end(c, quiet):
    """What c receives until the peer closes it (ended) or quiet seconds
    pass without a byte. A reset counts as closed: gptapi closed with bytes
    of ours unread."""
    data = b""
    c.settimeout(quiet)
    try:
        while True:
            b = c.recv(65536)
            if not b:
                return data, True
            data += b
    except socket.timeout:
        return data, False
    except OSError:
        return data, True
