"""Keep every word (issue 12): metrics Prometheus accepts, shutdown that
records everything, timeouts that bound, pools that wait, live reload,
models per tenant, and the small edge cases of what upstreams and callers
send."""

import shutil
import signal
import socket
import subprocess
import threading
import time

from e2e_common import expect_status, hdr, rid
from e2e_infra import (CheckFail, Stream, client, ensure, eq, http_request,
                       short, wait_until)
from e2e_mock import Json, Sse, chat_answer, chat_chunks


def groups():
    return [metrics_group]


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
