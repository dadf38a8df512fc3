"""Phase 1: basic functionality of gptapi as a caller and an upstream see it."""

import json
import os
import socket
import subprocess
import time

from e2e_common import (expect_error, expect_status, expect_upstream, hdr,
                        messages_of, metric_values, parallel, rid)
from e2e_infra import (CheckFail, Stream, client, ensure, eq, free_port,
                       http_request, raw_exchange, short, to_yaml, deep_merge)
from e2e_mock import (Fail, Json, Sse, Stall, chat_answer, chat_chunks,
                      completion_answer, USAGE)

CALLER_KEY = "caller-key-1"
ENV_KEY = "sk-from-env-9d1e"


def groups():
    return [main_group, preprocess_off_group, merge_last_group, auth_group,
            reload_group, log_group, cli_group]


# ====================================================================== main

def main_group(R):
    mA = R.mock("A", ["m-a1", "shared-1"])
    mB = R.mock("B", ["m-b1", "shared-1"])
    mC = R.mock("C", ["m-c1"])
    mP = R.mock("P")
    mK = R.mock("K")
    mE1 = R.mock("E1")
    mE2 = R.mock("E2")
    mSF1 = R.mock("SF1")
    mSF2 = R.mock("SF2")
    mF = R.mock("F", ["m-f1"])
    mS = R.mock("S", ["m-s1"])
    mS2 = R.mock("S2", ["m-s2"])
    mBRK = R.mock("BRK")
    mBRK2 = R.mock("BRK2")
    mBRK3 = R.mock("BRK3")
    mIDL = R.mock("IDL")
    mF.models_action = Fail(500)
    mS.models_action = Stall(4)
    mS2.models_action = Stall(4)

    def reset_models():
        mF.models_action = Fail(500)
        mS.models_action = Stall(4)
        mS2.models_action = Stall(4)
        mA.models = ["m-a1", "shared-1"]

    clients = [
        client("plain", mA, ["m-plain"]),
        client("bee", mB, ["m-b"]),
        client("clamp", mC, ["m-clamp"], max_tokens=100, stop=["<END>", "###"],
               model="real-model"),
        client("prefix", mP, ["m-prefix"], special_prefix="PFX: "),
        client("keycfg", mK, ["m-keycfg"], api_key="sk-config-123"),
        client("keypass", mK, ["m-keypass"], api_key="sk-config-ignored",
               key_mode="passthrough"),
        client("keyempty", mK, ["m-keyempty"]),
        client("keyenv", mK, ["m-keyenv"], api_key="${E2E_UPSTREAM_KEY}"),
        client("hdr", mK, ["m-hdr"], headers={"X-Custom-One": "v1", "X-Team": "e2e"}),
        client("kw", mA, ["kwtest", "other-kw"], match="keyword"),
        client("nousage", mA, ["m-nousage"], stream_usage=False),
        client("p4a", mE1, ["m-4xx"]),
        client("p4b", mE2, ["m-4xx"]),
        client("sfa", mSF1, ["m-sfail"], priority=1),
        client("sfb", mSF2, ["m-sfail"], priority=0),
        client("failmodels", mF, ["m-failmodels"]),
        client("slowmodels", mS, ["m-slowmodels"]),
        client("slowmodels2", mS2, ["m-slowmodels2"]),
        client("strval", mB, "m-strval"),
        client("brk", mBRK, ["m-brk"]),
        client("brk2", mBRK2, ["m-brk2"]),
        client("brk3", mBRK3, ["m-brk3"]),
        client("idl", mIDL, ["m-idl"]),
    ]
    gw = R.gateway("main", {
        "server": {"max_body_bytes": 65536},
        "check_config": {"first_byte_timeout": "1s", "stream_idle_timeout": "1s",
                         "request_timeout": "4s", "models_timeout": "1s",
                         "models_cache_ttl": "3s"},
        "openai_clients": clients,
    }, env={"E2E_UPSTREAM_KEY": ENV_KEY})
    ck = R.check

    # ---------------------------------------------------------------- health
    @ck("phase1.health")
    def _():
        r = gw.get("/health")
        expect_status(r, 200)
        eq(r.json, {"status": "ok"}, "body")
        ensure(r.header("X-Request-Id"), "no X-Request-Id on /health")

    # ---------------------------------------------------------------- models
    @ck("phase1.models.union_dedup_failing_left_out")
    def _():
        reset_models()
        r = gw.get("/v1/models", timeout=10)
        expect_status(r, 200)
        ids = [m.get("id") for m in (r.json or {}).get("data", [])]
        eq(sorted(ids), sorted(["m-a1", "shared-1", "m-b1", "m-c1"]), "model ids")
        ensure(r.elapsed < 1.8, "took %.2fs with two upstreams silent past models_timeout 1s "
               "(fetched concurrently, each cut at 1s)" % r.elapsed)
        eq((r.json or {}).get("object"), "list", "object")
        ensure(r.header("X-Request-Id"), "no X-Request-Id")

    @ck("phase1.models.cached_within_ttl")
    def _():
        reset_models()
        r1 = gw.get("/v1/models", timeout=10)
        expect_status(r1, 200)
        n1 = len(mA.calls("/models"))
        mA.models = ["m-a1", "shared-1", "m-a2"]
        r2 = gw.get("/v1/models", timeout=10)
        ids2 = [m["id"] for m in r2.json["data"]]
        ensure("m-a2" not in ids2, "a second call within models_cache_ttl refetched: %s" % ids2)
        eq(len(mA.calls("/models")), n1, "upstream /models fetches during the ttl")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            time.sleep(0.5)
            ids3 = [m["id"] for m in gw.get("/v1/models", timeout=10).json["data"]]
            if "m-a2" in ids3:
                return
        raise CheckFail("after models_cache_ttl (3s) the list was never refreshed")

    # ---------------------------------------------------------------- proxying
    def proxied(path, body, mock, upstream_path, name):
        req_id = rid("proxy")
        r = gw.post(path, body, hdr(req_id))
        expect_status(r, 200)
        expect_upstream(r, name)
        eq(r.header("X-Request-Id"), req_id, "X-Request-Id echoed")
        rec = mock.last(upstream_path)
        eq(rec.method, "POST", "upstream method")
        eq(rec.path, "/v1" + upstream_path, "upstream path")
        ensure("application/json" in rec.headers.get("content-type", ""),
               "upstream Content-Type: %r" % rec.headers.get("content-type"))
        eq(rec.json.get("model"), body["model"], "upstream model")
        eq(r.json, json.loads(rec.answer), "answer relayed")
        return r, rec

    @ck("phase1.proxy.chat_json")
    def _():
        proxied("/v1/chat/completions", {"model": "m-plain", "messages": [
            {"role": "user", "content": "hi"}]}, mA, "/chat/completions", "plain")

    @ck("phase1.proxy.completions_json")
    def _():
        proxied("/v1/completions", {"model": "m-plain", "prompt": "Once upon"},
                mA, "/completions", "plain")

    @ck("phase1.proxy.embeddings")
    def _():
        _, rec = proxied("/v1/embeddings", {"model": "m-plain", "input": ["a", "b"]},
                         mA, "/embeddings", "plain")
        eq(rec.json.get("input"), ["a", "b"], "upstream input")

    @ck("phase1.proxy.rerank_v1")
    def _():
        _, rec = proxied("/v1/rerank", {"model": "m-plain", "query": "q",
                                        "documents": ["d1", "d2", "d3"]},
                         mA, "/rerank", "plain")
        eq(rec.json.get("documents"), ["d1", "d2", "d3"], "upstream documents")

    @ck("phase1.proxy.rerank_root")
    def _():
        proxied("/rerank", {"model": "m-plain", "query": "q", "documents": ["x"]},
                mA, "/rerank", "plain")

    @ck("phase1.proxy.second_upstream")
    def _():
        proxied("/v1/chat/completions", {"model": "m-b", "messages": [
            {"role": "user", "content": "yo"}]}, mB, "/chat/completions", "bee")

    @ck("phase1.request_id.generated_when_absent")
    def _():
        r1 = gw.chat("m-plain")
        r2 = gw.chat("m-plain")
        expect_status(r1, 200)
        a, b = r1.header("X-Request-Id"), r2.header("X-Request-Id")
        ensure(a and b, "no X-Request-Id: %r %r" % (a, b))
        ensure(a != b, "two requests got the same generated id %r" % a)
        expect_upstream(r1, "plain")

    @ck("phase1.request_id.echoed_on_errors")
    def _():
        req_id = rid("err")
        r = gw.chat("no-such-model-x", headers=hdr(req_id))
        eq(r.header("X-Request-Id"), req_id, "X-Request-Id on a 404")
        r = gw.post("/v1/chat/completions", b"{bad", hdr(req_id))
        eq(r.header("X-Request-Id"), req_id, "X-Request-Id on a 400")

    # ---------------------------------------------------------------- routing
    @ck("phase1.route.keyword_case_insensitive_substring")
    def _():
        r = gw.chat("Org/KWTest-7B-Instruct")
        expect_status(r, 200)
        expect_upstream(r, "kw")
        eq(mA.last().json["model"], "Org/KWTest-7B-Instruct", "upstream model")

    @ck("phase1.route.keyword_any_of_list")
    def _():
        r = gw.chat("some-OTHER-KW-model")
        expect_status(r, 200)
        expect_upstream(r, "kw")

    @ck("phase1.route.exact_single_string_value")
    def _():
        r = gw.chat("m-strval")
        expect_status(r, 200)
        expect_upstream(r, "strval")
        expect_error(gw.chat("m-strval-2"), 404, "invalid_request_error", "model_not_found")

    @ck("phase1.route.exact_case_sensitive")
    def _():
        expect_error(gw.chat("M-PLAIN"), 404, "invalid_request_error", "model_not_found")
        ensure(not mA.calls(), "an upstream was called for an unmatched model")

    # ---------------------------------------------------------------- preprocess (all on)
    def pre(messages, want, **extra):
        r = gw.chat("m-plain", messages, **extra)
        expect_status(r, 200)
        eq(messages_of(mA), want, "messages as the upstream saw them")

    @ck("phase1.preprocess.strip")
    def _():
        pre([{"role": "system", "content": "  You are terse.  "},
             {"role": "user", "content": "\n\t hello world \n"}],
            [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": "hello world"}])

    # Characters whose escapes differ between Go and JSON: control
    # characters, DEL, the tag runes of a subdivision flag emoji. A message
    # gptapi rewrites (here stripped and merged) must still reach the
    # upstream as JSON, with its text intact.
    FLAG = "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"

    @ck("phase1.preprocess.rewritten_text_keeps_every_character")
    def _():
        pre([{"role": "user", "content": ' say "hi" \x1b[31mred\x7f '},
             {"role": "user", "content": 'flag "x"\x0b' + FLAG + " \x01\x07!"}],
            [{"role": "user", "content": 'say "hi" \x1b[31mred\x7f\n\nflag "x"\x0b' + FLAG + " \x01\x07!"}])

    @ck("phase1.preprocess.strip_think_closed_block")
    def _():
        pre([{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "<think>secret reasoning\nmore</think>\n\nThe answer."},
             {"role": "user", "content": "q2"}],
            [{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "The answer."},
             {"role": "user", "content": "q2"}])

    @ck("phase1.preprocess.strip_think_unclosed_leading")
    def _():
        pre([{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "Let me think step by step.\n</think>\nFinal answer."},
             {"role": "user", "content": "q2"}],
            [{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "Final answer."},
             {"role": "user", "content": "q2"}])

    @ck("phase1.preprocess.strip_think_multiple_blocks")
    def _():
        pre([{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "<think>a</think>First. <think>b\nc</think>Second."},
             {"role": "user", "content": "q2"}],
            [{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "First. Second."},
             {"role": "user", "content": "q2"}])

    @ck("phase1.preprocess.strip_think_tool_call_tags_keep_contents")
    def _():
        pre([{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "Calling <tool_call>{\"name\":\"f\"}</tool_call> now"},
             {"role": "user", "content": "q2"}],
            [{"role": "user", "content": "q1"},
             {"role": "assistant", "content": "Calling {\"name\":\"f\"} now"},
             {"role": "user", "content": "q2"}])

    @ck("phase1.preprocess.strip_think_only_assistant")
    def _():
        pre([{"role": "user", "content": "<think>keep</think> me <tool_call>x</tool_call>"}],
            [{"role": "user", "content": "<think>keep</think> me <tool_call>x</tool_call>"}])

    @ck("phase1.preprocess.drop_empty")
    def _():
        tool_msg = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]}
        pre([{"role": "system", "content": "sys"},
             {"role": "user", "content": "q"},
             {"role": "assistant", "content": "   "},
             tool_msg,
             {"role": "tool", "tool_call_id": "call_1", "content": "result"},
             {"role": "assistant", "content": "<think>only thoughts</think>"},
             {"role": "user", "content": "next"}],
            [{"role": "system", "content": "sys"},
             {"role": "user", "content": "q"},
             tool_msg,
             {"role": "tool", "tool_call_id": "call_1", "content": "result"},
             {"role": "user", "content": "next"}])

    @ck("phase1.preprocess.order_drop_then_merge")
    def _():
        pre([{"role": "user", "content": "q1"},
             {"role": "assistant", "content": " "},
             {"role": "user", "content": "q2"}],
            [{"role": "user", "content": "q1\n\nq2"}])

    @ck("phase1.preprocess.merge_user_merge")
    def _():
        pre([{"role": "system", "content": "s"},
             {"role": "user", "content": "a"},
             {"role": "user", "content": "b"},
             {"role": "user", "content": "c"},
             {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "d"}],
            [{"role": "system", "content": "s"},
             {"role": "user", "content": "a\n\nb\n\nc"},
             {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "d"}])

    IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                              "detail": "low"}}

    @ck("phase1.preprocess.merge_parts_text_after")
    def _():
        pre([{"role": "user", "content": [{"type": "text", "text": "look at this"}, IMG]},
             {"role": "user", "content": "and describe it"}],
            [{"role": "user", "content": [{"type": "text", "text": "look at this"}, IMG,
                                          {"type": "text", "text": "and describe it"}]}])

    @ck("phase1.preprocess.merge_parts_text_before")
    def _():
        pre([{"role": "user", "content": "first"},
             {"role": "user", "content": [IMG, {"type": "text", "text": "second"}]}],
            [{"role": "user", "content": [{"type": "text", "text": "first"}, IMG,
                                          {"type": "text", "text": "second"}]}])

    @ck("phase1.preprocess.parts_text_stripped_image_kept")
    def _():
        pre([{"role": "user", "content": [{"type": "text", "text": "  padded  "}, IMG]}],
            [{"role": "user", "content": [{"type": "text", "text": "padded"}, IMG]}])

    @ck("phase1.passthrough.unknown_request_fields")
    def _():
        extra = {"top_k": 40, "x_custom": {"a": [1, 2], "b": None},
                 "logit_bias": {"50256": -100}, "seed": 7, "temperature": 0.25}
        r = gw.chat("m-plain", [{"role": "user", "content": "hi"}], **extra)
        expect_status(r, 200)
        got = mA.last().json
        for k, v in extra.items():
            eq(got.get(k), v, "upstream field %s" % k)

    @ck("phase1.passthrough.unknown_message_fields")
    def _():
        pre([{"role": "user", "content": "hi", "name": "alice", "x_meta": {"k": "v"}}],
            [{"role": "user", "content": "hi", "name": "alice", "x_meta": {"k": "v"}}])

    # ---------------------------------------------------------------- parameters
    def clamp_body():
        return mC.last().json

    @ck("phase1.params.max_tokens_clamped")
    def _():
        expect_status(gw.chat("m-clamp", max_tokens=500), 200)
        eq(clamp_body().get("max_tokens"), 100, "upstream max_tokens")

    @ck("phase1.params.max_completion_tokens_clamped")
    def _():
        expect_status(gw.chat("m-clamp", max_completion_tokens=4096), 200)
        eq(clamp_body().get("max_completion_tokens"), 100, "upstream max_completion_tokens")

    @ck("phase1.params.max_tokens_not_raised_or_added")
    def _():
        expect_status(gw.chat("m-clamp", max_tokens=50), 200)
        eq(clamp_body().get("max_tokens"), 50, "upstream max_tokens below the clamp")
        expect_status(gw.chat("m-clamp"), 200)
        ensure("max_tokens" not in clamp_body(), "max_tokens added: %s" % clamp_body())
        expect_status(gw.chat("m-clamp", max_tokens=100), 200)
        eq(clamp_body().get("max_tokens"), 100, "upstream max_tokens equal to the clamp")

    @ck("phase1.params.clamp_on_completions")
    def _():
        expect_status(gw.post("/v1/completions", {"model": "m-clamp", "prompt": "p",
                                                  "max_tokens": 999}), 200)
        eq(mC.last("/completions").json.get("max_tokens"), 100, "upstream max_tokens")

    @ck("phase1.params.embeddings_and_rerank_get_no_stops_or_clamp")
    def _():
        # m-clamp's client has max_tokens 100 and two stops: neither is for
        # requests that generate no text (OpenAI refuses an embeddings stop).
        expect_status(gw.post("/v1/embeddings", {"model": "m-clamp", "input": "x"}), 200)
        eq(mC.last("/embeddings").json, {"model": "real-model", "input": "x"}, "upstream embeddings body")
        expect_status(gw.post("/v1/rerank", {"model": "m-clamp", "query": "q", "documents": ["a"],
                                             "max_tokens": 999}), 200)
        eq(mC.last("/rerank").json, {"model": "real-model", "query": "q", "documents": ["a"],
                                     "max_tokens": 999}, "upstream rerank body")

    @ck("phase1.params.no_clamp_when_zero")
    def _():
        expect_status(gw.chat("m-plain", max_tokens=100000), 200)
        eq(mA.last().json.get("max_tokens"), 100000, "upstream max_tokens")

    @ck("phase1.params.stop_string_merged")
    def _():
        expect_status(gw.chat("m-clamp", stop="foo"), 200)
        eq(clamp_body().get("stop"), ["foo", "<END>", "###"], "upstream stop")

    @ck("phase1.params.stop_list_dedup_order")
    def _():
        expect_status(gw.chat("m-clamp", stop=["###", "bar", "###"]), 200)
        eq(clamp_body().get("stop"), ["###", "bar", "<END>"], "upstream stop")

    @ck("phase1.params.stop_client_only")
    def _():
        expect_status(gw.chat("m-clamp"), 200)
        eq(clamp_body().get("stop"), ["<END>", "###"], "upstream stop")

    @ck("phase1.params.stop_absent_when_neither")
    def _():
        expect_status(gw.chat("m-plain"), 200)
        ensure("stop" not in mA.last().json, "stop added: %s" % mA.last().json.get("stop"))

    @ck("phase1.params.stop_caller_only_kept")
    def _():
        expect_status(gw.chat("m-plain", stop=["x", "y"]), 200)
        eq(mA.last().json.get("stop"), ["x", "y"], "upstream stop")

    @ck("phase1.params.model_rewritten")
    def _():
        expect_status(gw.chat("m-clamp"), 200)
        eq(clamp_body().get("model"), "real-model", "upstream model (chat)")
        expect_status(gw.post("/v1/embeddings", {"model": "m-clamp", "input": "x"}), 200)
        eq(mC.last("/embeddings").json.get("model"), "real-model", "upstream model (embeddings)")

    # ---------------------------------------------------------------- special_prefix
    @ck("phase1.prefix.chat_every_choice")
    def _():
        mP.always(lambda rec: Json(chat_answer(rec.json["model"], ["one", "two"])))
        r = gw.chat("m-prefix", n=2)
        expect_status(r, 200)
        got = [c["message"]["content"] for c in r.json["choices"]]
        eq(got, ["PFX: one", "PFX: two"], "choice contents")
        eq(r.json.get("usage"), USAGE, "usage relayed")

    @ck("phase1.prefix.answer_text_keeps_every_character")
    def _():
        text = 'said "ok" \x1b[0m ' + FLAG + " \x01"
        mP.always(lambda rec: Json(chat_answer(rec.json["model"], [text])))
        r = gw.chat("m-prefix")
        expect_status(r, 200)
        eq(r.json["choices"][0]["message"]["content"], "PFX: " + text, "content")

    @ck("phase1.prefix.completions_every_choice")
    def _():
        mP.always(lambda rec: Json(completion_answer(rec.json["model"], ["alpha", "beta"])))
        r = gw.post("/v1/completions", {"model": "m-prefix", "prompt": "p", "n": 2})
        expect_status(r, 200)
        eq([c["text"] for c in r.json["choices"]], ["PFX: alpha", "PFX: beta"], "texts")

    @ck("phase1.prefix.stream_first_content_chunk_once")
    def _():
        s = gw.stream_chat("m-prefix").read_all()
        expect_status(s, 200)
        eq(s.content(), "PFX: Hello from P", "streamed content")
        firsts = [c for c in s.chunks() if c.get("choices") and
                  (c["choices"][0].get("delta") or {}).get("content")]
        ensure(firsts and firsts[0]["choices"][0]["delta"]["content"] == "PFX: Hello",
               "first content chunk: %s" % (firsts[:1],))
        eq(s.raw.count(b"PFX: "), 1, "prefix occurrences in the stream")
        ensure(s.done, "no [DONE]")

    @ck("phase1.prefix.stream_each_choice")
    def _():
        mP.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["a", "b"], n=2)))
        s = gw.stream_chat("m-prefix", n=2).read_all()
        expect_status(s, 200)
        eq(s.content(0), "PFX: a0b0", "choice 0")
        eq(s.content(1), "PFX: a1b1", "choice 1")

    @ck("phase1.prefix.stream_completions")
    def _():
        s = gw.stream("/v1/completions", {"model": "m-prefix", "prompt": "p"}).read_all()
        expect_status(s, 200)
        eq(s.content(field="text"), "PFX: Hello from P", "streamed text")

    # ---------------------------------------------------------------- keys and headers
    def auth_seen(model, caller=CALLER_KEY):
        r = gw.chat(model, headers=hdr(key=caller) if caller else None)
        expect_status(r, 200)
        return mK.last().headers.get("authorization")

    @ck("phase1.keys.config_mode_sends_api_key")
    def _():
        eq(auth_seen("m-keycfg"), "Bearer sk-config-123", "upstream Authorization")

    @ck("phase1.keys.passthrough_sends_caller_key")
    def _():
        eq(auth_seen("m-keypass"), "Bearer " + CALLER_KEY, "upstream Authorization")

    @ck("phase1.keys.empty_api_key_uses_caller_key")
    def _():
        eq(auth_seen("m-keyempty"), "Bearer " + CALLER_KEY, "upstream Authorization")

    @ck("phase1.keys.env_substitution")
    def _():
        eq(auth_seen("m-keyenv"), "Bearer " + ENV_KEY, "upstream Authorization")

    @ck("phase1.keys.client_headers_sent")
    def _():
        expect_status(gw.chat("m-hdr"), 200)
        h = mK.last().headers
        eq(h.get("x-custom-one"), "v1", "upstream X-Custom-One")
        eq(h.get("x-team"), "e2e", "upstream X-Team")

    # ---------------------------------------------------------------- errors
    def bad(path, body, **kw):
        r = gw.post(path, body, hdr(rid("bad")))
        expect_error(r, 400, "invalid_request_error")
        ensure(not mA.calls(), "the upstream was called for a bad request")
        return r

    msgs = [{"role": "user", "content": "hi"}]
    cases400 = [
        ("not_json", "/v1/chat/completions", b"{not json"),
        ("array_body", "/v1/chat/completions", b"[1,2,3]"),
        ("string_body", "/v1/chat/completions", b"\"m-plain\""),
        ("empty_body", "/v1/chat/completions", b""),
        ("model_not_string", "/v1/chat/completions", {"model": 5, "messages": msgs}),
        ("stream_not_bool", "/v1/chat/completions", {"model": "m-plain", "messages": msgs, "stream": "yes"}),
        ("messages_not_array", "/v1/chat/completions", {"model": "m-plain", "messages": "hi"}),
        ("max_tokens_float", "/v1/chat/completions", {"model": "m-plain", "messages": msgs, "max_tokens": 1.5}),
        ("max_tokens_string", "/v1/chat/completions", {"model": "m-plain", "messages": msgs, "max_tokens": "10"}),
        ("missing_model", "/v1/chat/completions", {"messages": msgs}),
        ("missing_messages", "/v1/chat/completions", {"model": "m-plain"}),
        ("empty_messages", "/v1/chat/completions", {"model": "m-plain", "messages": []}),
        ("nothing_left_after_preprocess", "/v1/chat/completions", {"model": "m-plain", "messages": [
            {"role": "user", "content": "   "}, {"role": "assistant", "content": "<think>x</think>"}]}),
        ("completions_missing_prompt", "/v1/completions", {"model": "m-plain"}),
        ("completions_missing_model", "/v1/completions", {"prompt": "p"}),
        ("completions_max_tokens_float", "/v1/completions", {"model": "m-plain", "prompt": "p", "max_tokens": 2.5}),
        ("embeddings_missing_input", "/v1/embeddings", {"model": "m-plain"}),
        ("embeddings_model_not_string", "/v1/embeddings", {"model": ["m-plain"], "input": "x"}),
        ("rerank_missing_query", "/v1/rerank", {"model": "m-plain", "documents": ["a"]}),
        ("rerank_missing_documents", "/v1/rerank", {"model": "m-plain", "query": "q"}),
        ("rerank_root_missing_documents", "/rerank", {"model": "m-plain", "query": "q"}),
    ]
    for name, path, body in cases400:
        ck("phase1.errors.400_" + name)(lambda path=path, body=body: bad(path, body))

    @ck("phase1.errors.404_unknown_model")
    def _():
        expect_error(gw.chat("no-such-model"), 404, "invalid_request_error", "model_not_found")
        expect_error(gw.post("/v1/embeddings", {"model": "nope", "input": "x"}), 404,
                     "invalid_request_error", "model_not_found")

    @ck("phase1.errors.404_unknown_path")
    def _():
        expect_error(gw.get("/v1/nothing-here"), 404, "invalid_request_error", "not_found")
        expect_error(gw.post("/v2/chat/completions", {"model": "m-plain"}), 404,
                     "invalid_request_error", "not_found")

    @ck("phase1.errors.405_wrong_method")
    def _():
        expect_error(gw.get("/v1/chat/completions"), 405, "invalid_request_error")
        expect_error(gw.get("/v1/embeddings"), 405, "invalid_request_error")
        expect_error(gw.req("DELETE", "/rerank"), 405, "invalid_request_error")
        expect_error(gw.post("/v1/models", {}), 405, "invalid_request_error")

    @ck("phase1.errors.413_body_too_large")
    def _():
        gw.ensure()
        big = json.dumps({"model": "m-plain", "messages": [
            {"role": "user", "content": "x" * 100000}]}).encode()
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nX-Request-Id: big-1\r\n"
               b"Content-Length: %d\r\n\r\n" % len(big)) + big
        r = raw_exchange(gw.port, req)
        expect_error(r, 413, "invalid_request_error", "request_too_large")
        ensure(not mA.calls(), "the upstream was called for a too large body")

    @ck("phase1.errors.431_headers_too_large")
    def _():
        gw.ensure()
        req = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"h" * 200000 +
               b"\r\n\r\n")
        r = raw_exchange(gw.port, req)
        expect_error(r, 431, "invalid_request_error")

    def both_4xx(status, body):
        for m in (mE1, mE2):
            m.reset()
            m.always(Json(body, status))
        r = gw.chat("m-4xx", temperature=9)
        hits = len(mE1.calls()) + len(mE2.calls())
        eq(hits, 1, "upstream attempts (no failover on %d)" % status)
        served = mE1 if mE1.calls() else mE2
        eq(r.status, status, "status")
        eq(r.body, served.last().answer, "body passed unchanged")
        expect_upstream(r, "p4a" if served is mE1 else "p4b")
        return r

    @ck("phase1.errors.upstream_400_passed_unchanged")
    def _():
        both_4xx(400, {"error": {"message": "temperature out of range",
                                 "type": "BadRequestError", "param": "temperature",
                                 "code": 40001}, "extra": [1, 2]})

    @ck("phase1.errors.upstream_404_and_422_passed_unchanged")
    def _():
        both_4xx(404, {"detail": "model does not exist upstream"})
        both_4xx(422, {"detail": [{"loc": ["body", "x"], "msg": "bad"}]})

    # ---------------------------------------------------------------- streams
    @ck("phase1.stream.basic_passthrough")
    def _():
        req_id = rid("s")
        s = gw.stream_chat("m-plain", headers=hdr(req_id)).read_all()
        expect_status(s, 200)
        ensure((s.header("content-type") or "").startswith("text/event-stream"),
               "Content-Type %r" % s.header("content-type"))
        eq(s.header("X-Gptapi-Upstream"), "plain", "X-Gptapi-Upstream")
        eq(s.header("X-Request-Id"), req_id, "X-Request-Id")
        eq(s.content(), "Hello from A", "content")
        ensure(s.done and s.datas[-1] == "[DONE]", "stream does not end with [DONE]: %s" % s.datas[-2:])
        sent = chat_chunks("m-plain", ["Hello", " from", " A"])
        eq(s.chunks(), sent, "chunks relayed untouched")

    @ck("phase1.stream.incremental_delivery")
    def _():
        mA.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["a", "b", "c", "d", "e"]),
                                  interval=0.3))
        s = gw.stream_chat("m-plain", timeout=10)
        expect_status(s, 200)
        first = s.next_event()
        ensure(first is not None, "no event")
        s.read_all()
        sent = mA.last().sent
        ensure(len(sent) >= 7, "mock sent %d chunks" % len(sent))
        lag = first[0] - sent[0]
        ensure(lag < 0.25, "first chunk reached the caller %.3fs after the upstream sent it" % lag)
        ahead = sent[-1] - first[0]
        ensure(ahead > 1.2, "first chunk arrived only %.3fs before the last was sent (buffering)" % ahead)
        eq(s.content(), "abcde", "content")
        # every chunk arrives close to when it was sent
        for i, (t, _) in enumerate(s.events[:len(sent)]):
            ensure(t - sent[i] < 0.25, "chunk %d arrived %.3fs after it was sent" % (i, t - sent[i]))

    @ck("phase1.stream.usage_hidden_when_gateway_asked")
    def _():
        s = gw.stream_chat("m-plain").read_all()
        expect_status(s, 200)
        so = mA.last().json.get("stream_options")
        eq(so, {"include_usage": True}, "upstream stream_options")
        usage_only = [c for c in s.chunks() if c.get("choices") == [] and "usage" in c]
        ensure(not usage_only, "the usage-only chunk reached the caller: %s" % usage_only)
        ensure(s.done, "no [DONE]")
        eq(s.content(), "Hello from A", "content")

    @ck("phase1.stream.usage_passed_when_caller_asked")
    def _():
        s = gw.stream_chat("m-plain", stream_options={"include_usage": True}).read_all()
        expect_status(s, 200)
        eq(mA.last().json.get("stream_options"), {"include_usage": True}, "upstream stream_options")
        usage_only = [c for c in s.chunks() if c.get("choices") == [] and "usage" in c]
        eq(len(usage_only), 1, "usage-only chunks relayed")
        eq(usage_only[0]["usage"], USAGE, "usage")
        ensure(s.done, "no [DONE]")

    @ck("phase1.stream.usage_not_asked_when_stream_usage_off")
    def _():
        s = gw.stream_chat("m-nousage").read_all()
        expect_status(s, 200)
        ensure("stream_options" not in mA.last().json,
               "stream_options added: %s" % mA.last().json.get("stream_options"))

    @ck("phase1.stream.model_name_restored")
    def _():
        s = gw.stream_chat("m-clamp").read_all()
        expect_status(s, 200)
        eq(mC.last().json.get("model"), "real-model", "upstream model")
        models = {c.get("model") for c in s.chunks()}
        eq(models, {"m-clamp"}, "model names in the chunks")

    @ck("phase1.stream.completions")
    def _():
        s = gw.stream("/v1/completions", {"model": "m-plain", "prompt": "p"}).read_all()
        expect_status(s, 200)
        eq(s.content(field="text"), "Hello from A", "text")
        ensure(s.done, "no [DONE]")
        eq(s.header("X-Gptapi-Upstream"), "plain", "X-Gptapi-Upstream")

    @ck("phase1.stream.failover_on_500_before_first_byte")
    def _():
        mSF1.always(Fail(500))
        s = gw.stream_chat("m-sfail").read_all()
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "sfb", "X-Gptapi-Upstream")
        eq(s.content(), "Hello from SF2", "content")
        eq(len(mSF1.calls()), 1, "attempts on the failing upstream")
        ensure(s.done, "no [DONE]")

    @ck("phase1.stream.json_answer_is_the_answer")
    def _():
        # An upstream that ignores "stream" and answers one JSON answer has
        # answered: relayed as a non-stream answer, not failed over.
        mSF1.always(lambda rec: Json(chat_answer(rec.json["model"], ["whole"])))
        s = gw.stream_chat("m-sfail").read_all()
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "sfa", "X-Gptapi-Upstream")
        ensure((s.header("content-type") or "").startswith("application/json"),
               "Content-Type %r" % s.header("content-type"))
        eq(json.loads(s.raw)["choices"][0]["message"]["content"], "whole", "answer")
        eq(len(mSF2.calls()), 0, "attempts on the next upstream")

    @ck("phase1.stream.failover_on_silence_past_first_byte_timeout")
    def _():
        mSF1.always(Stall(4))
        t0 = time.monotonic()
        s = gw.stream_chat("m-sfail", timeout=10).read_all()
        took = time.monotonic() - t0
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "sfb", "X-Gptapi-Upstream")
        eq(s.content(), "Hello from SF2", "content")
        ensure(0.8 < took < 3.0, "took %.2fs with first_byte_timeout 1s" % took)

    @ck("phase1.stream.failover_on_silence_after_headers")
    def _():
        mSF1.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["x"]), head_delay=4))
        t0 = time.monotonic()
        s = gw.stream_chat("m-sfail", timeout=10).read_all()
        took = time.monotonic() - t0
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "sfb", "X-Gptapi-Upstream")
        eq(s.content(), "Hello from SF2", "content")
        ensure(took < 3.0, "took %.2fs with first_byte_timeout 1s" % took)

    @ck("phase1.stream.failover_on_close_before_first_event")
    def _():
        mSF1.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["x"]), break_after=0))
        s = gw.stream_chat("m-sfail", timeout=10).read_all()
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "sfb", "X-Gptapi-Upstream")
        eq(s.content(), "Hello from SF2", "content")
        ensure(not s.errors(), "error events: %s" % s.errors())

    @ck("phase1.stream.all_failed_before_first_byte_is_json_error")
    def _():
        mSF1.always(Fail(500))
        mSF2.always(Fail(503))
        s = gw.stream_chat("m-sfail")
        body = s.body()
        eq(s.status, 502, "status")
        j = json.loads(body)
        eq(j["error"]["code"], "all_upstreams_failed", "code")
        eq(j["error"]["tried"], ["sfa/m-sfail", "sfb/m-sfail"], "tried")

    def broken_stream(mock, model, reset):
        mock.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["one", " two", " three", " four"]),
                                    break_after=3, interval=0.05, reset=reset))
        s = gw.stream_chat(model, timeout=10).read_all()
        expect_status(s, 200)
        ensure(s.ended, "stream did not end")
        ensure(not s.done, "[DONE] sent after an upstream break")
        eq(s.content(), "one two", "content before the break")
        errs = s.errors()
        eq(len(errs), 1, "error events after the upstream closed mid-stream")
        ensure(s.chunks()[-1] == errs[0], "error event is not the last")
        ensure(isinstance(errs[0]["error"].get("message"), str) and errs[0]["error"]["message"],
               "error event without message: %s" % errs[0])

    @ck("phase1.stream.break_midstream_error_event_no_done")
    def _():
        broken_stream(mBRK, "m-brk", reset=False)

    @ck("phase1.stream.break_midstream_reset_error_event_no_done")
    def _():
        broken_stream(mBRK2, "m-brk2", reset=True)

    @ck("phase1.stream.upstream_usable_after_break")
    def _():
        for reset in (False, True):
            mBRK3.reset()
            mBRK3.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["one", " two", " three"]),
                                         break_after=3, reset=reset))
            gw.stream_chat("m-brk3", timeout=10).read_all()
            mBRK3.always(None)
            time.sleep(0.3)
            r = gw.chat("m-brk3")
            if r.status != 200:
                raise CheckFail("after a %s break the next request got %d: %s" % (
                    "RST" if reset else "FIN", r.status, short(r.body)))
            s = gw.stream_chat("m-brk3").read_all()
            expect_status(s, 200)

    @ck("phase1.proxy.upstream_idle_close_survived")
    def _():
        mIDL.always(Json(chat_answer("m-idl", "x"), close_idle=0.1))
        expect_status(gw.chat("m-idl"), 200)
        time.sleep(0.5)
        r = gw.chat("m-idl")
        if r.status != 200:
            raise CheckFail("after the upstream closed an idle kept-alive connection the next "
                            "request got %d: %s" % (r.status, short(r.body)))

    @ck("phase1.stream.idle_timeout_error_event")
    def _():
        mA.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["one", " two", " three"]),
                                  pauses={3: 5.0}))
        s = gw.stream_chat("m-plain", timeout=10).read_all()
        expect_status(s, 200)
        ensure(not s.done, "[DONE] after an idle timeout")
        errs = s.errors()
        eq(len(errs), 1, "error events")
        eq(s.content(), "one two", "content before the silence")
        last_chunk_t = s.events[-2][0]
        gap = s.events[-1][0] - last_chunk_t
        ensure(0.7 < gap < 3.0, "error event %.2fs after the last chunk (stream_idle_timeout 1s)" % gap)

    @ck("phase1.stream.caller_disconnect_cancels_upstream")
    def _():
        mA.always(lambda rec: Sse(chat_chunks(rec.json["model"], ["tok"] * 200), interval=0.05))
        s = gw.stream_chat("m-plain", timeout=10)
        expect_status(s, 200)
        for _ in range(3):
            ensure(s.next_event() is not None, "stream ended early")
        s.close()
        rec = mA.last()
        deadline = time.monotonic() + 3
        while rec.write_failed_at is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ensure(rec.write_failed_at is not None,
               "the upstream kept streaming for 3s after the caller left (%d chunks sent)" % len(rec.sent))
        delay = rec.write_failed_at - s.closed_at
        ensure(delay < 1.0, "upstream write failed %.2fs after the caller left" % delay)
        return "upstream saw the close after %.3fs" % delay

    @ck("phase1.stream.200_concurrent")
    def _():
        pieces = ["w%d " % i for i in range(10)]
        mA.always(lambda rec: Sse(chat_chunks(rec.json["model"], pieces), interval=0.02))
        want = "".join(pieces)
        gw.ensure()

        def one(i, state):
            s = Stream(gw.port, "/v1/chat/completions",
                       {"model": "m-plain", "stream": True,
                        "messages": [{"role": "user", "content": "c%d" % i}]},
                       hdr(rid("c200")), timeout=30)
            s.read_all()
            s.close()
            return (s.status, s.content(), s.done)
        res = parallel(200, range(200), one, timeout=60)
        bad = [r for r in res if not (isinstance(r, tuple) and r == (200, want, True))]
        ensure(not bad, "%d of 200 streams wrong, e.g. %s" % (len(bad), short(bad[:3])))
        eq(len(mA.calls()), 200, "upstream streams")

    # ---------------------------------------------------------------- metrics
    @ck("phase1.metrics.served_and_counted")
    def _():
        expect_status(gw.chat("m-plain"), 200)
        r = gw.get("/metrics")
        expect_status(r, 200)
        text = r.body.decode()
        vals = metric_values(text, "gptapi_requests_total")
        hit = [k for k in vals if 'model="m-plain"' in k and 'upstream="plain"' in k
               and 'status="200"' in k]
        ensure(hit, "no gptapi_requests_total sample for m-plain/plain/200: %s" % short(list(vals)))
        for name in ("gptapi_upstream_latency_seconds", "gptapi_ttft_seconds",
                     "gptapi_active_streams", "gptapi_logsink_queue_depth",
                     "gptapi_logsink_written_total"):
            ensure(name in text, "metric %s missing" % name)


