"""Process, config, HTTP and check plumbing for the gptapi end-to-end runner."""

import atexit
import http.client
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from e2e_mock import MockUpstream, free_port

# ---------------------------------------------------------------- processes

_PROCS = []
_PROCS_LOCK = threading.Lock()


def track(proc):
    with _PROCS_LOCK:
        _PROCS.append(proc)
    return proc


def kill_all():
    """Kill every process this runner started that is still alive."""
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + 3
    for p in procs:
        if p.poll() is None:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL) if getattr(p, "_own_group", False) else p.kill()
            except OSError:
                pass
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                pass


atexit.register(kill_all)


def _on_signal(signum, frame):
    kill_all()
    raise KeyboardInterrupt


def install_signal_handlers():
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


# ---------------------------------------------------------------- checks

class CheckFail(Exception):
    pass


def short(v, n=300):
    s = v if isinstance(v, str) else repr(v)
    if isinstance(v, (bytes, bytearray)):
        s = repr(bytes(v[:n]))
    return s if len(s) <= n else s[:n] + "…"


def ensure(cond, msg):
    if not cond:
        raise CheckFail(msg)


def eq(got, want, what):
    if got != want:
        raise CheckFail("%s: got %s, want %s" % (what, short(got), short(want)))


def wait_until(fn, timeout, interval=0.05, what="condition"):
    """Poll fn until it returns a truthy value, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise CheckFail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------- YAML

def _scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def to_yaml(obj, indent=0):
    """A small YAML emitter: block maps, block lists of maps, flow lists of
    scalars, double-quoted strings."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k if _plain_key(k) else json.dumps(k)
            if isinstance(v, dict):
                if not v:
                    lines.append("%s%s: {}" % (pad, key))
                else:
                    lines.append("%s%s:" % (pad, key))
                    lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                if not v:
                    lines.append("%s%s: []" % (pad, key))
                elif all(not isinstance(x, (dict, list)) for x in v):
                    lines.append("%s%s: [%s]" % (pad, key, ", ".join(_scalar(x) for x in v)))
                else:
                    lines.append("%s%s:" % (pad, key))
                    lines.append(to_yaml(v, indent + 2))
            else:
                lines.append("%s%s: %s" % (pad, key, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = to_yaml(item, indent + 2).split("\n")
                sub[0] = pad + "- " + sub[0][indent + 2:]
                lines.extend(sub)
            else:
                lines.append("%s- %s" % (pad, _scalar(item)))
    return "\n".join(lines)


def _plain_key(k):
    return isinstance(k, str) and k and all(c.isalnum() or c in "_-" for c in k)


def deep_merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def client(name, upstream, models, match="exact", **kw):
    """One openai_clients entry. upstream is a MockUpstream or a base URL."""
    url = upstream.base_url if isinstance(upstream, MockUpstream) else upstream
    c = {"name": name, "base_url": url,
         "model_match": {"type": match, "value": models}}
    c.update(kw)
    return c


# ---------------------------------------------------------------- HTTP

class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers      # lower-case name -> value
        self.body = body
        self.elapsed = elapsed
        self._json = None
        self._parsed = False

    @property
    def json(self):
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.body)
            except ValueError:
                self._json = None
        return self._json

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<%d %s>" % (self.status, short(self.body, 200))


def http_request(port, method, path, body=None, headers=None, timeout=15,
                 conn=None):
    """One HTTP/1.1 request to 127.0.0.1:port. body: dict/list (sent as JSON),
    str/bytes (sent raw) or None."""
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        return Resp(r.status, headers, data, time.monotonic() - t0)
    finally:
        if own:
            conn.close()


def raw_exchange(port, data, timeout=10):
    """Send raw bytes (ignoring send errors: the server may answer early and
    close) and parse one HTTP response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        f = s.makefile("rb")
        status, headers = _read_head(f)
        body = _read_body_all(f, headers)
        return Resp(status, headers, body, 0)
    finally:
        s.close()


def _read_head(f):
    line = f.readline()
    if not line:
        raise CheckFail("connection closed before a status line")
    parts = line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def _body_iter(f, headers):
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            line = f.readline()
            if not line:
                return
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return
            if size == 0:
                return
            data = f.read(size)
            if not data:
                return
            yield data
            f.readline()
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            data = f.read1(min(left, 65536)) if hasattr(f, "read1") else f.read(min(left, 65536))
            if not data:
                return
            left -= len(data)
            yield data
    else:
        while True:
            data = f.read1(65536)
            if not data:
                return
            yield data


def _read_body_all(f, headers):
    out = []
    try:
        for d in _body_iter(f, headers):
            out.append(d)
    except (OSError, ValueError):
        pass
    return b"".join(out)


class Stream:
    """A streaming request read event by event with arrival times."""

    def __init__(self, port, path, body, headers=None, timeout=15):
        hdrs = {"Content-Type": "application/json", "Host": "127.0.0.1",
                "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        req = ["POST %s HTTP/1.1" % path]
        for k, v in hdrs.items():
            req.append("%s: %s" % (k, v))
        req.append("Content-Length: %d" % len(data))
        self.t_start = time.monotonic()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode() + data)
        self.f = self.sock.makefile("rb")
        self.status, self.headers = _read_head(self.f)
        self.t_head = time.monotonic()
        self._it = _body_iter(self.f, self.headers)
        self._buf = b""
        self.events = []        # (monotonic time, data string)
        self.raw = b""
        self.ended = False
        self.closed_at = None
        self.read_error = None

    def header(self, name):
        return self.headers.get(name.lower())

    def next_event(self):
        """The next SSE event (time, data), or None at the end of the body."""
        while True:
            cut = _next_block(self._buf)
            if cut is not None:
                block, self._buf = cut
                data = _sse_data(block)
                if data is None:
                    continue
                ev = (time.monotonic(), data)
                self.events.append(ev)
                return ev
            if self.ended:
                return None
            try:
                chunk = next(self._it)
            except StopIteration:
                self.ended = True
                continue
            except (OSError, ValueError) as e:
                self.read_error = e
                self.ended = True
                continue
            self.raw += chunk
            self._buf += chunk

    def read_all(self):
        while self.next_event() is not None:
            pass
        return self

    def body(self):
        """For a non-SSE answer: the whole body."""
        return _read_body_all(self.f, self.headers)

    def close(self):
        self.closed_at = time.monotonic()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # views -------------------------------------------------------------
    @property
    def datas(self):
        return [d for _, d in self.events]

    @property
    def done(self):
        return "[DONE]" in self.datas

    def chunks(self):
        """Parsed JSON of every data event other than [DONE]."""
        out = []
        for d in self.datas:
            if d == "[DONE]":
                continue
            try:
                out.append(json.loads(d))
            except ValueError:
                out.append({"_unparsed": d})
        return out

    def errors(self):
        return [c for c in self.chunks() if isinstance(c, dict) and "error" in c]

    def content(self, index=0, field=None):
        """Concatenated delta content (chat) or text (completions) of a choice."""
        out = []
        for c in self.chunks():
            for ch in (c.get("choices") or []) if isinstance(c, dict) else []:
                if ch.get("index", 0) != index:
                    continue
                if field == "text" or "text" in ch:
                    t = ch.get("text")
                else:
                    t = (ch.get("delta") or {}).get("content")
                if isinstance(t, str):
                    out.append(t)
        return "".join(out)


def _next_block(buf):
    """Split off the first complete SSE block (ended by a blank line)."""
    best = None
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = buf.find(sep)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, len(sep))
    if best is None:
        return None
    i, n = best
    return buf[:i], buf[i + n:]


def _sse_data(block):
    """The data of one SSE event block; None for a block without data lines
    (comments, keep-alives)."""
    lines = block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    data = [ln[6:] if ln.startswith("data: ") else ln[5:]
            for ln in lines if ln.startswith("data:")]
    return "\n".join(data) if data else None


# ---------------------------------------------------------------- gateway

class Gateway:
    """One gptapi process with its own config file, started on first use."""

    def __init__(self, runner, name, cfg, env=None, check_health=True, args=None, nofile=None):
        self.R = runner
        self.args = list(args or [])  # more command-line flags after -config
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the process, if set
        self.name = name
        self.dir = os.path.join(runner.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.db_path = os.path.join(self.dir, "data", "gptapi.db")
        self.spill_dir = os.path.join(self.dir, "spill")
        base = {
            "server": {"listen": "127.0.0.1:%d" % self.port,
                       "max_body_bytes": 1 << 20, "read_timeout": "10s",
                       "idle_timeout": "30s", "shutdown_timeout": "15s"},
            "log": {"level": "info", "format": "text"},
            "logsink": {"path": self.db_path, "queue_size": 8192,
                        "batch_size": 256, "flush_interval": "50ms",
                        "store_bodies": True, "max_body_log_bytes": 1048576,
                        "spill_dir": self.spill_dir},
            "check_config": {"connect_timeout": "1s", "first_byte_timeout": "3s",
                             "stream_idle_timeout": "3s", "request_timeout": "6s",
                             "failure_threshold": 100000, "cooldown": "1s",
                             "max_fallback_depth": 3, "models_timeout": "1s",
                             "models_cache_ttl": "30s"},
            "openai_clients": [],
        }
        self.cfg = deep_merge(base, cfg)
        self.config_path = os.path.join(self.dir, "config.yaml")
        self.log_path = os.path.join(self.dir, "gptapi.log")
        self.env = env
        self.proc = None
        self.err = None
        self.exit_code = None
        self.write_config()

    def write_config(self, cfg=None):
        if cfg is not None:
            self.cfg = cfg
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(to_yaml(self.cfg) + "\n")
        os.replace(tmp, self.config_path)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=15):
        env = dict(os.environ)
        env.update(self.env or {})
        logf = open(self.log_path, "ab")
        limit = None
        if self.nofile:
            def limit(n=self.nofile):
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = track(subprocess.Popen(
            [self.R.binary, "-config", self.config_path] + self.args,
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.dir, preexec_fn=limit))
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.err = "gptapi %s exited with %d at start: %s" % (
                    self.name, self.proc.returncode, self.log_tail(8))
                raise CheckFail(self.err)
            try:
                r = http_request(self.port, "GET", "/health", timeout=1)
                if r.status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.err = "gptapi %s did not serve /health within %ds: %s" % (
                    self.name, timeout, self.log_tail(8))
                self.kill()
                raise CheckFail(self.err)
            time.sleep(0.05)

    def ensure(self):
        if self.err:
            raise CheckFail(self.err)
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.err = "gptapi %s died (exit %s): %s" % (
                    self.name, self.proc.returncode, self.log_tail(8))
                raise CheckFail(self.err)
            self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM, wait up to timeout, then kill. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.exit_code = "killed after %ds" % timeout
                return self.exit_code
        self.exit_code = self.proc.returncode
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def restart(self):
        self.stop()
        self.proc = None
        self.err = None
        self.start()

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    # requests ----------------------------------------------------------
    def req(self, method, path, body=None, headers=None, timeout=15):
        self.ensure()
        return http_request(self.port, method, path, body, headers, timeout)

    def get(self, path, headers=None, timeout=15):
        return self.req("GET", path, None, headers, timeout)

    def post(self, path, body, headers=None, timeout=15):
        return self.req("POST", path, body, headers, timeout)

    def chat(self, model, messages=None, headers=None, timeout=15, **extra):
        body = {"model": model,
                "messages": messages or [{"role": "user", "content": "hi"}]}
        body.update(extra)
        return self.post("/v1/chat/completions", body, headers, timeout)

    def stream(self, path, body, headers=None, timeout=15):
        self.ensure()
        b = dict(body)
        b.setdefault("stream", True)
        return Stream(self.port, path, b, headers, timeout)

    def stream_chat(self, model, messages=None, headers=None, timeout=15, **extra):
        body = {"model": model, "stream": True,
                "messages": messages or [{"role": "user", "content": "hi"}]}
        body.update(extra)
        return self.stream("/v1/chat/completions", body, headers, timeout)

    # records -----------------------------------------------------------
    def rows(self, where="1=1", args=(), path=None):
        path = path or self.db_path
        if not os.path.exists(path):
            return []
        try:
            db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        except sqlite3.Error:
            return []
        try:
            db.row_factory = sqlite3.Row
            # A text column holds the bytes as given; an upstream's answer
            # need not be UTF-8, which sqlite3's default would refuse.
            db.text_factory = lambda b: b.decode("utf-8", "replace")
            return [dict(r) for r in db.execute(
                "SELECT * FROM requests WHERE " + where, args)]
        except sqlite3.Error:
            return []
        finally:
            db.close()

    def row(self, request_id, timeout=6):
        """The record of one request id, waiting for the background writer."""
        def get():
            r = self.rows("request_id = ?", (request_id,))
            return r[0] if r else None
        try:
            return wait_until(get, timeout, 0.05, "the record of %s" % request_id)
        except CheckFail:
            raise CheckFail("no record with request_id %s after %ds" % (request_id, timeout))


# ---------------------------------------------------------------- runner

class Runner:
    def __init__(self, binary, kfilter, verbose, tmp):
        self.binary = binary
        self.k = kfilter
        self.verbose = verbose
        self.tmp = tmp
        self.passed = 0
        self.failed = 0
        self.failures = []
        self._mocks = []
        self._gateways = []
        self._seq = 0

    def selected(self, name):
        return not self.k or self.k in name

    def mock(self, name, models=None):
        m = MockUpstream(name, models)
        self._mocks.append(m)
        return m

    def gateway(self, name, cfg, env=None, args=None, nofile=None):
        self._seq += 1
        g = Gateway(self, "%02d-%s" % (self._seq, name), cfg, env, args=args, nofile=nofile)
        self._gateways.append(g)
        return g

    def check(self, name):
        """Decorator: run the function now as the check `name`."""
        def deco(fn):
            if not self.selected(name):
                return fn
            for m in self._mocks:
                m.reset()
            t0 = time.monotonic()
            try:
                detail = fn()
                self.passed += 1
                extra = ""
                if self.verbose:
                    extra = " (%.2fs%s)" % (time.monotonic() - t0,
                                            ", " + str(detail) if detail else "")
                print("PASS %s%s" % (name, extra), flush=True)
            except KeyboardInterrupt:
                raise
            except CheckFail as e:
                self._fail(name, str(e))
            except AssertionError as e:
                self._fail(name, str(e) or "assertion failed")
            except Exception as e:  # a crash of the check is a failure too
                msg = "%s: %s" % (type(e).__name__, e)
                if self.verbose:
                    msg += " | " + traceback.format_exc().replace("\n", " | ")
                self._fail(name, msg)
            return fn
        return deco

    def _fail(self, name, reason):
        self.failed += 1
        reason = reason.replace("\n", " ")
        self.failures.append((name, reason))
        print("FAIL %s: %s" % (name, reason), flush=True)
        if self.verbose:
            for g in self._gateways:
                if g.proc is not None:
                    print("    gptapi %s log: %s" % (g.name, g.log_tail(12)), flush=True)

    def group(self, fn):
        """Run one group of checks with its own mocks and gateways."""
        try:
            fn(self)
        finally:
            for g in self._gateways:
                if g.proc is not None and g.proc.poll() is None:
                    g.stop(timeout=10)
            closers = [threading.Thread(target=m.close, daemon=True) for m in self._mocks]
            for t in closers:
                t.start()
            for t in closers:
                t.join(5)
            self._gateways = []
            self._mocks = []


def new_tmpdir():
    return tempfile.mkdtemp(prefix="gptapi-e2e-")


def log(msg):
    print(msg, file=sys.stderr, flush=True)
