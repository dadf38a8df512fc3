#!/usr/bin/env python3
"""End-to-end acceptance runner for gptapi.

Builds (or takes) the gptapi binary, starts scripted mock upstreams on
127.0.0.1, writes config files into a temporary folder, runs gptapi against
them and checks what callers and upstreams see, what lands in the SQLite
records, and how load balancing behaves. Python 3.11 standard library only.

    python3 GPT_API_TESTS/test_runner_enhanced.py --api-version go \\
        --stage phase1|phase2|phase3|phase4|keepword|routing|fleetdb|edge|sdk|random|all [--binary PATH] [-k SUBSTRING] [-v]

Prints `PASS name` or `FAIL name: reason` per check and ends with
`N passed, M failed`; exits non-zero when a check failed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source folder clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import e2e_infra  # noqa: E402
from e2e_infra import Runner, kill_all, new_tmpdir, track  # noqa: E402
import e2e_phase1  # noqa: E402
import e2e_phase2  # noqa: E402
import e2e_phase3  # noqa: E402
import e2e_keepword  # noqa: E402
import e2e_routing  # noqa: E402
import e2e_fleetdb  # noqa: E402
import e2e_edge  # noqa: E402
import e2e_sdk  # noqa: E402
import e2e_random  # noqa: E402

REPO = os.path.dirname(HERE)
STAGES = ["phase1", "phase2", "phase3", "phase4", "keepword", "routing", "fleetdb", "edge", "sdk", "random"]


def build(tmp):
    out = os.path.join(tmp, "gptapi")
    p = track(subprocess.Popen(["go", "build", "-o", out, "./cmd/gptapi"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL))
    try:
        text, _ = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, "go build did not finish within 600s"
    if p.returncode != 0:
        return None, "go build failed: " + text.decode("utf-8", "replace").strip().replace("\n", " | ")
    return out, None


def phase4(R):
    script = os.path.join(REPO, "bench", "run.sh")
    if not (os.path.isfile(script) and os.access(script, os.X_OK)):
        print("SKIP phase4: bench/run.sh not present", flush=True)
        return
    name = "phase4.bench_quick"
    if not R.selected(name):
        return

    @R.check(name)
    def _():
        env = dict(os.environ)
        env["GPTAPI_BINARY"] = R.binary
        p = track(subprocess.Popen([script, "-quick"], cwd=REPO, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True))
        p._own_group = True
        try:
            out, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            raise e2e_infra.CheckFail("bench/run.sh -quick did not finish within 300s")
        if R.verbose:
            sys.stdout.write(out.decode("utf-8", "replace"))
        if p.returncode != 0:
            tail = out.decode("utf-8", "replace").strip().splitlines()[-8:]
            raise e2e_infra.CheckFail("bench/run.sh -quick exited %d: %s" %
                                      (p.returncode, " | ".join(tail)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api-version", default="go", choices=["go"])
    ap.add_argument("--stage", default="all", choices=STAGES + ["all"])
    ap.add_argument("--binary", help="gptapi binary to test (default: go build it)")
    ap.add_argument("-k", dest="k", help="run only checks whose name contains this")
    ap.add_argument("-v", dest="verbose", action="store_true", help="timings and logs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    e2e_infra.install_signal_handlers()
    tmp = new_tmpdir()
    t0 = time.monotonic()
    R = Runner(None, args.k, args.verbose, tmp)
    try:
        if args.binary:
            R.binary = os.path.abspath(args.binary)
            if not os.access(R.binary, os.X_OK):
                print("FAIL build: %s is not an executable file" % args.binary)
                print("0 passed, 1 failed")
                return 1
        else:
            binary, err = build(tmp)
            if err:
                print("FAIL build: %s" % err)
                print("0 passed, 1 failed")
                return 1
            R.binary = binary
        stages = STAGES if args.stage == "all" else [args.stage]
        plan = {
            "phase1": e2e_phase1.groups(),
            "phase2": e2e_phase2.groups(),
            "phase3": e2e_phase3.groups(),
            "phase4": [phase4],
            "keepword": e2e_keepword.groups(),
            "routing": e2e_routing.groups(),
            "fleetdb": e2e_fleetdb.groups(),
            "edge": e2e_edge.groups(),
            "sdk": e2e_sdk.groups(),
            "random": e2e_random.groups(),
        }
        for st in stages:
            for g in plan[st]:
                R.group(g)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        R.failed += 1
    finally:
        kill_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.verbose:
        print("(%.1fs, temp %s)" % (time.monotonic() - t0, tmp))
    print("%d passed, %d failed" % (R.passed, R.failed), flush=True)
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
