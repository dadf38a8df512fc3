"""Phase 3: load balancing, failover, cooldown, fallback, timeouts."""

import http.client
import time

from e2e_common import (expect_error, expect_status, expect_upstream,
                        metric_values, parallel, tried_of)
from e2e_infra import client, ensure, eq, http_request, short
from e2e_mock import Fail, Json, SlowJson, Stall, chat_answer, refused_url

CHI2_DF2_P001 = 13.816


def groups():
    return [lb_group, cooldown_group]


def lb_group(R):
    W = {1: R.mock("W1"), 2: R.mock("W2"), 5: R.mock("W5")}
    mSA, mSB, mSS = R.mock("SA"), R.mock("SB"), R.mock("SS")
    FC = [R.mock("FC%d" % i) for i in range(1, 5)]
    mCY1, mCY2 = R.mock("CY1"), R.mock("CY2")
    mFO1, mFO2, mFX, mFY = R.mock("FO1"), R.mock("FO2"), R.mock("FX"), R.mock("FY")
    mTO, mTO1, mTO2 = R.mock("TO"), R.mock("TO1"), R.mock("TO2")
    mRF2 = R.mock("RF2")
    mMX1, mMX2 = R.mock("MX1"), R.mock("MX2")
    clients = [
        client("w1", W[1], ["m-w"], priority=1),
        client("w2", W[2], ["m-w"], priority=2),
        client("w5", W[5], ["m-w"], priority=5),
        client("sS", mSS, ["m-sb"], priority=0),
        client("sA", mSA, ["m-sb"], priority=1),
        client("sB", mSB, ["m-sb"], priority=3),
        client("fc1", FC[0], ["m-fc1"], fallback="m-fc2"),
        client("fc2", FC[1], ["m-fc2"], fallback="m-fc3"),
        client("fc3", FC[2], ["m-fc3"], fallback="m-fc4"),
        client("fc4", FC[3], ["m-fc4"]),
        client("cy1", mCY1, ["m-cy1"], fallback="m-cy2"),
        client("cy2", mCY2, ["m-cy2"], fallback="m-cy1"),
        client("fo1", mFO1, ["m-fo"], fallback="m-fx"),
        client("fo2", mFO2, ["m-fo"], fallback="m-fy"),
        client("fx", mFX, ["m-fx"]),
        client("fy", mFY, ["m-fy"]),
        client("to", mTO, ["m-to"]),
        client("to1", mTO1, ["m-tofo"], priority=1),
        client("to2", mTO2, ["m-tofo"], priority=0),
        client("rf1", refused_url(), ["m-rf"], priority=1),
        client("rf2", mRF2, ["m-rf"], priority=0),
        client("rfx", refused_url(), ["m-rfall"], priority=1),
        client("rfy", refused_url(), ["m-rfall"], priority=1),
        client("mx1", mMX1, ["m-mix"], priority=1),
        client("mx2", mMX2, ["m-mix"], priority=0),
    ]
    gw = R.gateway("lb", {
        "check_config": {"first_byte_timeout": "1s", "stream_idle_timeout": "1s",
                         "request_timeout": "2s", "max_fallback_depth": 2,
                         "connect_timeout": "1s"},
        "openai_clients": clients})
    ck = R.check

    def counts(model, n, threads=16):
        gw.ensure()

        def one(i, st):
            conn = st.get("conn")
            if conn is None:
                conn = st["conn"] = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
            try:
                r = http_request(gw.port, "POST", "/v1/chat/completions",
                                 {"model": model, "messages": [{"role": "user", "content": "x"}]},
                                 conn=conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                st.pop("conn", None)
                raise
            return (r.status, r.header("X-Gptapi-Upstream"))
        res = parallel(threads, range(n), one, timeout=120)
        bad = [r for r in res if not (isinstance(r, tuple) and r[0] == 200)]
        ensure(not bad, "%d of %d requests failed, e.g. %s" % (len(bad), n, short(bad[:3])))
        out = {}
        for _, up in res:
            out[up] = out.get(up, 0) + 1
        return out

    @ck("phase3.lb.weight_shares_chi_square")
    def _():
        n = 2400
        got = counts("m-w", n)
        ensure(set(got) <= {"w1", "w2", "w5"}, "unexpected upstreams %s" % got)
        chi2 = 0.0
        for name, w in (("w1", 1), ("w2", 2), ("w5", 5)):
            exp = n * w / 8.0
            chi2 += (got.get(name, 0) - exp) ** 2 / exp
        ensure(chi2 < CHI2_DF2_P001, "shares %s for priorities 1/2/5: chi2 %.1f >= %.3f" %
               (got, chi2, CHI2_DF2_P001))
        # the upstreams agree with the header
        eq({k: len(W[w].calls()) for k, w in (("w1", 1), ("w2", 2), ("w5", 5))},
           {k: got.get(k, 0) for k in ("w1", "w2", "w5")}, "upstream hit counts")
        return "counts %s chi2 %.2f" % (got, chi2)

    @ck("phase3.lb.standby_never_chosen_while_weighted_healthy")
    def _():
        got = counts("m-sb", 400)
        ensure("sS" not in got, "standby served %d of 400: %s" % (got.get("sS", 0), got))
        ensure(got.get("sA", 0) > 0 and got.get("sB", 0) > 0, "weighted not both used: %s" % got)
        eq(len(mSS.calls()), 0, "standby hits")

    @ck("phase3.lb.standby_chosen_when_weighted_fail")
    def _():
        mSA.always(Fail(500))
        mSB.always(Fail(503))
        r = gw.chat("m-sb")
        expect_status(r, 200)
        expect_upstream(r, "sS")
        eq((len(mSA.calls()), len(mSB.calls()), len(mSS.calls())), (1, 1, 1), "hits A, B, standby")

    @ck("phase3.lb.all_failed_tried_each_once_standby_last")
    def _():
        for m in (mSA, mSB, mSS):
            m.always(Fail(500))
        firsts = set()
        for _ in range(30):
            r = gw.chat("m-sb")
            expect_error(r, 502, "upstream_error", "all_upstreams_failed")
            tried = tried_of(r)
            eq(sorted(tried), ["sA/m-sb", "sB/m-sb", "sS/m-sb"], "tried entries")
            eq(tried[-1], "sS/m-sb", "last tried (standby)")
            firsts.add(tried[0])
        eq((len(mSA.calls()), len(mSB.calls()), len(mSS.calls())), (30, 30, 30), "hits")
        eq(firsts, {"sA/m-sb", "sB/m-sb"}, "first picks over 30 requests")

    @ck("phase3.lb.failover_on_429_408_5xx")
    def _():
        for codes in ((429, 408), (500, 502), (503, 504)):
            for m in (mSA, mSB, mSS):
                m.reset()
            mSA.always(Fail(codes[0]))
            mSB.always(Fail(codes[1]))
            r = gw.chat("m-sb")
            expect_status(r, 200)
            expect_upstream(r, "sS")
            eq((len(mSA.calls()), len(mSB.calls())), (1, 1), "hits after %s" % (codes,))

    @ck("phase3.lb.no_failover_on_other_4xx")
    def _():
        for code in (400, 401, 403, 404, 422):
            for m in (mSA, mSB, mSS):
                m.reset()
                m.always(Json({"error": {"message": "nope %d" % code}}, code))
            r = gw.chat("m-sb")
            eq(r.status, code, "status")
            eq(len(mSA.calls()) + len(mSB.calls()) + len(mSS.calls()), 1,
               "attempts for upstream %d" % code)

    @ck("phase3.fallback.chain_served")
    def _():
        FC[0].always(Fail(500))
        FC[1].always(Fail(500))
        r = gw.chat("m-fc1")
        expect_status(r, 200)
        expect_upstream(r, "fc3")
        eq(FC[2].last().json["model"], "m-fc3", "model sent to the fallback")
        eq([len(m.calls()) for m in FC], [1, 1, 1, 0], "hits per fallback step")

    @ck("phase3.fallback.tried_path_and_max_depth")
    def _():
        for m in FC:
            m.always(Fail(500))
        r = gw.chat("m-fc1")
        expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        eq(tried_of(r), ["fc1/m-fc1", "fc2/m-fc2", "fc3/m-fc3"], "tried (max_fallback_depth 2)")
        eq(len(FC[3].calls()), 0, "hits beyond max_fallback_depth")

    @ck("phase3.fallback.cycle_terminates")
    def _():
        mCY1.always(Fail(500))
        mCY2.always(Fail(500))
        t0 = time.monotonic()
        r = gw.chat("m-cy1", timeout=10)
        expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        eq(tried_of(r), ["cy1/m-cy1", "cy2/m-cy2"], "tried")
        eq((len(mCY1.calls()), len(mCY2.calls())), (1, 1), "hits")
        ensure(time.monotonic() - t0 < 3, "took %.1fs" % (time.monotonic() - t0))

    @ck("phase3.fallback.first_in_config_order")
    def _():
        mFO1.always(Fail(500))
        mFO2.always(Fail(500))
        for _ in range(4):
            r = gw.chat("m-fo")
            expect_status(r, 200)
            expect_upstream(r, "fx")
        eq(len(mFY.calls()), 0, "hits on the second client's fallback")

    @ck("phase3.timeout.first_byte_504")
    def _():
        mTO.always(Stall(5))
        t0 = time.monotonic()
        r = gw.chat("m-to", timeout=10)
        took = time.monotonic() - t0
        expect_error(r, 504, "upstream_error", "all_upstreams_failed")
        eq(tried_of(r), ["to/m-to"], "tried")
        ensure(0.8 < took < 3.0, "answered after %.2fs (first_byte_timeout 1s)" % took)

    @ck("phase3.timeout.request_timeout_504")
    def _():
        mTO.always(SlowJson(chat_answer("m-to", "slow body"), gap=5))
        t0 = time.monotonic()
        r = gw.chat("m-to", timeout=10)
        took = time.monotonic() - t0
        expect_error(r, 504, "upstream_error", "all_upstreams_failed")
        ensure(1.7 < took < 4.0, "answered after %.2fs (request_timeout 2s)" % took)

    @ck("phase3.timeout.stream_first_byte_504")
    def _():
        mTO.always(Stall(5))
        t0 = time.monotonic()
        s = gw.stream_chat("m-to", timeout=10)
        body = s.body()
        took = time.monotonic() - t0
        eq(s.status, 504, "status (body %s)" % short(body))
        ensure(took < 3.0, "answered after %.2fs (first_byte_timeout 1s)" % took)

    @ck("phase3.timeout.failover_to_next")
    def _():
        mTO1.always(Stall(5))
        r = gw.chat("m-tofo", timeout=10)
        expect_status(r, 200)
        expect_upstream(r, "to2")
        ensure(r.elapsed < 3.0, "took %.2fs" % r.elapsed)

    @ck("phase3.status.504_only_when_last_failure_is_timeout")
    def _():
        mMX1.always(Fail(500))
        mMX2.always(Stall(5))
        r = gw.chat("m-mix", timeout=10)
        expect_error(r, 504, "upstream_error", "all_upstreams_failed")
        for m in (mMX1, mMX2):
            m.reset()
        mMX1.always(Stall(5))
        mMX2.always(Fail(500))
        r = gw.chat("m-mix", timeout=10)
        expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        eq(tried_of(r), ["mx1/m-mix", "mx2/m-mix"], "tried")

    @ck("phase3.connect_refused.failover_to_next")
    def _():
        r = gw.chat("m-rf")
        expect_status(r, 200)
        expect_upstream(r, "rf2")
        ensure(r.elapsed < 2.0, "took %.2fs" % r.elapsed)
        s = gw.stream_chat("m-rf").read_all()
        expect_status(s, 200)
        eq(s.header("X-Gptapi-Upstream"), "rf2", "stream X-Gptapi-Upstream")

    @ck("phase3.connect_refused.all_refused_502")
    def _():
        r = gw.chat("m-rfall")
        expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        eq(sorted(tried_of(r)), ["rfx/m-rfall", "rfy/m-rfall"], "tried")


def cooldown_group(R):
    mA, mB = R.mock("CA"), R.mock("CB")
    gw = R.gateway("cooldown", {
        "check_config": {"failure_threshold": 2, "cooldown": "2s"},
        "openai_clients": [client("cdA", mA, ["m-cd"], priority=1),
                           client("cdB", mB, ["m-cd"], priority=0)]})
    ck = R.check

    def fresh():
        if gw.proc is not None:
            gw.restart()
        gw.ensure()

    def fail_a_twice():
        mA.always(Fail(500))
        for _ in range(2):
            r = gw.chat("m-cd")
            expect_status(r, 200)
            expect_upstream(r, "cdB")
        eq(len(mA.calls()), 2, "attempts on cdA while failing")

    @ck("phase3.cooldown.cooling_upstream_goes_last")
    def _():
        fresh()
        fail_a_twice()
        mB.always(Fail(500))
        r = gw.chat("m-cd")
        expect_error(r, 502, "upstream_error", "all_upstreams_failed")
        eq(tried_of(r), ["cdB/m-cd", "cdA/m-cd"], "tried while cdA cools")

    @ck("phase3.cooldown.skipped_while_cooling")
    def _():
        fresh()
        fail_a_twice()
        mA.always(None)
        for _ in range(3):
            r = gw.chat("m-cd")
            expect_status(r, 200)
            expect_upstream(r, "cdB")
        eq(len(mA.calls()), 2, "attempts on cdA during its cooldown")

    @ck("phase3.cooldown.metric_gauge")
    def _():
        fresh()
        fail_a_twice()
        r = gw.get("/metrics")
        expect_status(r, 200)
        m = r.body.decode()
        v = metric_values(m, "gptapi_upstream_cooldown")
        hit = [val for k, val in v.items() if 'upstream="cdA"' in k]
        eq(hit, [1.0], "gptapi_upstream_cooldown{upstream=\"cdA\"}")

    @ck("phase3.cooldown.ends_after_period")
    def _():
        fresh()
        fail_a_twice()
        mA.always(None)
        time.sleep(2.4)
        r = gw.chat("m-cd")
        expect_status(r, 200)
        expect_upstream(r, "cdA")

    @ck("phase3.cooldown.below_threshold_not_cooling")
    def _():
        fresh()
        mA.script([Fail(500)], then=None)
        r = gw.chat("m-cd")
        expect_upstream(r, "cdB")
        r = gw.chat("m-cd")
        expect_status(r, 200)
        expect_upstream(r, "cdA")

    @ck("phase3.cooldown.success_resets_failure_count")
    def _():
        fresh()
        mA.script([Fail(500), Json(chat_answer("m-cd", "ok")), Fail(500)], then=None)
        ups = [gw.chat("m-cd").header("X-Gptapi-Upstream") for _ in range(4)]
        eq(ups, ["cdB", "cdA", "cdB", "cdA"], "upstreams for fail, ok, fail, ok")
