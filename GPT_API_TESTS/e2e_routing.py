"""Routing stage: fleet-aware routing (SPEC 4.7) against mock vLLM servers
that expose /metrics: prefix affinity of conversations, spread of new ones
by priority, queue-aware placement, agreement of two gateways, failover
under every strategy, and the route / cached_tokens record columns."""

import json
import time

from e2e_common import metric_values, parallel
from e2e_infra import client, ensure, eq, short, wait_until
from e2e_mock import Fail, Json, Sse, chat_answer, chat_chunks

MODEL = "m-route"
CHI2_DF2_P001 = 13.816
SYSTEM = "You are the assistant of a big online shop. Answer briefly and politely. " * 120  # ~9 KB, shared


def groups():
    return [prefix_group, queue_group, failover_group]


def metrics_url(m):
    return m.base_url[:-len("/v1")] + "/metrics"


def fleet_clients(mocks, prios, **kw):
    return [client("r%d" % i, m, [MODEL], priority=p, metrics_url=metrics_url(m), **kw)
            for i, (m, p) in enumerate(zip(mocks, prios))]


def routing(strategy, **kw):
    r = {"strategy": strategy, "poll_interval": "100ms"}
    r.update(kw)
    return {"routing": r}


def turns(conv, n):
    """The message lists of the n turns of one conversation."""
    msgs = [{"role": "system", "content": SYSTEM}]
    out = []
    for t in range(n):
        msgs.append({"role": "user", "content": "conversation %d, question %d: %s" % (
            conv, t, "please tell me more about the order. " * 60)})
        out.append([dict(m) for m in msgs])
        msgs.append({"role": "assistant", "content": "Here is what I know about it. " * 40})
    return out


def served(r):
    ensure(r.status == 200, "status %d: %s" % (r.status, short(r.body)))
    return r.header("X-Gptapi-Upstream")


def record(gw, r):
    return gw.row(r.header("X-Request-Id"))


def waiting_of(gw, name):
    r = gw.get("/metrics")
    vals = metric_values(r.body.decode(), "gptapi_upstream_waiting")
    return vals.get('{upstream="%s"}' % name)


def prefix_group(R):
    mocks = [R.mock("P%d" % i) for i in range(3)]
    prios = [1, 1, 2]
    cfg = dict(routing("prefix"), openai_clients=fleet_clients(mocks, prios))
    gw = R.gateway("prefix", cfg)
    gw2 = R.gateway("prefix-twin", cfg)
    ck = R.check

    @ck("routing.prefix.followups_stay_on_their_upstream")
    def _():
        gw.ensure()
        moved = []
        for conv in range(8):
            first = None
            for t, msgs in enumerate(turns(conv, 4)):
                r = gw.chat(MODEL, msgs)
                up = served(r)
                if t == 0:
                    first = up
                elif up != first:
                    moved.append((conv, t + 1, first, up))
        ensure(not moved, "follow-up turns moved (conversation, turn, first, now): %s" % moved)

    @ck("routing.prefix.records_route_and_cached_tokens")
    def _():
        gw.ensure()
        usage = {"prompt_tokens": 3000, "completion_tokens": 7, "total_tokens": 3007,
                 "prompt_tokens_details": {"cached_tokens": 2048}}
        for m in mocks:
            m.always(lambda rec: Sse(chat_chunks(MODEL, ["ok"]), usage=dict(usage))
                     if (rec.json or {}).get("stream") else Json(chat_answer(MODEL, "ok", usage=usage)))
        t = turns(100, 2)
        r1 = gw.chat(MODEL, t[0])
        served(r1)
        r2 = gw.chat(MODEL, t[1])
        served(r2)
        s = gw.stream_chat(MODEL, turns(101, 1)[0])
        s.read_all()
        row1, row2, row3 = record(gw, r1), record(gw, r2), gw.row(s.header("X-Request-Id"))
        eq((row1["route"], row2["route"], row3["route"]), ("prefix_new", "prefix_hit", "prefix_new"), "routes")
        eq((row1["cached_tokens"], row2["cached_tokens"], row3["cached_tokens"]), (2048, 2048, 2048),
           "cached_tokens (plain, plain, stream's hidden usage chunk)")
        text = gw.get("/metrics").body.decode()
        routes = metric_values(text, "gptapi_route_total")
        ensure(routes.get('{reason="prefix_hit"}', 0) >= 1, "gptapi_route_total: %s" % routes)
        ensure(metric_values(text, "gptapi_upstream_inflight"), "no gptapi_upstream_inflight series")

        def cached_total():
            vals = metric_values(gw.get("/metrics").body.decode(), "gptapi_prompt_cached_tokens_total")
            return sum(vals.values()) >= 3 * 2048
        wait_until(cached_total, 5, what="gptapi_prompt_cached_tokens_total to count the 3 answers' cached tokens")

    @ck("routing.prefix.new_conversations_spread_by_priority")
    def _():
        gw.ensure()
        n = 600

        def one(i, st):
            r = gw.chat(MODEL, [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": "new conversation %d" % i}])
            return served(r)
        res = parallel(8, range(n), one, timeout=120)
        bad = [r for r in res if not isinstance(r, str)]
        ensure(not bad, "%d failed, e.g. %s" % (len(bad), short(bad[:2])))
        got = {name: res.count(name) for name in ("r0", "r1", "r2")}
        chi2 = sum((got[k] - n * p / 4.0) ** 2 / (n * p / 4.0) for k, p in zip(("r0", "r1", "r2"), prios))
        ensure(chi2 < CHI2_DF2_P001, "shares %s for priorities 1/1/2: chi2 %.1f" % (got, chi2))
        return "shares %s chi2 %.2f" % (got, chi2)

    @ck("routing.prefix.two_gateways_place_new_prompts_alike")
    def _():
        gw.ensure()
        gw2.ensure()
        differ = []
        for i in range(40):
            msgs = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "twin question %d" % i}]
            a, b = served(gw.chat(MODEL, msgs)), served(gw2.chat(MODEL, msgs))
            if a != b:
                differ.append((i, a, b))
        ensure(not differ, "the two gateways disagree on %d of 40: %s" % (len(differ), differ[:5]))
        # a second gateway also sends turn 2 where turn 1 went, never having seen turn 1
        for conv in range(200, 210):
            t = turns(conv, 2)
            eq(served(gw2.chat(MODEL, t[1])), served(gw.chat(MODEL, t[0])), "conversation %d" % conv)

    @ck("routing.prefix.overloaded_holder_gives_way")
    def _():
        gw.ensure()
        t = turns(300, 3)
        holder = served(gw.chat(MODEL, t[0]))
        eq(served(gw.chat(MODEL, t[1])), holder, "turn 2")
        mocks[int(holder[1:])].waiting = 60
        wait_until(lambda: waiting_of(gw, holder) == 60, 5, what="the holder's queue read")
        r = gw.chat(MODEL, t[2])
        ensure(served(r) != holder, "turn 3 still went to %s with a queue of 60" % holder)
        eq(record(gw, r)["route"], "prefix_balanced", "route")


