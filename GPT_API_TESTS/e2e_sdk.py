"""The official OpenAI SDK as callers use it: sdk/check.mjs drives the Node
SDK (pinned in sdk/package.json, installed by `make deps`) against a
gateway with mock upstreams; each of its checks is a check here, and the
records its requests left are read from the SQLite file."""

import json
import os
import shutil
import subprocess

from e2e_infra import CheckFail, client, ensure, eq
from e2e_mock import Fail, Sse, chat_chunks

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.join(HERE, "sdk")
KEY = "sk-gateway-sdk"

# What check.mjs runs, in its order.
CHECKS = ["chat.create", "chat.stream", "chat.stream_usage", "chat.stream_helper",
          "chat.prefix_and_model", "chat.tool_calls_stream", "completions", "embeddings", "models.list",
          "errors.not_found", "errors.bad_request", "errors.bad_key", "errors.all_failed",
          "abort"]


def groups():
    return [sdk_group]


def _run_sdk(gw):
    """Runs check.mjs once; returns {name: (ok, detail)} or raises CheckFail."""
    node = shutil.which("node")
    if not node:
        raise CheckFail("node not installed (make deps installs Debian's nodejs)")
    if not os.path.isdir(os.path.join(SDK, "node_modules", "openai")):
        raise CheckFail("the SDK is not installed: npm ci --prefix GPT_API_TESTS/sdk (make deps does)")
    try:
        p = subprocess.run([node, os.path.join(SDK, "check.mjs"), gw.url + "/v1", KEY],
                           cwd=SDK, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=120)
    except subprocess.TimeoutExpired:
        raise CheckFail("check.mjs did not finish within 120s")
    out = p.stdout.decode("utf-8", "replace")
    results = {}
    for line in out.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and "name" in r:
            results[r["name"]] = (r.get("ok") is True, r.get("detail", ""))
    if p.returncode != 0 or not results:
        raise CheckFail("check.mjs exited %d: %s" % (p.returncode, out.strip()[-600:]))
    return results


def sdk_group(R):
    mA, mP, mF, mS, mT = R.mock("A", ["m-a"]), R.mock("P", ["m-p"]), R.mock("F"), R.mock("S"), R.mock("T")
    gw = R.gateway("sdk", {
        "auth": {"keys": [KEY]},
        "openai_clients": [
            client("a", mA, ["m-a"]),
            client("p", mP, ["m-p"], special_prefix="PFX: ", model="served-p"),
            client("f", mF, ["m-f"]),
            client("slow", mS, ["m-slow"]),
            client("t", mT, ["m-t"], special_prefix="PFX: "),
        ]})
    state = {}

    def run():
        """The one run of check.mjs, at the first check; the runner resets
        the mocks before each check, so what they received is kept here."""
        if "results" not in state:
            mF.always(Fail(500))
            mS.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["w%d " % i for i in range(30)]),
                                      interval=0.1))
            mT.always(Sse(_tool_call_chunks("m-t")))
            gw.ensure()
            state["results"] = _run_sdk(gw)
            state["chat"] = mA.calls("/chat/completions")
            state["embeddings"] = mA.calls("/embeddings")
        return state

    for name in CHECKS:
        @R.check("sdk." + name)
        def _(name=name):
            ok, detail = run()["results"].get(name, (False, "check.mjs did not report it"))
            ensure(ok, detail)

    @R.check("sdk.upstream_gets_the_sdk_request")
    def _():
        st = run()
        ensure(st["chat"] and st["embeddings"], "mock A saw no chat or embeddings request")
        req = st["chat"][0]
        eq(req.json.get("messages"), [{"role": "user", "content": "hi"}], "messages")
        ensure("authorization" not in req.headers, "the gateway's key went upstream")
        eq(st["embeddings"][0].json.get("encoding_format"), "base64", "the SDK's embeddings encoding")

    @R.check("sdk.records")
    def _():
        run()
        eq(gw.row("sdk-chat.create")["status"], 200, "chat record status")
        eq(gw.row("sdk-errors.not_found")["status"], 404, "not-found record status")
        eq(gw.row("sdk-errors.all_failed")["status"], 502, "all-failed record status")
        eq(gw.row("sdk-abort")["status"], 499, "aborted stream record status")
        eq(gw.row("sdk-embeddings")["prompt_tokens"], 5, "embeddings prompt_tokens")
        tools = gw.row("sdk-chat.tool_calls_stream")
        eq((tools["has_tools"], json.loads(tools["tool_calls"])), (1, ["get_weather"]), "tool-call record")


def _tool_call_chunks(model):
    """A streamed answer that calls one tool, its arguments in two pieces."""
    base = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": model}

    def delta(d, finish=None):
        return dict(base, choices=[{"index": 0, "delta": d, "finish_reason": finish}])
    return [delta({"role": "assistant", "content": None}),
            delta({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            delta({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            delta({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            delta({}, "tool_calls")]
