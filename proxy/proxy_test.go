package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// captureSink keeps the records a test server produces.
type captureSink struct {
	mu   sync.Mutex
	recs []*logsink.Record
	ch   chan struct{}
}

func newCaptureSink() *captureSink { return &captureSink{ch: make(chan struct{}, 1024)} }

func (c *captureSink) Put(r *logsink.Record) {
	c.mu.Lock()
	c.recs = append(c.recs, r)
	c.mu.Unlock()
	c.ch <- struct{}{}
}

func (c *captureSink) wait(t *testing.T) *logsink.Record {
	t.Helper()
	select {
	case <-c.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no record within 5s")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recs[len(c.recs)-1]
}

// startUpstream serves h on a loopback port and returns its base URL.
func startUpstream(t testing.TB, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: h}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return "http://" + ln.Addr().String() + "/v1"
}

// testConfig is a valid config with one client per base URL.
func testConfig(urls ...string) *configs.Config {
	cfg := configs.Default()
	cfg.Check.ConnectTimeout = time.Second
	cfg.Check.FirstByteTimeout = 2 * time.Second
	cfg.Check.StreamIdleTimeout = 2 * time.Second
	cfg.Check.RequestTimeout = 3 * time.Second
	for i, u := range urls {
		cfg.Clients = append(cfg.Clients, configs.Client{
			Name: "up" + strconv.Itoa(i), BaseURL: u, KeyMode: "config",
			Match:    configs.Match{Type: "keyword", Value: []string{"qwen"}},
			Priority: 1, StreamUsage: true, MaxConns: 64,
		})
	}
	return cfg
}

// startProxy serves a Server for cfg and returns its address.
func startProxy(t testing.TB, cfg *configs.Config, sink RecordSink) (*Server, string) {
	t.Helper()
	s, err := New(cfg, sink, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck
	// The whole shutdown, poller included: one left polling would allocate
	// under later tests' allocation counts.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, ln.Addr().String()
}

func post(t testing.TB, addr, path, body string) (int, http1Header, []byte) {
	t.Helper()
	return postWith(t, addr, path, []byte(body))
}

type http1Header map[string]string

// postWith posts body to path on addr with the headers kv (name, value,
// …) and returns the answer's status, the headers tests look at, and body.
func postWith(t testing.TB, addr, path string, body []byte, kv ...string) (int, http1Header, []byte) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod("POST")
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	req.SetBodyRaw(body)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	h := http1Header{}
	for _, k := range []string{"X-Gptapi-Upstream", "X-Request-Id", "Content-Type"} {
		h[k] = string(resp.Header.Peek(k))
	}
	return resp.StatusCode(), h, append([]byte(nil), resp.Body()...)
}

const chatBody = `{"model":"qwen-7b","messages":[{"role":"user","content":" hello "}]}`

func TestFailoverThenAnswer(t *testing.T) {
	var failed, served int
	var mu sync.Mutex
	bad := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		failed++
		mu.Unlock()
		ctx.SetStatusCode(503)
	})
	good := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		served++
		mu.Unlock()
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	})
	cfg := testConfig(bad, good)
	cfg.Clients[0].Priority = 1000000 // tried first almost surely
	cfg.Clients[1].Priority = 1
	sink := newCaptureSink()
	_, addr := startProxy(t, cfg, sink)
	status, h, body := post(t, addr, "/v1/chat/completions", chatBody)
	if status != 200 || h["X-Gptapi-Upstream"] != "up1" || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Fatalf("got %d %v %s", status, h, body)
	}
	rec := sink.wait(t)
	if string(rec.Upstream) != "up1" || rec.Status != 200 || string(rec.Tried) != `["up0/qwen-7b","up1/qwen-7b"]` {
		t.Fatalf("record upstream=%s status=%d tried=%s", rec.Upstream, rec.Status, rec.Tried)
	}
	if !bytes.Contains(rec.RequestBody, []byte(`"content":"hello"`)) {
		t.Fatalf("record request body not preprocessed: %s", rec.RequestBody)
	}
}

