package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func traceOf(t *testing.T, text string) []TraceRequest {
	t.Helper()
	reqs, bad, err := ReadTrace(strings.NewReader(text), 0, 0)
	if err != nil || len(bad) > 0 {
		t.Fatalf("%v %v", err, bad)
	}
	return reqs
}

// The same trace line always gives the same bytes, about 4 bytes a token;
// a later turn whose ids extend an earlier request's (whose last block was
// partial) gets a body that starts with the earlier one's messages.
func TestTraceChatIsStableAndExtends(t *testing.T) {
	const line = `{"timestamp": 27482, "input_length": 1100, "output_length": 52, "hash_ids": [0, 47, 48]}` + "\n"
	a, b := traceOf(t, line), traceOf(t, line)
	ba, bb := AppendTraceChat(nil, &a[0], "m"), AppendTraceChat(nil, &b[0], "m")
	if !bytes.Equal(ba, bb) {
		t.Fatal("one trace line gave two bodies")
	}
	if !bytes.Contains(ba, []byte(`"max_tokens":52,"stream":true,"stream_options":{"include_usage":true}}`)) {
		t.Errorf("body tail: %s", ba[len(ba)-100:])
	}
	var n int
	for _, m := range bytes.Split(ba, []byte(`"content":"`))[1:] {
		n += bytes.IndexByte(m, '"')
	}
	if n < 1100*4-8 || n > 1100*4 {
		t.Errorf("%d bytes of content for 1100 tokens, want about 4 a token", n)
	}

	later := traceOf(t, `{"timestamp": 30000, "input_length": 2900, "output_length": 10, "hash_ids": [0, 47, 48, 49, 50, 51]}`)
	bl := AppendTraceChat(nil, &later[0], "m")
	cut := bytes.Index(ba, []byte(`"}],"max_tokens"`))
	if !bytes.HasPrefix(bl, ba[:cut]) {
		t.Errorf("the later turn does not extend the earlier one:\n%.300s\n%.300s", ba[cut-200:], bl[cut-200:])
	}
	other := traceOf(t, `{"timestamp": 30000, "input_length": 1100, "output_length": 10, "hash_ids": [0, 46, 48]}`)
	bo := AppendTraceChat(nil, &other[0], "m")
	sys := bytes.Index(ba, []byte(`"},{"role":"user"`))
	if !bytes.Equal(bo[:sys], ba[:sys]) || bytes.Equal(bo[:sys+100], ba[:sys+100]) {
		t.Error("requests sharing block 0 only should share the system message only")
	}
}

// Bad lines are reported with their numbers and skipped; a trace with no
// request is an error; start and length cut a slice whose times start at 0.
func TestReadTraceReportsBadLines(t *testing.T) {
	text := strings.Join([]string{
		`{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}`,
		`not json`,
		`{"timestamp": 10, "input_length": 600, "hash_ids": [0, 1]}`,
		`{"timestamp": 10, "input_length": 600, "output_length": -1, "hash_ids": [0, 1]}`,
		`{"timestamp": 10, "input_length": -5, "output_length": 1, "hash_ids": [0, 1]}`,
		`{"timestamp": 10, "input_length": 600, "output_length": 1, "hash_ids": []}`,
		`{"timestamp": 10, "input_length": 6000, "output_length": 1, "hash_ids": [0]}`,
		``,
		`{"timestamp": -1, "input_length": 6, "output_length": 1, "hash_ids": [0]}`,
		`[1, 2]`,
		`{"timestamp": 2500, "input_length": 100, "output_length": 0, "hash_ids": [9]}`,
	}, "\n")
	reqs, bad, err := ReadTrace(strings.NewReader(text), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, b := range bad {
		lines = append(lines, b.Line)
	}
	if fmt.Sprint(lines) != "[2 3 4 5 6 7 9 10]" {
		t.Errorf("bad lines %v: %v", lines, bad)
	}
	for _, want := range []string{"not a JSON object", "no output_length", "negative output_length -1", "input_length -5", "empty hash_ids", "more than 1 blocks", "negative timestamp"} {
		found := false
		for _, b := range bad {
			found = found || strings.Contains(b.String(), want)
		}
		if !found {
			t.Errorf("no report says %q: %v", want, bad)
		}
	}
	if len(reqs) != 2 || reqs[0].Line != 1 || reqs[1].Line != 11 || reqs[1].Output != 1 || reqs[1].At != 2500*time.Millisecond {
		t.Errorf("requests: %+v", reqs)
	}

	cut, _, err := ReadTrace(strings.NewReader(text), time.Second, 2*time.Second)
	if err != nil || len(cut) != 1 || cut[0].At != 1500*time.Millisecond {
		t.Errorf("slice [1s, 3s): %+v %v", cut, err)
	}
	if _, bad, err := ReadTrace(strings.NewReader("x\n{}\n"), 0, 0); !errors.Is(err, ErrEmptyTrace) || len(bad) != 2 {
		t.Errorf("a trace of bad lines: %v, %v", err, bad)
	}
	long := strings.Repeat("1", maxTraceLine+10) + "\n" + `{"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": [0]}`
	if reqs, bad, err := ReadTrace(strings.NewReader(long), 0, 0); err != nil || len(reqs) != 1 || len(bad) != 1 || bad[0].Line != 1 {
		t.Errorf("an over-long line: %v %v %v", reqs, bad, err)
	}
}

func TestCeiling(t *testing.T) {
	f := func(trace string, want float64) {
		t.Helper()
		if got := Ceiling(traceOf(t, trace)); got != want {
			t.Errorf("%s: ceiling %g, want %g", trace, got, want)
		}
	}
	f(`{"timestamp": 0, "input_length": 1000, "output_length": 1, "hash_ids": [0, 1]}`, 0)
	f(`{"timestamp": 0, "input_length": 1000, "output_length": 1, "hash_ids": [0, 1]}
{"timestamp": 1, "input_length": 1500, "output_length": 1, "hash_ids": [0, 1, 2]}
{"timestamp": 2, "input_length": 1000, "output_length": 1, "hash_ids": [0, 3]}
{"timestamp": 3, "input_length": 1000, "output_length": 1, "hash_ids": [5, 1]}`, 3.0/9)
}

// slowServer answers every chat request with a 3-token stream after hold,
// and remembers when each request (by X-Request-Id) arrived.
type slowServer struct {
	addr    string
	hold    time.Duration
	mu      sync.Mutex
	arrived map[string]time.Time
}

func newSlowServer(t *testing.T, hold time.Duration) *slowServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowServer{addr: ln.Addr().String(), hold: hold, arrived: map[string]time.Time{}}
	srv := &fasthttp.Server{Handler: s.handle}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

func (s *slowServer) handle(ctx *fasthttp.RequestCtx) {
	s.mu.Lock()
	s.arrived[string(ctx.Request.Header.Peek("X-Request-Id"))] = time.Now()
	s.mu.Unlock()
	ctx.Response.Header.Set("X-Sim-Server", "slow")
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		time.Sleep(s.hold)
		for _, c := range []string{"one two", "three"} {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", c)
			w.Flush()
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":600,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":512}},\"sim\":{\"ttft_ms\":250.5,\"e2e_ms\":300}}\n\ndata: [DONE]\n\n")
	})
}

