"""Fleetdb stage: records of several gateways in one PostgreSQL (SPEC 4.8).

Starts a PostgreSQL of its own (Debian's postgresql package; as the postgres
user when run as root, since initdb refuses root) in a temporary folder on a
free loopback port, two gptapi nodes writing to it with logsink.driver
postgres, and a mock upstream. Requests go to both nodes; afterwards the
table holds one row per request with the node that served it. Then the
database is stopped while a node serves, and started again: the records
spilled meanwhile arrive, none twice. Queries use the psql command."""

import collections
import glob
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile

from e2e_common import parallel
from e2e_infra import client, ensure, eq, log, wait_until
from e2e_mock import Raw
from e2e_random import _raw_answer, planned

MODEL = "m-fleet"


def groups():
    return [fleetdb_group]


def pg_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    p = shutil.which("initdb")
    return os.path.dirname(p) if p else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Postgres:
    def __init__(self, bindir, base):
        self.bin = bindir
        self.base = base
        self.dir = os.path.join(base, "pgdata")
        self.port = free_port()
        self.prefix = []
        os.makedirs(base, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def run(self, prog, *args, check=True):
        argv = self.prefix + [os.path.join(self.bin, prog)] + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError("%s: %s %s" % (prog, p.stdout, p.stderr))
        return p

    def init(self):
        self.run("initdb", "-D", self.dir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self):
        opts = "-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off" % (self.port, self.dir)
        self.run("pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "log"), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", self.dir, "-m", mode, "-w", "stop", check=False)

    def dsn(self, db):
        return "postgres://postgres:fleet-pw@127.0.0.1:%d/%s?sslmode=disable" % (self.port, db)

    def psql(self, db, sql):
        p = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-d", db, "-c", sql], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("psql: %s" % p.stderr.strip())
        return p.stdout.strip()


def fleetdb_group(R):
    bindir = pg_bindir()
    ck = R.check
    if not bindir or not shutil.which("psql"):
        @ck("fleetdb.postgres_installed")
        def _():
            ensure(False, "PostgreSQL is not installed (apt-get install postgresql, or make deps): the fleetdb stage cannot run")
        return
    # its own folder, not under the runner's private one: the postgres
    # user must reach it
    base = tempfile.mkdtemp(prefix="gptapi-fleetdb-pg-")
    pg = Postgres(bindir, base)
    try:
        pg.init()
        pg.start()
        pg.psql("postgres", "CREATE DATABASE fleet")
    except Exception as e:  # noqa: BLE001
        @ck("fleetdb.postgres_starts")
        def _():
            ensure(False, "cannot start PostgreSQL: %s" % e)
        pg.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
        return
    try:
        _checks(R, pg)
    finally:
        for g in R._gateways:
            if g.running():
                g.stop()
        pg.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _checks(R, pg):
    ck = R.check
    mock = R.mock("FLEET", [MODEL])
    dsn = pg.dsn("fleet")

    def node_cfg(node):
        return {"logsink": {"driver": "postgres", "dsn": dsn, "node": node, "queue_size": 16},
                "openai_clients": [client("fleet", mock, [MODEL])]}

    a = R.gateway("fleet-node-a", node_cfg("node-a"))
    b = R.gateway("fleet-node-b", node_cfg("node-b"))

    def rows_by_node():
        out = pg.psql("fleet", "SELECT node, count(*), count(DISTINCT request_id) FROM requests GROUP BY node ORDER BY node")
        res = {}
        for line in out.splitlines():
            node, n, d = line.split("|")
            res[node] = (int(n), int(d))
        return res

    @ck("fleetdb.two_nodes_one_table")
    def _():
        a.ensure()
        b.ensure()
        sent = {"node-a": 0, "node-b": 0}

        def one(i, state):
            gw, node = (a, "node-a") if i % 2 == 0 else (b, "node-b")
            if i % 5 == 0:
                s = gw.stream_chat(MODEL, [{"role": "user", "content": "hi %d" % i}])
                s.read_all()
                ok = s.status == 200
            else:
                r = gw.chat(MODEL, [{"role": "user", "content": "hi %d" % i}])
                ok = r.status == 200
            ensure(ok, "request %d to %s failed" % (i, node))
            return node

        for res in parallel(8, list(range(600)), one, timeout=120):
            ensure(not isinstance(res, Exception), "a request failed: %s" % res)
            sent[res] += 1
        a.stop()
        b.stop()
        got = rows_by_node()
        eq(got, {"node-a": (sent["node-a"], sent["node-a"]), "node-b": (sent["node-b"], sent["node-b"])},
           "rows by node (rows, distinct request ids)")
        parts = pg.psql("fleet", "SELECT count(*) FROM pg_inherits WHERE inhparent = 'requests'::regclass")
        ensure(int(parts) >= 2, "partitions of requests: %s (this month and the next)" % parts)
        return "%s" % got

    @ck("fleetdb.database_away_then_back")
    def _():
        before = rows_by_node().get("node-a", (0, 0))[0]
        pg.stop("fast")
        a.start()  # stopped by the check before: a node starting while the database is away
        n = 200
        for i in range(n):
            r = a.chat(MODEL, [{"role": "user", "content": "while away %d" % i}])
            ensure(r.status == 200, "request %d while the database was away: %d" % (i, r.status))
        pg.start()
        wait_until(lambda: rows_by_node().get("node-a", (0, 0))[0] >= before + n, 60,
                   what="records written once the database is back")
        a.stop()
        got = rows_by_node()["node-a"]
        eq(got, (before + n, before + n), "node-a rows, distinct request ids")
        text = open(a.log_path).read()
        ensure("fleet-pw" not in text, "the dsn password is in the log")
        log("fleetdb: %d records served while the database was away, all written once" % n)

    @ck("fleetdb.any_bytes_recorded")
    def _():
        """Requests and answers carrying what PostgreSQL's text refuses as it
        is (NUL bytes, bytes that are not UTF-8, \u0000 escapes), from the
        random upstream answers of the random stage: every request still
        has its row."""
        r = random.Random(12)
        statuses = collections.Counter()
        junk = R.mock("JUNK")
        plans = {}
        junk.always(planned(plans))
        c = R.gateway("fleet-node-c", {"logsink": {"driver": "postgres", "dsn": dsn, "node": "node-c"},
                                       "check_config": {"first_byte_timeout": "1s", "request_timeout": "2s"},
                                       "openai_clients": [client("junk", junk, ["m-junk"])]})
        c.ensure()
        for i in range(150):
            tok = "junk-%d" % i
            stream = r.random() < 0.5
            raw = _raw_answer(r, stream)
            k = r.randrange(3)
            if k == 0:
                raw = raw.replace(b"Hel", b"H\x00l").replace(b"there", b"th\xffre")
            elif k == 1:
                raw = raw.replace(b"Hel", b"H\\u0000l")
            plans[tok] = Raw(raw)
            # the token last: it picks the planned answer
            msgs = [{"role": "system", "content": "a\u0000b\udcff"}, {"role": "user", "content": tok}]
            body = json.dumps({"model": "m-junk", "stream": stream, "messages": msgs}).encode("utf-8", "surrogatepass")
            statuses[c.post("/v1/chat/completions", body, {"X-Request-Id": tok}).status] += 1
        ensure(len(junk.calls()) >= 150 and statuses[200] >= 30 and statuses[502] >= 30,
               "the upstream's planned answers did not come through: %s" % dict(statuses))
        c.stop()
        n = pg.psql("fleet", "SELECT count(DISTINCT request_id) FROM requests WHERE node = 'node-c' AND request_id LIKE 'junk-%'")
        eq(int(n), 150, "rows of the 150 requests")
        return "150 rows; answers %s" % dict(statuses)