func TestAllFailedTriedAndTimeout(t *testing.T) {
	slow := startUpstream(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(1500 * time.Millisecond) })
	cfg := testConfig(slow)
	cfg.Check.FirstByteTimeout = 300 * time.Millisecond
	cfg.Clients = append(cfg.Clients, configs.Client{Name: "dead", BaseURL: "http://127.0.0.1:1/v1", KeyMode: "config",
		Match: configs.Match{Type: "keyword", Value: []string{"qwen"}}, Priority: 0, StreamUsage: true})
	_, addr := startProxy(t, cfg, nil)
	status, _, body := post(t, addr, "/v1/chat/completions", chatBody)
	var e struct {
		Error struct {
			Message, Code string
			Tried         []string
		}
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	// The standby (dead, connection refused) is tried last; the last
	// failure was not a timeout, so 502.
	if status != 502 || e.Error.Code != "all_upstreams_failed" || strings.Join(e.Error.Tried, ",") != "up0/qwen-7b,dead/qwen-7b" {
		t.Fatalf("got %d %s", status, body)
	}
	if !strings.HasSuffix(e.Error.Message, `Tried: ["up0/qwen-7b", "dead/qwen-7b"]`) {
		t.Fatalf("message %q", e.Error.Message)
	}
	cfg.Clients = cfg.Clients[:1]
	_, addr = startProxy(t, cfg, nil)
	if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 504 {
		t.Fatalf("timeout: got %d %s", status, body)
	}
}

const sseChunks = 5

func sseUpstream(t testing.TB, gap time.Duration) string {
	return startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := 0; i < sseChunks; i++ {
				w.WriteString(`data: {"id":"c","model":"up-model","choices":[{"index":0,"delta":{"content":"t` + strconv.Itoa(i) + `"},"finish_reason":null}]}` + "\n\n")
				if err := w.Flush(); err != nil {
					return
				}
				time.Sleep(gap)
			}
			w.WriteString(`data: {"id":"c","model":"up-model","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}` + "\n\n")
			w.WriteString("data: [DONE]\n\n")
		})
	})
}

// readStream posts a streaming chat and returns the events' data lines as
// they arrived, with the time each arrived.
func readStream(t *testing.T, addr, body string) ([]string, []time.Time, int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	br := bufio.NewReader(conn)
	var resp fasthttp.Response
	resp.StreamBody = true
	if err := resp.Read(br); err != nil {
		t.Fatal(err)
	}
	var lines []string
	var at []time.Time
	sc := bufio.NewScanner(resp.BodyStream())
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") {
			lines = append(lines, l[6:])
			at = append(at, time.Now())
		}
	}
	return lines, at, resp.StatusCode()
}