# ====================================================================== preprocess off

def preprocess_off_group(R):
    mA = R.mock("A")
    gw = R.gateway("preprocess-off", {
        "preprocess": {"strip": False, "strip_think": False, "drop_empty": False,
                       "merge_user": "off"},
        "openai_clients": [client("plain", mA, ["m-plain"])]})

    def same(messages):
        r = gw.chat("m-plain", messages)
        expect_status(r, 200)
        eq(messages_of(mA), messages, "messages as the upstream saw them")

    @R.check("phase1.preprocess_off.strip")
    def _():
        same([{"role": "system", "content": "  sys  "},
              {"role": "user", "content": "\n hello \t"}])

    @R.check("phase1.preprocess_off.strip_think")
    def _():
        same([{"role": "user", "content": "q"},
              {"role": "assistant", "content": "<think>r</think>ans <tool_call>x</tool_call>"},
              {"role": "user", "content": "q2"}])

    @R.check("phase1.preprocess_off.drop_empty")
    def _():
        same([{"role": "user", "content": "q"},
              {"role": "assistant", "content": ""},
              {"role": "assistant", "content": "real"},
              {"role": "user", "content": "q2"}])

    @R.check("phase1.preprocess_off.merge_user")
    def _():
        same([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def merge_last_group(R):
    mA = R.mock("A")
    gw = R.gateway("merge-last", {
        "preprocess": {"merge_user": "last"},
        "openai_clients": [client("plain", mA, ["m-plain"])]})

    @R.check("phase1.preprocess.merge_user_last")
    def _():
        r = gw.chat("m-plain", [{"role": "system", "content": "s"},
                                {"role": "user", "content": "a"},
                                {"role": "user", "content": " b "},
                                {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": "c"},
                                {"role": "user", "content": "d"}])
        expect_status(r, 200)
        eq(messages_of(mA), [{"role": "system", "content": "s"},
                             {"role": "user", "content": "b"},
                             {"role": "assistant", "content": "ok"},
                             {"role": "user", "content": "d"}], "messages")


# ====================================================================== auth

def auth_group(R):
    mA = R.mock("A", ["m-plain"])
    gw = R.gateway("auth", {
        "auth": {"keys": ["e2e-key-one", "e2e-key-two"]},
        "openai_clients": [client("plain", mA, ["m-plain"])]})

    @R.check("phase1.auth.missing_key_401")
    def _():
        expect_error(gw.chat("m-plain"), 401, "authentication_error")
        ensure(not mA.calls(), "upstream called without a key")

    @R.check("phase1.auth.wrong_key_401")
    def _():
        expect_error(gw.chat("m-plain", headers=hdr(key="e2e-key-three")), 401,
                     "authentication_error")
        expect_error(gw.chat("m-plain", headers={"Authorization": "e2e-key-one"}), 401,
                     "authentication_error")
        ensure(not mA.calls(), "upstream called with a wrong key")

    @R.check("phase1.auth.right_keys_200")
    def _():
        for k in ("e2e-key-one", "e2e-key-two"):
            r = gw.chat("m-plain", headers=hdr(key=k))
            expect_status(r, 200)
            expect_upstream(r, "plain")

    @R.check("phase1.auth.guards_every_api_path")
    def _():
        for method, path, body in (
                ("GET", "/v1/models", None),
                ("POST", "/v1/completions", {"model": "m-plain", "prompt": "p"}),
                ("POST", "/v1/embeddings", {"model": "m-plain", "input": "x"}),
                ("POST", "/v1/rerank", {"model": "m-plain", "query": "q", "documents": ["d"]}),
                ("POST", "/rerank", {"model": "m-plain", "query": "q", "documents": ["d"]})):
            r = gw.req(method, path, body)
            if r.status != 401:
                raise CheckFail("%s %s without a key: status %d" % (method, path, r.status))
            expect_error(r, 401, "authentication_error")

    @R.check("phase1.auth.health_and_metrics_open")
    def _():
        expect_status(gw.get("/health"), 200)
        r = gw.get("/metrics")
        expect_status(r, 200)
        ensure(b"gptapi_" in r.body, "metrics body has no gptapi_ metric")


# ====================================================================== reload

def reload_group(R):
    mA = R.mock("A", ["m-plain"])
    mB = R.mock("B", ["m-new"])
    base_clients = [client("plain", mA, ["m-plain"])]
    gw = R.gateway("reload", {"openai_clients": base_clients})

    def reloads():
        r = gw.get("/metrics")
        return metric_values(r.body.decode(), "gptapi_config_reloads_total")

    @R.check("phase1.reload.file_change_applied")
    def _():
        expect_status(gw.chat("m-plain"), 200)
        expect_error(gw.chat("m-new"), 404, "invalid_request_error", "model_not_found")
        cfg = dict(gw.cfg)
        cfg["openai_clients"] = base_clients + [client("newc", mB, ["m-new"])]
        t0 = time.monotonic()
        gw.write_config(cfg)
        while True:
            r = gw.chat("m-new")
            if r.status == 200:
                break
            if time.monotonic() - t0 > 3:
                raise CheckFail("new client not served 3s after the config file changed (status %d)" % r.status)
            time.sleep(0.1)
        took = time.monotonic() - t0
        expect_upstream(r, "newc")
        ensure(took <= 2.0, "reload took %.2fs (contract: within a second)" % took)
        return "applied after %.2fs" % took

    @R.check("phase1.reload.invalid_config_refused_old_kept")
    def _():
        good = dict(gw.cfg)
        bad = json.loads(json.dumps(good))
        bad["openai_clients"] = base_clients + [client("broken", mB, ["m-broken"], match="regex")]
        gw.write_config(bad)
        time.sleep(1.5)
        ensure(gw.running(), "gptapi exited on an invalid reload")
        expect_status(gw.chat("m-plain"), 200)
        expect_error(gw.chat("m-broken"), 404, "invalid_request_error", "model_not_found")
        logtxt = open(gw.log_path, encoding="utf-8", errors="replace").read()
        ensure("openai_clients[1].model_match.type" in logtxt,
               "the refused reload is not logged with its key path")
        gw.write_config(good)
        time.sleep(1.2)

    @R.check("phase1.reload.inflight_stream_finishes_on_old_config")
    def _():
        good = json.loads(json.dumps(gw.cfg))
        pieces = ["s%d " % i for i in range(8)]
        mA.always(lambda rec: Sse(chat_chunks(rec.json["model"], pieces), interval=0.25))
        s = gw.stream_chat("m-plain", timeout=10)
        expect_status(s, 200)
        ensure(s.next_event() is not None, "no first event")
        cfg = json.loads(json.dumps(good))
        cfg["openai_clients"] = [client("newc", mB, ["m-new"])]
        gw.write_config(cfg)
        deadline = time.monotonic() + 3
        while gw.chat("m-plain").status != 404:
            if time.monotonic() > deadline:
                raise CheckFail("config without m-plain not applied within 3s")
            time.sleep(0.1)
        s.read_all()
        eq(s.content(), "".join(pieces), "content of the stream that ran across the reload")
        ensure(s.done, "stream cut by the reload")
        gw.write_config(good)
        deadline = time.monotonic() + 3
        while gw.chat("m-plain").status != 200:
            if time.monotonic() > deadline:
                raise CheckFail("old config not restored within 3s")
            time.sleep(0.1)

    @R.check("phase1.reload.sighup")
    def _():
        import signal as _signal
        gw.ensure()
        before = reloads()
        gw.signal(_signal.SIGHUP)
        time.sleep(1.0)
        ensure(gw.running(), "gptapi exited on SIGHUP")
        expect_status(gw.chat("m-plain"), 200)
        after = reloads()
        ok = [k for k in after if 'result="ok"' in k]
        ensure(ok and after[ok[0]] > before.get(ok[0], 0),
               "gptapi_config_reloads_total{result=\"ok\"} did not grow after SIGHUP: %s -> %s"
               % (before, after))

    @R.check("phase1.metrics.config_reloads_counted")
    def _():
        gw.ensure()
        before = reloads()
        good = json.loads(json.dumps(gw.cfg))
        cfg = json.loads(json.dumps(good))
        cfg["openai_clients"] = base_clients + [client("cnt", mB, ["m-cnt"])]
        gw.write_config(cfg)
        time.sleep(1.5)
        bad = json.loads(json.dumps(good))
        bad["check_config"]["cooldown"] = "-1s"
        gw.write_config(bad)
        time.sleep(1.5)
        gw.write_config(good)
        time.sleep(1.2)
        after = reloads()

        def grew(result):
            k = [x for x in after if 'result="%s"' % result in x]
            return k and after[k[0]] > before.get(k[0], 0)
        ensure(grew("ok"), "result=\"ok\" did not grow after a valid change: %s -> %s" % (before, after))
        ensure(grew("error"), "result=\"error\" did not grow after an invalid change: %s -> %s" % (before, after))

    @R.check("phase1.metrics.all_contract_names")
    def _():
        expect_status(gw.chat("m-plain"), 200)
        s = gw.stream_chat("m-plain").read_all()
        expect_status(s, 200)
        text = gw.get("/metrics").body.decode()
        missing = [n for n in ("gptapi_requests_total", "gptapi_upstream_latency_seconds",
                               "gptapi_ttft_seconds", "gptapi_active_streams",
                               "gptapi_logsink_queue_depth", "gptapi_logsink_written_total",
                               "gptapi_logsink_spilled_total", "gptapi_config_reloads_total",
                               "gptapi_upstream_cooldown") if n not in text]
        ensure(not missing, "metrics missing: %s" % missing)
        ensure(any("result=" in k for k in metric_values(text, "gptapi_config_reloads_total")),
               "gptapi_config_reloads_total has no result label")


# ====================================================================== log file

def log_group(R):
    mL = R.mock("L", ["m-never"])
    mL.models_action = Fail(500)
    from e2e_mock import refused_url
    gw = R.gateway("logfile", {
        "server": {"idle_timeout": "1s"},
        "log": {"level": "info", "format": "json", "file": "LOGFILE"},
        "openai_clients": [client("lg", mL, ["m-log"]),
                           client("rf", refused_url(), ["m-rf"])]})
    logfile = os.path.join(gw.dir, "logs", "gptapi.json.log")
    gw.cfg["log"]["file"] = logfile
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    gw.write_config()

    @R.check("phase1.log.file_json_lines_with_error_text")
    def _():
        r = gw.chat("no-such-model-for-log")
        e = expect_error(r, 404, "invalid_request_error", "model_not_found")
        deadline = time.monotonic() + 3
        text = ""
        while time.monotonic() < deadline:
            text = open(logfile, encoding="utf-8", errors="replace").read() if os.path.exists(logfile) else ""
            if e["message"] in text or json.dumps(e["message"])[1:-1] in text:
                break
            time.sleep(0.1)
        ensure(text, "log.file %s is empty or missing" % logfile)
        bad = [ln for ln in text.splitlines() if ln.strip() and not _is_json(ln)]
        ensure(not bad, "log.format json but lines are not JSON: %s" % short(bad[:2]))
        ensure(e["message"] in text or json.dumps(e["message"])[1:-1] in text,
               "the error message %r is not in the log file" % e["message"])

    @R.check("phase1.server.idle_timeout_closes_keepalive")
    def _():
        gw.ensure()
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            f = s.makefile("rb")
            line = f.readline()
            ensure(b" 200 " in line, "status line %r" % line)
            n = 0
            while True:
                h = f.readline()
                if h.lower().startswith(b"content-length:"):
                    n = int(h.split(b":")[1])
                if h in (b"\r\n", b""):
                    break
            f.read(n)
            t0 = time.monotonic()
            try:
                rest = s.recv(1)
            except (ConnectionResetError, socket.timeout) as e:
                rest = e
            took = time.monotonic() - t0
            ensure(rest == b"" or isinstance(rest, ConnectionResetError),
                   "idle kept-alive connection not closed within 5s (%r)" % (rest,))
            ensure(0.5 < took < 3.5, "closed after %.2fs with idle_timeout 1s" % took)
        finally:
            s.close()

    @R.check("phase1.models.all_upstreams_failing_still_200")
    def _():
        mL.models_action = Fail(500)
        r = gw.get("/v1/models", timeout=10)
        expect_status(r, 200)
        eq((r.json or {}).get("data"), [], "data")


def _is_json(line):
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


# ====================================================================== CLI

def cli_group(R):
    def run(args, timeout=15, env=None):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([R.binary] + args, capture_output=True, timeout=timeout,
                           env=e, stdin=subprocess.DEVNULL)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    d = os.path.join(R.tmp, "cli")
    os.makedirs(d, exist_ok=True)

    def cfg_file(name, cfg):
        path = os.path.join(d, name + ".yaml")
        with open(path, "w") as f:
            f.write(to_yaml(cfg) + "\n")
        return path

    def good_cfg(**over):
        c = {
            "server": {"listen": "127.0.0.1:%d" % free_port()},
            "logsink": {"path": os.path.join(d, "db", "x.db"),
                        "spill_dir": os.path.join(d, "spill")},
            "openai_clients": [
                {"name": "a", "base_url": "http://127.0.0.1:9/v1",
                 "model_match": {"type": "exact", "value": "m"}},
                {"name": "b", "base_url": "http://127.0.0.1:9/v1",
                 "model_match": {"type": "keyword", "value": ["q", "r"]}},
            ]}
        return deep_merge(c, over)

    def bad(name, cfg, *needles):
        rc, out = run(["-check", "-config", cfg_file(name, cfg)])
        eq(rc, 1, "exit code of -check (output: %s)" % short(out, 200))
        for n in needles:
            ensure(n in out, "output does not name %r: %s" % (n, short(out, 400)))

    @R.check("phase1.cli.version")
    def _():
        rc, out = run(["-version"])
        eq(rc, 0, "exit code")
        ensure("go1." in out, "no Go version in %r" % out)
        ensure("amd64" in out or "arm64" in out, "no GOARCH in %r" % out)
        ensure("simd" in out.lower(), "nothing about the SIMD JSON parser in %r" % out)

    @R.check("phase1.cli.check_valid_config")
    def _():
        rc, out = run(["-check", "-config", cfg_file("good", good_cfg())])
        eq(rc, 0, "exit code (output: %s)" % short(out, 300))

    @R.check("phase1.cli.check_unknown_key")
    def _():
        bad("unknown", good_cfg(server={"bogus_knob": 1}), "server.bogus_knob")

    @R.check("phase1.cli.check_bad_match_type")
    def _():
        c = good_cfg()
        c["openai_clients"][1]["model_match"]["type"] = "regex"
        bad("regex", c, "openai_clients[1].model_match.type")

    @R.check("phase1.cli.check_duplicate_name")
    def _():
        c = good_cfg()
        c["openai_clients"][1]["name"] = "a"
        bad("dup", c, "openai_clients[1].name", "duplicate")

    @R.check("phase1.cli.check_api_key_line_break")
    def _():
        # Written into every upstream request as it is: a line break would
        # end the Authorization header and start another.
        c = good_cfg()
        c["openai_clients"][0]["api_key"] = "sk-1\r\nX-Evil: 1"
        bad("keybreak", c, "openai_clients[0].api_key", "CR, LF or NUL")

    @R.check("phase1.cli.check_missing_required")
    def _():
        c = good_cfg()
        del c["openai_clients"][0]["base_url"]
        bad("missing", c, "openai_clients[0].base_url")

    @R.check("phase1.cli.check_bad_url")
    def _():
        c = good_cfg()
        c["openai_clients"][0]["base_url"] = "ftp://example/v1"
        bad("badurl", c, "openai_clients[0].base_url")

    @R.check("phase1.cli.check_negative_duration")
    def _():
        bad("negdur", good_cfg(check_config={"cooldown": "-5s"}), "check_config.cooldown")

    @R.check("phase1.cli.check_wrong_type")
    def _():
        bad("wrongtype", good_cfg(logsink={"batch_size": "lots"}), "logsink.batch_size")

    @R.check("phase1.cli.check_unset_env")
    def _():
        c = good_cfg()
        c["openai_clients"][0]["api_key"] = "${E2E_SURELY_UNSET_VAR_1}"
        ensure("E2E_SURELY_UNSET_VAR_1" not in os.environ, "the test variable is set")
        bad("unsetenv", c, "openai_clients[0].api_key")

    @R.check("phase1.cli.check_reports_every_problem")
    def _():
        c = good_cfg(server={"bogus_knob": 1})
        c["openai_clients"][1]["model_match"]["type"] = "regex"
        bad("two", c, "server.bogus_knob", "openai_clients[1].model_match.type")

    @R.check("phase1.cli.serve_bad_config_exit_1")
    def _():
        rc, out = run(["-config", cfg_file("servebad", good_cfg(server={"bogus_knob": 1}))])
        eq(rc, 1, "exit code (output: %s)" % short(out, 200))

    @R.check("phase1.cli.listen_busy_exit_2")
    def _():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            port = s.getsockname()[1]
            rc, out = run(["-config", cfg_file("busy", good_cfg(server={"listen": "127.0.0.1:%d" % port}))])
            eq(rc, 2, "exit code (output: %s)" % short(out, 200))
        finally:
            s.close()

    @R.check("phase1.cli.config_from_env_var")
    def _():
        port = free_port()
        path = cfg_file("envcfg", good_cfg(server={"listen": "127.0.0.1:%d" % port}))
        e = dict(os.environ)
        e["GPTAPI_CONFIG"] = path
        from e2e_infra import track
        p = track(subprocess.Popen([R.binary], env=e, cwd=d, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if p.poll() is not None:
                    raise CheckFail("exited %d with GPTAPI_CONFIG set" % p.returncode)
                try:
                    if http_request(port, "GET", "/health", timeout=1).status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                raise CheckFail("did not serve on the GPTAPI_CONFIG listen address")
            p.terminate()
            eq(p.wait(15), 0, "exit code after SIGTERM")
        finally:
            if p.poll() is None:
                p.kill()
