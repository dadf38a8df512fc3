"""Scripted mock upstreams for the gptapi end-to-end runner.

Each MockUpstream is an OpenAI-compatible server on 127.0.0.1 whose answer the
runner scripts before each check (JSON, SSE with pauses and breaks, failures,
stalls), and which records every request it received so a check can assert
what gptapi sent upstream. Standard library only.
"""

import base64
import json
import random
import select
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = [
    "MockUpstream", "Json", "Sse", "Fail", "Stall", "SlowJson", "Trickle", "Hold",
    "refused_url", "free_port", "chat_chunks", "completion_chunks",
    "chat_answer", "completion_answer",
]


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def refused_url():
    """A base URL whose port has nothing listening: connects are refused."""
    return "http://127.0.0.1:%d/v1" % free_port()


# ---------------------------------------------------------------- actions

class Json:
    """Answer with one JSON body (or raw bytes) after an optional delay."""

    def __init__(self, body, status=200, delay=0.0, headers=None, close_idle=None):
        self.body, self.status, self.delay = body, status, delay
        self.headers = headers or {}
        self.close_idle = close_idle    # close the kept-alive connection after this many seconds


class SlowJson:
    """Send headers and the first half of the body at once, the rest later."""

    def __init__(self, body, status=200, gap=3.0):
        self.body, self.status, self.gap = body, status, gap


class Trickle:
    """Send the status line and headers one byte every `gap` seconds (a
    padding header makes them `pad` bytes longer), then the JSON body."""

    def __init__(self, body, gap=0.5, pad=120):
        self.body, self.gap, self.pad = body, gap, pad


class Fail(Json):
    """An upstream error answer with an OpenAI-shaped body."""

    def __init__(self, status=500, message=None, delay=0.0):
        msg = message or ("mock failure %d" % status)
        super().__init__({"error": {"message": msg, "type": "server_error",
                                    "code": status}}, status, delay)


class Hold(Json):
    """Answer like Json after `seconds`, unless gptapi closes the connection
    first: then rec.peer_closed_at is set and nothing is sent (an upstream
    whose generation was cancelled)."""

    def __init__(self, body, seconds, status=200):
        Json.__init__(self, body, status)
        self.seconds = seconds


class Stall:
    """Send nothing for `seconds`, then close the connection."""

    def __init__(self, seconds):
        self.seconds = seconds


class Cut:
    """A JSON answer whose connection breaks (FIN, or a reset) after `at`
    bytes of its body, though Content-Length promised all of it."""

    def __init__(self, body, at, reset=False):
        self.body, self.at, self.reset = body, at, reset


class Raw:
    """Bytes written as they are in place of an HTTP answer, then the
    connection closed: status lines, headers and framing of any shape."""

    def __init__(self, data):
        self.data = data


class Pieces:
    """A text/event-stream answer of raw body bytes, written as chunks of 1
    to 64 bytes (sizes drawn from seed) with short pauses now and then, so
    events reach gptapi split anywhere, as TCP may deliver them."""

    def __init__(self, data, seed=0):
        self.data = data
        self.seed = seed


class Sse:
    """A text/event-stream answer.

    chunks: dicts (sent as `data: <json>`) or raw strings (sent verbatim).
    interval: pause between chunks; first_delay: pause before the status line;
    head_delay: pause after the headers before the first chunk;
    pauses: {index: seconds} extra pause before chunk `index`;
    break_after: close the socket after that many chunks (no [DONE]);
    done: send `data: [DONE]` at the end; usage: a usage object, sent as a
    usage-only chunk when the request asked for stream_options.include_usage.
    """

    def __init__(self, chunks, interval=0.0, first_delay=0.0, head_delay=0.0,
                 pauses=None, break_after=None, done=True, usage=None,
                 always_usage=False, reset=False):
        self.chunks = list(chunks)
        self.interval = interval
        self.first_delay = first_delay
        self.head_delay = head_delay
        self.pauses = pauses or {}
        self.break_after = break_after
        self.done = done
        self.usage = usage
        self.always_usage = always_usage
        self.reset = reset              # break with a TCP reset instead of a FIN