func TestStreamRelay(t *testing.T) {
	up := sseUpstream(t, 100*time.Millisecond)
	cfg := testConfig(up)
	cfg.Clients[0].SpecialPrefix = "P:"
	cfg.Clients[0].Model = "up-model"
	sink := newCaptureSink()
	_, addr := startProxy(t, cfg, sink)
	lines, at, status := readStream(t, addr, `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if status != 200 || len(lines) != sseChunks+1 {
		t.Fatalf("status %d, %d data lines: %q", status, len(lines), lines)
	}
	// Incremental: the first chunk arrived well before the last.
	if at[len(at)-1].Sub(at[0]) < 300*time.Millisecond {
		t.Errorf("chunks arrived together: first %v last %v", at[0], at[len(at)-1])
	}
	if !strings.Contains(lines[0], `"content":"P:t0"`) || strings.Contains(lines[1], "P:") {
		t.Errorf("prefix: %q %q", lines[0], lines[1])
	}
	if !strings.Contains(lines[0], `"model":"qwen-7b"`) {
		t.Errorf("model not restored: %q", lines[0])
	}
	for _, l := range lines {
		if strings.Contains(l, `"usage"`) {
			t.Errorf("usage chunk not hidden: %q", l)
		}
	}
	if lines[len(lines)-1] != "[DONE]" {
		t.Errorf("last line %q", lines[len(lines)-1])
	}
	rec := sink.wait(t)
	if rec.Status != 200 || !bytes.Contains(rec.Chunks, []byte(`"usage":{"prompt_tokens":3`)) || !rec.Stream {
		t.Errorf("record status %d stream %v chunks %s", rec.Status, rec.Stream, rec.Chunks)
	}
}

// breakingUpstream sends the SSE headers and two chunks with chunked
// framing, then drops the connection without ending the body.
func breakingUpstream(t *testing.T) string {
	return rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if req.Read(br) != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < 2; i++ {
			ev := `data: {"choices":[{"index":0,"delta":{"content":"t` + strconv.Itoa(i) + `"}}]}` + "\n\n"
			io.WriteString(c, strconv.FormatInt(int64(len(ev)), 16)+"\r\n"+ev+"\r\n")
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// rawUpstream is an upstream on loopback that serves each connection with
// serve, byte by byte as a test needs it, and closes it after; it returns
// the upstream's base URL.
func rawUpstream(tb testing.TB, serve func(c net.Conn, br *bufio.Reader)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c, bufio.NewReaderSize(c, 64<<10))
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/v1"
}

// answering serves, for rawUpstream, resp to every request of a kept-alive
// connection.
func answering(resp []byte) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		for {
			req.Reset()
			if req.Read(br) != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}
}

func TestStreamBreakMidway(t *testing.T) {
	up := breakingUpstream(t)
	sink := newCaptureSink()
	_, addr := startProxy(t, testConfig(up), sink)
	lines, _, status := readStream(t, addr, `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if status != 200 || len(lines) != 3 || !strings.Contains(lines[2], `"error"`) {
		t.Fatalf("status %d lines %q", status, lines)
	}
	rec := sink.wait(t)
	if rec.Status != 502 || len(rec.Error) == 0 || !strings.Contains(lines[2], string(rec.Error)) {
		t.Fatalf("record status %d error %q; event %q", rec.Status, rec.Error, lines[2])
	}
}

// The caller leaving mid-stream closes the upstream connection at once.
func TestStreamCallerGone(t *testing.T) {
	upstreamSaw := make(chan error, 1)
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := 0; i < 200; i++ {
				w.WriteString(`data: {"choices":[{"index":0,"delta":{"content":"x"}}]}` + "\n\n")
				if err := w.Flush(); err != nil {
					upstreamSaw <- err
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			upstreamSaw <- nil
		})
	})
	sink := newCaptureSink()
	_, addr := startProxy(t, testConfig(up), sink)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"qwen","stream":true,"messages":[{"role":"user","content":"x"}]}`
	io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	buf := make([]byte, 512)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case err := <-upstreamSaw:
		if err == nil {
			t.Fatal("upstream finished the whole stream: its connection was not closed")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("upstream still sending 2s after the caller left")
	}
	if rec := sink.wait(t); rec.Status != 499 {
		t.Fatalf("record status %d, want 499", rec.Status)
	}
}

func TestStreamFailoverBeforeFirstByte(t *testing.T) {
	silent := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.Flush() // headers, then nothing
			time.Sleep(2 * time.Second)
		})
	})
	good := sseUpstream(t, 0)
	cfg := testConfig(silent, good)
	cfg.Clients[0].Priority = 1000000
	cfg.Check.FirstByteTimeout = 300 * time.Millisecond
	sink := newCaptureSink()
	_, addr := startProxy(t, cfg, sink)
	lines, _, status := readStream(t, addr, `{"model":"qwen","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if status != 200 || len(lines) != sseChunks+1 {
		t.Fatalf("status %d lines %q", status, lines)
	}
	if rec := sink.wait(t); string(rec.Upstream) != "up1" || string(rec.Tried) != `["up0/qwen","up1/qwen"]` {
		t.Fatalf("record upstream %s tried %s", rec.Upstream, rec.Tried)
	}
}