def queue_group(R):
    A, B = R.mock("QA"), R.mock("QB")
    gw = R.gateway("least", dict(routing("least_loaded"), openai_clients=fleet_clients([A, B], [1, 1])))
    gwb = R.gateway("badmetrics", dict(routing("least_loaded"), openai_clients=fleet_clients([A, B], [1, 1])))
    ck = R.check

    def spread(g, n=40):
        got = {}
        for i in range(n):
            up = served(g.chat(MODEL, [{"role": "user", "content": "q %d" % i}]))
            got[up] = got.get(up, 0) + 1
        return got

    @ck("routing.least_loaded.long_queue_stops_getting_work_until_it_drains")
    def _():
        gw.ensure()
        A.waiting = 50
        wait_until(lambda: waiting_of(gw, "r0") == 50, 5, what="r0's queue read")
        got = spread(gw)
        eq(got, {"r1": 40}, "with r0's queue at 50")
        A.waiting = 0
        wait_until(lambda: waiting_of(gw, "r0") == 0, 5, what="r0's queue drained")
        got = spread(gw, 200)
        ensure(got.get("r0", 0) >= 60 and got.get("r1", 0) >= 60, "after draining: %s" % got)
        r = gw.chat(MODEL)
        eq(record(gw, r)["route"], "least_loaded", "route")
        return "after draining %s" % got

    @ck("routing.least_loaded.bad_metrics_ignored")
    def _():
        gwb.ensure()
        for body in (b"<html><body>Bad Gateway</body></html>", b"vllm:num_requests_waiting NaN\n",
                     b"vllm:num_requests_waiting -4\n", b"x" * (5 << 20)):
            A.metrics_action = Json(body)
            B.waiting = 2
            wait_until(lambda: waiting_of(gwb, "r1") == 2, 5, what="r1's queue read")
            time.sleep(0.4)  # past three intervals: any earlier reading of r0 is stale
            ensure(waiting_of(gwb, "r0") is None, "r0 has a queue figure with metrics %r" % body[:30])
            t0 = time.monotonic()
            got = spread(gwb, 10)
            ensure(sum(got.values()) == 10, "requests failed: %s" % got)
            ensure(time.monotonic() - t0 < 5, "10 requests took %.1fs" % (time.monotonic() - t0))
        A.metrics_action = Fail(500)
        ensure(served(gwb.chat(MODEL)) in ("r0", "r1"), "served")
        log = open(gwb.log_path, "rb").read().decode("utf-8", "replace")
        ensure("metrics_url unreadable" in log, "no warning in the log")
        lines = [l for l in log.splitlines() if "metrics_url unreadable" in l and "r0" in l]
        ensure(len(lines) <= 3, "warned %d times in a few seconds: once per interval expected" % len(lines))


def failover_group(R):
    A, B, S = R.mock("FA"), R.mock("FB"), R.mock("FS")
    gws = {}
    for strategy in ("weighted", "least_loaded", "prefix"):
        clients = fleet_clients([A, B], [1, 1]) + [client("rs", S, [MODEL], priority=0)]
        gws[strategy] = R.gateway("fo-" + strategy, dict(routing(strategy), openai_clients=clients))
    ck = R.check

    for strategy, gw in gws.items():
        @ck("routing.failover.%s" % strategy)
        def _(gw=gw):
            gw.ensure()
            A.always(Fail(500))
            got = {}
            for conv in range(20):
                r = gw.chat(MODEL, turns(500 + conv, 1)[0])
                up = served(r)
                got[up] = got.get(up, 0) + 1
            eq(got, {"r1": 20}, "served by (r0 fails)")
            B.always(Fail(503))
            r = gw.chat(MODEL)
            eq(served(r), "rs", "with both weighted failing")
            row = record(gw, r)
            eq(json.loads(row["tried"])[-1], "rs/" + MODEL, "tried ends with the standby")
            ensure(row["route"] in ("weighted", "least_loaded", "prefix_new", "prefix_hit", "prefix_balanced"),
                   "route %r" % row["route"])
