package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const chatAnswer = `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}`

// testServer answers by path: /chat a chat answer, /slow the same after
// 100ms, /empty an answer without content, /garbage not JSON, /fail a 500,
// /stream an SSE answer shaped by the query (content=N, done=0, error=1,
// after=1 for data after [DONE], delay=ms between events). It remembers
// every X-Request-Id.
type testServer struct {
	addr string
	mu   sync.Mutex
	ids  []string
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	ts := &testServer{addr: ln.Addr().String()}
	srv := &fasthttp.Server{Handler: ts.handle}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ts
}

func (ts *testServer) handle(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.Peek("X-Request-Id"); len(id) > 0 {
		ts.mu.Lock()
		ts.ids = append(ts.ids, string(id))
		ts.mu.Unlock()
	}
	args := ctx.QueryArgs()
	switch string(ctx.Path()) {
	case "/chat":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(chatAnswer)
	case "/slow":
		time.Sleep(100 * time.Millisecond)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(chatAnswer)
	case "/empty":
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"role":"assistant","content":""}}]}`)
	case "/garbage":
		ctx.SetBodyString(`<html>oops</html>`)
	case "/fail":
		ctx.SetStatusCode(500)
		ctx.SetBodyString(`{"error":{"message":"down"}}`)
	case "/stream":
		content := args.GetUintOrZero("content")
		done := string(args.Peek("done")) != "0"
		withErr := string(args.Peek("error")) == "1"
		after := string(args.Peek("after")) == "1"
		delay := time.Duration(args.GetUintOrZero("delay")) * time.Millisecond
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := range content {
				if i > 0 && delay > 0 {
					time.Sleep(delay)
				}
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%d\"}}]}\n\n", i)
				w.Flush()
			}
			fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
			if withErr {
				fmt.Fprint(w, "data: {\"error\":{\"message\":\"broken\"}}\n\n")
			}
			if done {
				fmt.Fprint(w, "data: [DONE]\n\n")
			}
			if after {
				fmt.Fprint(w, "data: {\"choices\":[]}\n\n")
			}
			w.Flush()
		})
	default:
		ctx.SetStatusCode(404)
	}
}

func (ts *testServer) idList() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.ids...)
}

func TestOpenLoopPacesAndChecks(t *testing.T) {
	ts := newTestServer(t)
	r := Request{Addr: ts.addr, Path: "/chat", Body: []byte(`{"model":"m"}`), IDPrefix: "t-", Strict: true}
	res, err := OpenLoop(r, 200, 500*time.Millisecond, 16, 7)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.OK != 100 || res.Failed != 0 {
		t.Fatalf("sent %d ok %d failed %d, want 100/100/0: %v", res.Sent, res.OK, res.Failed, res.Errors)
	}
	if len(res.Latency) != 100 || len(res.Lag) != 100 {
		t.Fatalf("got %d latencies and %d lags, want 100 each", len(res.Latency), len(res.Lag))
	}
	// The 100th request is due 495ms after the first: an open loop spreads
	// them over the run instead of sending them back to back.
	if res.Elapsed < 450*time.Millisecond {
		t.Fatalf("run took %s; requests were not paced", res.Elapsed)
	}
	ids := ts.idList()
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for i := 7; i < 107; i++ {
		if id := fmt.Sprintf("t-%d", i); !seen[id] {
			t.Fatalf("request id %s never arrived; got %d ids", id, len(ids))
		}
	}
	if len(seen) != 100 {
		t.Fatalf("got %d distinct ids, want 100", len(seen))
	}
}

func TestOpenLoopDoesNotWaitForAnswers(t *testing.T) {
	ts := newTestServer(t)
	r := Request{Addr: ts.addr, Path: "/slow", Body: []byte(`{}`)}
	res, err := OpenLoop(r, 100, 300*time.Millisecond, 64, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 30 {
		t.Fatalf("ok %d of %d, want 30: %v", res.OK, res.Sent, res.Errors)
	}
	// Answers take 100ms and requests leave every 10ms: about ten are open
	// at once. A closed loop in disguise would have one.
	if res.MaxInFlight < 5 {
		t.Fatalf("at most %d requests were open at once, want >= 5", res.MaxInFlight)
	}
	if res.Latency[0] < 100*time.Millisecond {
		t.Fatalf("fastest latency %s is below the server's 100ms", res.Latency[0])
	}
}

func TestOpenLoopRejectsBadArguments(t *testing.T) {
	f := func(rate float64, d time.Duration, conns int) {
		t.Helper()
		if _, err := OpenLoop(Request{Addr: "127.0.0.1:1"}, rate, d, conns, 0); err == nil {
			t.Fatalf("OpenLoop(%g, %s, %d) gave no error", rate, d, conns)
		}
	}
	f(0, time.Second, 1)
	f(10, 0, 1)
	f(10, time.Second, 0)
}

func TestClosedLoopCountsEveryRequest(t *testing.T) {
	ts := newTestServer(t)
	r := Request{Addr: ts.addr, Path: "/chat", Body: []byte(`{}`), IDPrefix: "c-"}
	res, err := ClosedLoop(r, 4, 200*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.OK != res.Sent {
		t.Fatalf("sent %d ok %d: %v", res.Sent, res.OK, res.Errors)
	}
	if got := len(ts.idList()); got != res.Sent {
		t.Fatalf("server saw %d requests, generator counted %d", got, res.Sent)
	}
	if res.Rate() <= 0 {
		t.Fatalf("rate %g", res.Rate())
	}
}

func TestStreams(t *testing.T) {
	ts := newTestServer(t)
	f := func(query string, strict bool, wantErr error) {
		t.Helper()
		r := Request{Addr: ts.addr, Path: "/stream?" + query, Body: []byte(`{}`), Stream: true, WantContent: 20, Strict: strict}
		res, err := ClosedLoop(r, 2, 50*time.Millisecond, 0)
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent == 0 {
			t.Fatalf("%s: nothing sent", query)
		}
		if wantErr == nil {
			if res.Failed != 0 {
				t.Fatalf("%s: %d of %d failed: %v", query, res.Failed, res.Sent, res.Errors)
			}
			if res.Contents != int64(20*res.Sent) || res.Events != int64(21*res.Sent) {
				t.Fatalf("%s: %d contents and %d events over %d streams, want 20 and 21 each", query, res.Contents, res.Events, res.Sent)
			}
			if len(res.TTFT) != res.Sent {
				t.Fatalf("%s: %d TTFTs for %d streams", query, len(res.TTFT), res.Sent)
			}
			return
		}
		if res.OK != 0 || res.Failed != res.Sent {
			t.Fatalf("%s: ok %d failed %d, want every stream to fail", query, res.OK, res.Failed)
		}
		if !strings.Contains(res.Errors[0], strings.TrimPrefix(wantErr.Error(), "loadgen: ")) {
			t.Fatalf("%s: error %q, want %q", query, res.Errors[0], wantErr)
		}
	}
	f("content=20", false, nil)
	f("content=20", true, nil)
	f("content=19", false, errContent)
	f("content=21", true, errContent)
	f("content=20&done=0", false, errNoDone)
	f("content=20&error=1", false, errEvent)
	f("content=20&after=1", false, errStream)
}

func TestStreamTimings(t *testing.T) {
	ts := newTestServer(t)
	r := Request{Addr: ts.addr, Path: "/stream?content=5&delay=30", Body: []byte(`{}`), Stream: true, WantContent: 5}
	res, err := OpenLoop(r, 20, 100*time.Millisecond, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 2 {
		t.Fatalf("ok %d of %d: %v", res.OK, res.Sent, res.Errors)
	}
	if len(res.Gaps) != 8 || len(res.TTFT) != 2 {
		t.Fatalf("got %d gaps and %d TTFTs, want 4 gaps and 1 TTFT per stream", len(res.Gaps), len(res.TTFT))
	}
	// Events are 30ms apart on the server; gaps far below mean the events
	// were timed when read in bulk, not as they arrived.
	if g := Quantile(res.Gaps, 0.5); g < 15*time.Millisecond {
		t.Fatalf("median gap %s, want about 30ms", g)
	}
	if res.Latency[0] < 120*time.Millisecond || res.TTFT[1] > res.Latency[0] {
		t.Fatalf("latencies %v and TTFTs %v disagree with a 120ms stream", res.Latency, res.TTFT)
	}
}

func TestPlainAnswerChecks(t *testing.T) {
	ts := newTestServer(t)
	f := func(path string, strict bool, wantErr error) {
		t.Helper()
		r := Request{Addr: ts.addr, Path: path, Body: []byte(`{}`), Strict: strict}
		hc := newClient(&r, 1)
		x := exchangers.Get().(*exchanger)
		defer exchangers.Put(x)
		o := x.do(hc, &r, 0, time.Now())
		if !errors.Is(o.Err, wantErr) {
			t.Fatalf("%s strict=%v: error %v, want %v", path, strict, o.Err, wantErr)
		}
	}
	f("/chat", false, nil)
	f("/chat", true, nil)
	f("/empty", false, nil) // the cheap check does not parse
	f("/empty", true, errBody)
	f("/garbage", false, errBody)
	f("/garbage", true, errBody)
	f("/fail", false, errStatus)
	f("/nowhere", true, errStatus)
}

func TestQuantile(t *testing.T) {
	f := func(n int, q float64, want time.Duration) {
		t.Helper()
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i + 1)
		}
		if got := Quantile(s, q); got != want {
			t.Fatalf("Quantile(1..%d, %g) = %d, want %d", n, q, got, want)
		}
	}
	f(0, 0.5, 0)
	f(1, 0.999, 1)
	f(100, 0.5, 50)
	f(100, 0.99, 99)
	f(1000, 0.999, 999)
	f(1000, 1, 1000)
	f(10, 0, 1)
}