// An answer to a stream request that is not a stream is the upstream's
// answer, relayed as a non-stream one: one JSON answer from an upstream
// that ignored "stream" (prefix and model name put in, no failover), or
// its own refusal, decoded when compressed.
func TestStreamAnsweredWhole(t *testing.T) {
	var gzipped bytes.Buffer
	zw := gzip.NewWriter(&gzipped)
	io.WriteString(zw, `{"error":{"message":"context too long"}}`)
	zw.Close()
	for _, tc := range []struct {
		name, ctype, encoding string
		status                int
		body                  []byte
		want                  string
	}{
		{"json", "application/json; charset=utf-8", "", 200,
			[]byte(`{"object":"chat.completion","model":"up-model","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`),
			`{"object":"chat.completion","model":"qwen-7b","choices":[{"index":0,"message":{"role":"assistant","content":"P:hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`},
		{"gzipped refusal", "application/json", "gzip", 400, gzipped.Bytes(), `{"error":{"message":"context too long"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int64
			whole := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
				asked.Add(1)
				ctx.SetStatusCode(tc.status)
				ctx.SetContentType(tc.ctype)
				if tc.encoding != "" {
					ctx.Response.Header.Set(fasthttp.HeaderContentEncoding, tc.encoding)
				}
				ctx.SetBody(tc.body)
			})
			other := sseUpstream(t, 0)
			cfg := testConfig(whole, other)
			cfg.Clients[0].Priority, cfg.Clients[0].SpecialPrefix, cfg.Clients[0].Model = 1000000, "P:", "up-model"
			sink := newCaptureSink()
			_, addr := startProxy(t, cfg, sink)
			status, h, body := post(t, addr, "/v1/chat/completions", `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`)
			if status != tc.status || string(body) != tc.want || h["X-Gptapi-Upstream"] != "up0" || h["Content-Type"] != tc.ctype {
				t.Fatalf("got %d %q from %s (%s), want %d %s", status, body, h["X-Gptapi-Upstream"], h["Content-Type"], tc.status, tc.want)
			}
			rec := sink.wait(t)
			if asked.Load() != 1 || rec.Status != tc.status || string(rec.ResponseBody) != tc.want || string(rec.Tried) != `["up0/qwen-7b"]` || !rec.Stream {
				t.Fatalf("asked %d; record %d tried %s stream %v body %s", asked.Load(), rec.Status, rec.Tried, rec.Stream, rec.ResponseBody)
			}
		})
	}
}

// An upstream that closes idle keep-alive connections (uvicorn's 5 s) must
// not fail the next request that picks a stale pooled connection.
func TestStalePooledConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{IdleTimeout: 50 * time.Millisecond, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(`{"choices":[]}`)
	}}
	go up.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = up.Shutdown() })
	cfg := testConfig("http://" + ln.Addr().String() + "/v1")
	_, addr := startProxy(t, cfg, nil)
	for i := 0; i < 3; i++ {
		if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
		time.Sleep(200 * time.Millisecond) // the upstream closes the idle connection meanwhile
	}
}

// A reused connection that breaks once the upstream has started its answer
// is not a stale one: the upstream ran the request, so it is not sent to
// it again (the caller gets the failure, as with any other broken answer).
// Only a connection closed before any byte came back is resent.
func TestNoResendOnceAnswered(t *testing.T) {
	const (
		plain     = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"choices\":[]}"
		events    = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t\"}}]}\n\ndata: [DONE]\n\n"
		streamed  = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 71\r\n\r\n" + events
		streamReq = `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`
	)
	if len(events) != 71 {
		t.Fatalf("events are %d bytes", len(events))
	}
	for _, tc := range []struct {
		name   string
		stream bool
		sent   string // what the second request gets before the break
		reset  bool
	}{
		{"body cut by a reset", false, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cho", true},
		{"body cut", false, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cho", false},
		{"headers cut by a reset", false, "HTTP/1.1 200 OK\r\nContent-Le", true},
		{"cut after an interim answer", false, "HTTP/1.1 100 Continue\r\n\r\n", false},
		{"stream headers cut by a reset", true, "HTTP/1.1 200 OK\r\nContent-Ty", true},
		{"stream headers cut", true, "HTTP/1.1 200 OK\r\nContent-Ty", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				var req fasthttp.Request
				for {
					req.Reset()
					if req.Read(br) != nil {
						return
					}
					if requests.Add(1) == 1 {
						if tc.stream {
							io.WriteString(c, streamed)
						} else {
							io.WriteString(c, plain)
						}
						continue
					}
					io.WriteString(c, tc.sent)
					if tc.reset {
						c.(*net.TCPConn).SetLinger(0)
					}
					return
				}
			})
			_, addr := startProxy(t, testConfig(up), nil)
			body := chatBody
			if tc.stream {
				body = streamReq
			}
			if status, _, b := post(t, addr, "/v1/chat/completions", body); status != 200 {
				t.Fatalf("first request: %d %s", status, b)
			}
			status, _, b := post(t, addr, "/v1/chat/completions", body)
			if status != 502 {
				t.Errorf("second request: %d %s, want 502", status, b)
			}
			if n := requests.Load(); n != 2 {
				t.Errorf("the upstream got %d requests, want 2: the broken answer's request was sent again", n)
			}
		})
	}
}

// Shutdown lets streams run until its context ends, then cuts them: the
// caller gets an error event and the record says why.
func TestShutdownCutsLongStream(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := 0; i < 100; i++ {
				w.WriteString(`data: {"choices":[{"index":0,"delta":{"content":"x"}}]}` + "\n\n")
				if w.Flush() != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	})
	sink := newCaptureSink()
	srv, addr := startProxy(t, testConfig(up), sink)
	type result struct {
		lines []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		body := `{"model":"qwen","stream":true,"messages":[{"role":"user","content":"x"}]}`
		io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		var resp fasthttp.Response
		resp.StreamBody = true
		if err := resp.Read(bufio.NewReader(conn)); err != nil {
			done <- result{err: err}
			return
		}
		var lines []string
		sc := bufio.NewScanner(resp.BodyStream())
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data: ") {
				lines = append(lines, l[6:])
			}
		}
		done <- result{lines: lines}
	}()
	shutdownSoon(t, srv, func() bool { return srv.ActiveStreams() > 0 })
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.lines) < 2 || !strings.Contains(r.lines[len(r.lines)-1], "shutting down") {
		t.Fatalf("stream did not end with the shutdown error event: %q", r.lines)
	}
	rec := sink.wait(t)
	if rec.Status != 502 || !strings.Contains(string(rec.Error), "shutting down") {
		t.Fatalf("record status %d error %q", rec.Status, rec.Error)
	}
}

// shutdownSoon waits up to 3 s for ready, then shuts srv down with 300 ms
// to finish; Shutdown must not fail or take 3 s.
func shutdownSoon(t *testing.T, srv *Server, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !ready() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
}

// A pooled exchange keeps a small upstream body and answer scratch for
// reuse, and drops large ones.
func TestExchangeResetDropsLargeBuffers(t *testing.T) {
	for _, tc := range []struct {
		size int
		kept bool
	}{{4 << 10, true}, {maxKeptText + 1, false}} {
		var x exchange
		x.upBody, x.scr = make([]byte, tc.size), make([]byte, tc.size)
		x.reset()
		if (cap(x.upBody) > 0) != tc.kept || (cap(x.scr) > 0) != tc.kept || len(x.upBody)+len(x.scr) != 0 {
			t.Errorf("%d-byte buffers: body %d/%d, scratch %d/%d after reset; kept %v wanted",
				tc.size, len(x.upBody), cap(x.upBody), len(x.scr), cap(x.scr), tc.kept)
		}
	}
}

// fasthttp keeps a request's body buffer with its connection until the
// connection closes; the handler lets a large one go once used, and a
// small one stays for reuse.
func TestLargeRequestBodyLetGo(t *testing.T) {
	cfg := testConfig(cannedUpstream(t, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`))
	s, err := New(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for _, tc := range []struct {
		size int
		kept bool
	}{{1 << 10, true}, {2 * maxKeptText, false}} {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, nil)
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/chat/completions")
		ctx.Request.SetBody([]byte(`{"model":"qwen","messages":[{"role":"user","content":"` + strings.Repeat("x", tc.size) + `"}]}`))
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%d-byte request: %d %s", tc.size, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if kept := cap(ctx.Request.Body()) > 0; kept != tc.kept {
			t.Errorf("%d-byte request: body buffer of %d bytes after the handler; kept %v wanted", tc.size, cap(ctx.Request.Body()), tc.kept)
		}
	}
}