# ---------------------------------------------------------------- answers

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def chat_answer(model, contents, usage=None, cid="chatcmpl-mock"):
    if contents is None or isinstance(contents, str):
        contents = [contents]
    return {
        "id": cid, "object": "chat.completion", "created": 1700000000,
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c},
                     "finish_reason": "stop", "logprobs": None}
                    for i, c in enumerate(contents)],
        "usage": dict(usage or USAGE),
    }


def completion_answer(model, texts, usage=None):
    if isinstance(texts, str):
        texts = [texts]
    return {
        "id": "cmpl-mock", "object": "text_completion", "created": 1700000000,
        "model": model,
        "choices": [{"index": i, "text": t, "finish_reason": "stop",
                     "logprobs": None} for i, t in enumerate(texts)],
        "usage": dict(usage or USAGE),
    }


def chat_chunks(model, pieces, n=1, finish="stop", role_chunk=True,
                cid="chatcmpl-mockstream"):
    """OpenAI chat.completion.chunk objects: a role chunk, one chunk per
    piece for each of n choices, and a finish chunk per choice."""
    base = {"id": cid, "object": "chat.completion.chunk",
            "created": 1700000000, "model": model}
    out = []
    if role_chunk:
        for i in range(n):
            out.append(dict(base, choices=[{"index": i, "delta": {
                "role": "assistant", "content": ""}, "finish_reason": None}]))
    for p in pieces:
        for i in range(n):
            out.append(dict(base, choices=[{"index": i, "delta": {
                "content": p if n == 1 else "%s%d" % (p, i)},
                "finish_reason": None}]))
    for i in range(n):
        out.append(dict(base, choices=[{"index": i, "delta": {},
                                        "finish_reason": finish}]))
    return out


def completion_chunks(model, pieces, finish="stop"):
    base = {"id": "cmpl-mockstream", "object": "text_completion",
            "created": 1700000000, "model": model}
    out = [dict(base, choices=[{"index": 0, "text": p, "finish_reason": None,
                                "logprobs": None}]) for p in pieces]
    out.append(dict(base, choices=[{"index": 0, "text": "",
                                    "finish_reason": finish,
                                    "logprobs": None}]))
    return out


# ---------------------------------------------------------------- records