// Requests leave at their trace times divided by the speed even when the
// server holds every answer far longer than the gaps between them (open
// loop), and each record has its times, usage and upstream.
func TestReplayIsOpenLoop(t *testing.T) {
	const hold = time.Second
	s := newSlowServer(t, hold)
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, `{"timestamp": %d, "input_length": 600, "output_length": 3, "hash_ids": [0, %d]}`+"\n", i*60, i+1)
	}
	trace := traceOf(t, b.String())
	rp := &Replay{Trace: trace, Router: Fixed(s.addr), Model: "m", Speed: 2, IDPrefix: "r"}
	t0 := time.Now()
	recs, err := rp.Run()
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 3*hold {
		t.Errorf("the replay took %s; sending should not wait for answers", took)
	}
	// Arrival times relative to the earliest (arrival - due), so that the
	// sender's start-up does not count.
	late := func(i int) time.Duration {
		return s.arrived[fmt.Sprintf("r%d", recs[i].Line)].Sub(t0) - recs[i].Due
	}
	base := late(0)
	for i := range recs {
		base = min(base, late(i))
	}
	for i, r := range recs {
		due := time.Duration(i) * 30 * time.Millisecond
		// On time, and never after an answer: a closed loop would have
		// sent the second request a hold after the first. The margin is
		// for a loaded machine.
		if got := late(i) - base; got > 150*time.Millisecond || r.Due+got >= hold {
			t.Errorf("request %d arrived %s late", i, got)
		}
		if r.Err != "" || r.Due != due || r.SimTTFT != 250500*time.Microsecond || r.SimE2E != 300*time.Millisecond || r.Upstream != "slow" || r.Cached != 512 || r.Prompt != 600 || r.Completion != 3 {
			t.Errorf("record %d: %+v", i, r)
		}
		if r.TTFT < hold || r.E2E < r.TTFT+10*time.Millisecond || r.TPOT < 4*time.Millisecond {
			t.Errorf("record %d times: ttft %s tpot %s e2e %s", i, r.TTFT, r.TPOT, r.E2E)
		}
	}
	sum := Summarize(recs, 10)
	if sum.OK != 10 || sum.Failed != 0 || sum.HitShare != 512.0/600 || sum.TTFTms.P50 < 10000 || sum.ServerTTFTms.P50 != 250.5 || sum.Upstreams["slow"] != 10 {
		t.Errorf("summary: %+v", sum)
	}
}

// A failing upstream is a failed record with the reason, never a lost one.
func TestReplayRecordsFailures(t *testing.T) {
	ts := newTestServer(t) // answers /fail with a 500
	trace := traceOf(t, `{"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": [0]}`)
	recs, err := (&Replay{Trace: trace, Router: Fixed(ts.addr), Model: "m", Path: "/fail"}).Run()
	if err != nil || len(recs) != 1 || recs[0].Status != 500 || !strings.Contains(recs[0].Err, "status 500") {
		t.Fatalf("%+v %v", recs, err)
	}
	if s := Summarize(recs, 1); s.Failed != 1 || len(s.Errors) != 1 {
		t.Errorf("summary %+v", s)
	}
}

func TestOraclePick(t *testing.T) {
	f := func(i int, load []int64, cached []int, want int) {
		t.Helper()
		pas := make([]probeAnswer, len(load))
		for k := range pas {
			pas[k] = probeAnswer{PromptTokens: 10000, CachedTokens: cached[k]}
		}
		if got := pick(i, load, pas); got != want {
			t.Errorf("pick(%d, %v, %v) = %d, want %d", i, load, cached, got, want)
		}
	}
	f(0, []int64{0, 0, 0}, []int{0, 0, 0}, 0)            // all equal: round from i
	f(1, []int64{0, 0, 0}, []int{0, 0, 0}, 1)            //
	f(0, []int64{5, 0, 9}, []int{0, 0, 0}, 1)            // no holder: least loaded
	f(0, []int64{0, 3000, 0}, []int{0, 8000, 0}, 1)      // the holder saves more than its queue costs
	f(0, []int64{0, 9000, 0}, []int{0, 8000, 0}, 0)      // the holder is overloaded
	f(2, []int64{100, 100, 50}, []int{512, 512, 512}, 2) // shared system prompt only: least loaded
}