// An upstream's model list compressed although gptapi asked for identity is
// decoded like any answer, within max_response_bytes: one that decodes past
// it is left out, as a failing upstream is.
func TestModelsCompressed(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.Bytes()
	}
	serve := func(body []byte) string {
		return startUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		})
	}
	small := serve(gz(`{"object":"list","data":[{"id":"m-gz","object":"model"}]}`))
	bomb := serve(gz(`{"object":"list","data":[{"id":"m-bomb","pad":"` + strings.Repeat("x", 1<<20) + `"}]}`))
	plain := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(`{"object":"list","data":[{"id":"m-plain","object":"model"}]}`)
	})
	cfg := testConfig(small, bomb, plain)
	cfg.Check.MaxResponseBytes = 64 << 10
	_, addr := startProxy(t, cfg, nil)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/v1/models")
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.Unmarshal(resp.Body(), &list); err != nil {
		t.Fatalf("%d %q: %s", resp.StatusCode(), resp.Body(), err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, ","); got != "m-gz,m-plain" {
		t.Errorf("models %q, want m-gz,m-plain", got)
	}
}

// max_conns bounds the connections to an upstream, plain answers and
// streams together: with 2, two slow plain requests and two slow streams
// at once never open a third connection; what waits past max_conn_wait
// fails over (here: to nothing, 502).
func TestMaxConnsCountsPlainAndStreams(t *testing.T) {
	var open, peak atomic.Int32
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		n := open.Add(1)
		defer open.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		var req fasthttp.Request
		if req.Read(br) != nil {
			return
		}
		time.Sleep(400 * time.Millisecond)
		if bytes.Contains(req.Body(), []byte(`"stream":true`)) {
			ev := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t\"}}]}\n\ndata: [DONE]\n\n"
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "+strconv.Itoa(len(ev))+"\r\n\r\n"+ev)
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"choices\":[]}")
	})
	cfg := testConfig(up)
	cfg.Clients[0].MaxConns = 2
	cfg.Check.MaxConnWait = 100 * time.Millisecond
	_, addr := startProxy(t, cfg, nil)
	streamBody := `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`
	statuses := make(chan int, 4)
	var wg sync.WaitGroup
	for _, body := range []string{chatBody, chatBody, streamBody, streamBody} {
		wg.Add(1)
		go func() { // post would call t.Fatal off the test's goroutine
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/v1/chat/completions")
			req.Header.SetMethod("POST")
			req.SetBodyString(body)
			if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
				t.Error(err)
			}
			statuses <- resp.StatusCode()
		}()
	}
	wg.Wait()
	close(statuses)
	got := map[int]int{}
	for s := range statuses {
		got[s]++
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("the upstream had %d connections at once, max_conns 2", p)
	}
	if got[200] != 2 || got[502] != 2 {
		t.Errorf("statuses %v, want two 200 and two 502 (no free connection)", got)
	}
}