class Received:
    """One request as the mock saw it, plus what happened while answering."""

    def __init__(self, method, path, headers, body):
        self.t = time.monotonic()
        self.method = method
        self.path = path
        self.headers = headers          # lower-case name -> value
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None
        self.sent = []                  # monotonic time of each SSE chunk written
        self.write_failed_at = None     # monotonic time a write to gptapi failed
        self.finished_at = None
        self.peer_closed_at = None      # Hold, Sse head_delay: monotonic time gptapi closed the connection
        self.answer = None              # bytes of a JSON answer sent

    def __repr__(self):
        return "<%s %s>" % (self.method, self.path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass  # a peer resetting a kept-alive connection is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mockllm/1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        mock = self.server.mock
        body = self._read_body()
        rec = Received(self.command, self.path,
                       {k.lower(): v for k, v in self.headers.items()}, body)
        mock._record(rec)
        action = mock._action(rec)
        try:
            self._answer(mock, rec, action)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                socket.timeout, OSError):
            if rec.write_failed_at is None:
                rec.write_failed_at = time.monotonic()
            self.close_connection = True
        finally:
            rec.finished_at = time.monotonic()

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _write(self, rec, data):
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            rec.write_failed_at = time.monotonic()
            raise

    def _answer(self, mock, rec, action):
        if isinstance(action, Stall):
            mock.sleep(action.seconds)
            self.close_connection = True
            return
        if isinstance(action, Trickle):
            data = json.dumps(action.body).encode()
            head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "X-Pad: %s\r\nContent-Length: %d\r\n\r\n" % ("p" * action.pad, len(data))).encode()
            for i in range(len(head)):
                self._write(rec, head[i:i + 1])
                self.wfile.flush()
                if mock._stop.is_set():
                    return
                mock.sleep(action.gap)
            self._write(rec, data)
            return
        if isinstance(action, SlowJson):
            data = action.body if isinstance(action.body, bytes) else \
                json.dumps(action.body).encode()
            self.send_response(action.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            half = len(data) // 2
            self._write(rec, data[:half])
            mock.sleep(action.gap)
            self._write(rec, data[half:])
            return
        if isinstance(action, Raw):
            self._write(rec, action.data)
            self.wfile.flush()
            self._break()
            return
        if isinstance(action, Cut):
            data = json.dumps(action.body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(rec, data[:action.at])
            self.wfile.flush()
            self._break(action.reset)
            return
        if isinstance(action, Hold) and self._held(mock, rec, action.seconds):
            return
        if isinstance(action, Json):
            if action.delay:
                mock.sleep(action.delay)
            data = action.body if isinstance(action.body, bytes) else \
                json.dumps(action.body).encode()
            self.send_response(action.status)
            self.send_header("Content-Type", "application/json")
            for k, v in action.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            rec.answer = data
            self._write(rec, data)
            if getattr(action, "close_idle", None) is not None:
                mock.sleep(action.close_idle)
                self._break()
            return
        if isinstance(action, Sse):
            self._sse(mock, rec, action)
            return
        if isinstance(action, Pieces):
            self._pieces(rec, action)
            return
        raise TypeError("unknown mock action %r" % (action,))

    def _held(self, mock, rec, seconds):
        """Wait up to seconds; True if gptapi closed the connection meanwhile."""
        end = time.monotonic() + seconds
        sock = self.connection
        while time.monotonic() < end and not mock._stop.is_set():
            r, _, _ = select.select([sock], [], [], 0.05)
            if not r:
                continue
            try:
                b = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                b = b""
            if not b:
                rec.peer_closed_at = time.monotonic()
                self.close_connection = True
                return True
            time.sleep(0.05)
        return False

    def _sse(self, mock, rec, a):
        if a.first_delay:
            mock.sleep(a.first_delay)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        if a.head_delay and self._held(mock, rec, a.head_delay):
            return  # gptapi closed the connection: the "prefill" was cancelled
        chunks = list(a.chunks)
        want_usage = a.always_usage
        if rec.json and isinstance(rec.json, dict):
            so = rec.json.get("stream_options")
            if isinstance(so, dict) and so.get("include_usage") is True:
                want_usage = True
        if a.usage is not None and want_usage:
            model = rec.json.get("model") if isinstance(rec.json, dict) else ""
            obj = "chat.completion.chunk"
            if chunks and isinstance(chunks[0], dict):
                obj = chunks[0].get("object", obj)
                model = chunks[0].get("model", model)
            chunks.append({"id": "usage", "object": obj,
                           "created": 1700000000, "model": model,
                           "choices": [], "usage": a.usage})
        for i, c in enumerate(chunks):
            if a.break_after is not None and i >= a.break_after:
                self._break(a.reset)
                return
            if i > 0 and a.interval:
                mock.sleep(a.interval)
            if i in a.pauses:
                mock.sleep(a.pauses[i])
            payload = c if isinstance(c, str) else \
                "data: " + json.dumps(c) + "\n\n"
            self._chunk(rec, payload.encode())
            rec.sent.append(time.monotonic())
        if a.break_after is not None and a.break_after >= len(chunks):
            self._break(a.reset)
            return
        if a.done:
            if a.interval:
                mock.sleep(a.interval)
            self._chunk(rec, b"data: [DONE]\n\n")
            rec.sent.append(time.monotonic())
        self._write(rec, b"0\r\n\r\n")

    def _pieces(self, rec, a):
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        r = random.Random(a.seed)
        i = 0
        while i < len(a.data):
            n = r.randint(1, 64)
            self._chunk(rec, a.data[i:i + n])
            i += n
            if r.random() < 0.1:
                time.sleep(0.001)
        self._write(rec, b"0\r\n\r\n")

    def _chunk(self, rec, data):
        self._write(rec, b"%x\r\n%s\r\n" % (len(data), data))

    def _break(self, reset=False):
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            for f in (self.rfile, self.wfile, self.connection):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
            return
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class MockUpstream:
    """One scripted upstream. base_url ends in /v1 like a vLLM server."""

    def __init__(self, name, models=None):
        self.name = name
        self.models = list(models or [])
        self.models_action = None
        self.waiting = 0          # vllm:num_requests_waiting on GET /metrics
        self.metrics_action = None  # or what GET /metrics answers instead
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._default = None
        self._script = []
        self.received = []
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.mock = self
        self.port = self.server.server_address[1]
        self.base_url = "http://127.0.0.1:%d/v1" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    # scripting -------------------------------------------------------
    def reset(self):
        """Forget recorded requests and go back to the default answers."""
        with self._lock:
            self._default = None
            self._script = []
            self.received = []
            self.models_action = None
            self.waiting = 0
            self.metrics_action = None

    def always(self, action):
        """Answer every non-/models request with `action` (a value or a
        callable taking the Received and returning an action or None)."""
        with self._lock:
            self._default = action

    def script(self, actions, then=None):
        """Answer the next requests with `actions` in turn, then with `then`."""
        with self._lock:
            self._script = list(actions)
            self._default = then

    def sleep(self, seconds):
        self._stop.wait(seconds)

    # records ---------------------------------------------------------
    def _record(self, rec):
        with self._lock:
            self.received.append(rec)

    def calls(self, suffix=None):
        """Requests received, optionally only those whose path ends with
        suffix; /models fetches are excluded unless asked for."""
        with self._lock:
            out = list(self.received)
        if suffix is None:
            return [r for r in out if not r.path.endswith("/models") and r.path != "/metrics"]
        return [r for r in out if r.path.split("?")[0].endswith(suffix)]

    def last(self, suffix=None):
        c = self.calls(suffix)
        if not c:
            raise AssertionError("mock %s received no %s request" %
                                 (self.name, suffix or "proxied"))
        return c[-1]

    # answers ---------------------------------------------------------
    def _action(self, rec):
        path = rec.path.split("?")[0]
        if path == "/metrics":  # vLLM's Prometheus endpoint, beside /v1
            act = self.metrics_action
            if act is None:
                return Json((
                    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                    "# TYPE vllm:num_requests_waiting gauge\n"
                    'vllm:num_requests_waiting{engine="0",model_name="mock"} %d\n' % self.waiting).encode(),
                    headers={"X-Metrics": "vllm"})
            return act(rec) if callable(act) else act
        if path.endswith("/models"):
            act = self.models_action
            if act is None:
                return Json({"object": "list", "data": [
                    {"id": m, "object": "model", "created": 1700000000,
                     "owned_by": self.name} for m in self.models]})
            return act(rec) if callable(act) else act
        with self._lock:
            act = self._script.pop(0) if self._script else self._default
        if callable(act):
            act = act(rec)
        if act is None:
            act = self.default_answer(rec)
        return act

    def default_answer(self, rec):
        body = rec.json if isinstance(rec.json, dict) else {}
        model = body.get("model", "") if isinstance(body.get("model"), str) else ""
        path = rec.path.split("?")[0]
        stream = body.get("stream") is True
        words = ["Hello", " from", " " + self.name]
        if path.endswith("/chat/completions"):
            if stream:
                return Sse(chat_chunks(model, words), usage=dict(USAGE))
            return Json(chat_answer(model, "".join(words)))
        if path.endswith("/completions"):
            if stream:
                return Sse(completion_chunks(model, words), usage=dict(USAGE))
            return Json(completion_answer(model, "".join(words)))
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            vec = [0.25, -0.5, 0.125]
            if body.get("encoding_format") == "base64":  # as vLLM and OpenAI: float32, little-endian
                vec = base64.b64encode(struct.pack("<%df" % len(vec), *vec)).decode()
            return Json({"object": "list", "model": model, "data": [
                {"object": "embedding", "index": i,
                 "embedding": vec} for i in range(n)],
                "usage": {"prompt_tokens": 5, "total_tokens": 5}})
        if path.endswith("/rerank"):
            docs = body.get("documents") or []
            return Json({"id": "rerank-mock", "model": model, "results": [
                {"index": i, "relevance_score": round(1.0 / (i + 1), 4)}
                for i in range(len(docs))],
                "usage": {"total_tokens": 9}})
        return Json({"error": {"message": "mock: no route " + path}}, 404)

    def close(self):
        self._stop.set()
        try:
            self.server.shutdown()
            self.server.server_close()
        except OSError:
            pass