// TestCompressedRequestBody: a body the caller compressed is decoded, within
// max_body_bytes of decoded bytes, and goes upstream and into the record as
// JSON; a coding gptapi cannot decode is a 415 and a broken one a 400,
// never "not valid JSON".
func TestCompressedRequestBody(t *testing.T) {
	got := make(chan []byte, 8)
	cfg := testConfig(startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		got <- append([]byte(nil), ctx.PostBody()...)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`)
	}))
	cfg.Server.MaxBodyBytes = 64 << 10
	sink := newCaptureSink()
	_, addr := startProxy(t, cfg, sink)
	body := `{"model":"qwen","messages":[{"role":"user","content":"hello"}]}`
	encode := func(enc func(io.Writer) io.WriteCloser, b []byte) []byte {
		var w bytes.Buffer
		z := enc(&w)
		z.Write(b) //nolint:errcheck
		z.Close()  //nolint:errcheck
		return w.Bytes()
	}
	gz := func(b []byte) []byte { return encode(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }, b) }
	zl := func(b []byte) []byte { return encode(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) }, b) }
	bomb := gz([]byte(`{"model":"qwen","messages":[{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}]}`))
	for _, tc := range []struct {
		name, coding string
		body         []byte
		status       int
		msg          string
	}{
		{"gzip", "gzip", gz([]byte(body)), 200, ""},
		{"deflate", "Deflate", zl([]byte(body)), 200, ""},
		{"identity", "identity", []byte(body), 200, ""},
		{"brotli", "br", []byte(body), 415, "Content-Encoding is not supported"},
		{"cut", "gzip", gz([]byte(body))[:20], 400, "not valid gzip"},
		{"not gzip", "gzip", []byte(body), 400, "not valid gzip"},
		{"past max_body_bytes decoded", "gzip", bomb, 413, "larger than server.max_body_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, answer := postWith(t, addr, "/v1/chat/completions", tc.body, "Content-Encoding", tc.coding)
			if status != tc.status || !bytes.Contains(answer, []byte(tc.msg)) {
				t.Fatalf("%d %s, want %d %q", status, answer, tc.status, tc.msg)
			}
			if tc.status != 200 {
				return
			}
			if up := <-got; !bytes.Contains(up, []byte(`"content":"hello"`)) {
				t.Errorf("upstream got %q", up)
			}
			if rec := sink.wait(t); !bytes.Contains(rec.RequestBody, []byte(`"content":"hello"`)) {
				t.Errorf("record's request body %q", rec.RequestBody)
			}
		})
	}
}
