package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Router picks where each request of a replay goes. Route is called from
// many goroutines at once; i is the request's index in the trace, body its
// JSON. sent, when not nil, is called once the request's answer headers
// have arrived (or it failed).
type Router interface {
	Route(i int, body []byte) (addr string, sent func(), err error)
}

// Fixed sends every request to one address.
type Fixed string

func (f Fixed) Route(int, []byte) (string, func(), error) { return string(f), nil, nil }

// RoundRobin sends request i to address i mod n: a client-side round robin
// over servers, or several gateways taking requests in turn.
type RoundRobin []string

func (rr RoundRobin) Route(i int, _ []byte) (string, func(), error) { return rr[i%len(rr)], nil, nil }

// Replay is one open-loop replay of a trace.
type Replay struct {
	Trace  []TraceRequest
	Router Router
	Model  string
	// Speed divides the trace's arrival times. By default 1.
	Speed float64
	// Path is the chat endpoint. By default /v1/chat/completions.
	Path string
	// IDPrefix makes each request's X-Request-Id IDPrefix + its trace line.
	IDPrefix string
	// Timeout bounds one whole exchange. By default 5 minutes.
	Timeout time.Duration
}

// ReplayRecord is what one request of a replay measured, in wall time
// from its intended send time.
type ReplayRecord struct {
	Line       int           `json:"line"`
	Due        time.Duration `json:"due_ns"`   // intended send time from the start
	Lag        time.Duration `json:"lag_ns"`   // how late it left
	Upstream   string        `json:"upstream"` // X-Gptapi-Upstream, or the simulator's X-Sim-Server
	Status     int           `json:"status"`
	Err        string        `json:"error,omitempty"`
	Prompt     int           `json:"prompt_tokens"`
	Cached     int           `json:"cached_tokens"`
	Completion int           `json:"completion_tokens"`
	TTFT       time.Duration `json:"ttft_ns"` // to the first content event
	TPOT       time.Duration `json:"tpot_ns"` // first to last content event over completion_tokens-1
	E2E        time.Duration `json:"e2e_ns"`  // to the end of the stream
	// From the simulator (bench/fleetsim), when it served: its own time to
	// first token and to the end, in simulated time from the request's
	// arrival at the server, free of wall-clock noise.
	SimTTFT time.Duration `json:"sim_ttft_ns,omitempty"`
	SimE2E  time.Duration `json:"sim_e2e_ns,omitempty"`
}

// Run sends every request of the trace at its arrival time divided by
// Speed, whatever the earlier ones are doing (open loop), each streamed,
// and waits for every answer. Records come back in trace order.
func (rp *Replay) Run() ([]ReplayRecord, error) {
	if len(rp.Trace) == 0 {
		return nil, ErrEmptyTrace
	}
	if rp.Router == nil {
		return nil, fmt.Errorf("loadgen: a replay needs a router")
	}
	speed := rp.Speed
	if speed <= 0 {
		speed = 1
	}
	path := rp.Path
	if path == "" {
		path = "/v1/chat/completions"
	}
	timeout := rp.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	cl := &clients{m: map[string]*fasthttp.HostClient{}, timeout: timeout}
	defer cl.close()
	recs := make([]ReplayRecord, len(rp.Trace))
	var wg sync.WaitGroup
	p := newPacer()
	start := time.Now().Add(5 * time.Millisecond)
	for i := range rp.Trace {
		tr := &rp.Trace[i]
		off := time.Duration(float64(tr.At) / speed)
		due := start.Add(off)
		p.sleepUntil(due)
		rec := &recs[i]
		rec.Line, rec.Due, rec.Lag = tr.Line, off, time.Since(due)
		wg.Go(func() {
			body := AppendTraceChat(nil, tr, rp.Model)
			rp.exchange(cl, i, body, path, due, rec)
		})
	}
	p.close()
	wg.Wait()
	return recs, nil
}

// dialTimeout bounds connecting to a replay's target.
const dialTimeout = 30 * time.Second

// clients keeps one keep-alive client per address.
type clients struct {
	mu      sync.Mutex
	m       map[string]*fasthttp.HostClient
	timeout time.Duration
}

func (c *clients) get(addr string) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	hc := c.m[addr]
	if hc == nil {
		hc = &fasthttp.HostClient{
			Addr: addr,
			// A burst of arrivals opens many connections at once; on a
			// loaded machine the accept queue can take longer than
			// fasthttp's default 3s to drain.
			Dial:                          func(a string) (net.Conn, error) { return fasthttp.DialTimeout(a, dialTimeout) },
			MaxConns:                      1 << 14,
			ReadTimeout:                   c.timeout,
			WriteTimeout:                  c.timeout,
			MaxIdleConnDuration:           time.Minute,
			StreamResponseBody:            true,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			ReadBufferSize:                16 << 10,
		}
		c.m[addr] = hc
	}
	return hc
}

func (c *clients) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.m {
		hc.CloseIdleConnections()
	}
}

// exchange sends one request and reads its stream into rec.
func (rp *Replay) exchange(cl *clients, i int, body []byte, path string, due time.Time, rec *ReplayRecord) {
	fail := func(format string, args ...any) {
		rec.Err = fmt.Sprintf(format, args...)
		rec.E2E = time.Since(due)
	}
	addr, sent, err := rp.Router.Route(i, body)
	if err != nil {
		if sent != nil {
			sent()
		}
		fail("cannot route: %s", err)
		return
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(path)
	req.Header.SetHost(addr)
	req.Header.SetContentType("application/json")
	if rp.IDPrefix != "" {
		req.Header.Set("X-Request-Id", rp.IDPrefix+strconv.Itoa(rec.Line))
	}
	req.SetBodyRaw(body)
	err = cl.get(addr).Do(req, resp)
	if sent != nil {
		sent()
	}
	if err != nil {
		fail("%s: %s", addr, err)
		return
	}
	defer resp.CloseBodyStream()
	rec.Status = resp.StatusCode()
	rec.Upstream = string(resp.Header.Peek("X-Gptapi-Upstream"))
	if rec.Upstream == "" {
		rec.Upstream = string(resp.Header.Peek("X-Sim-Server"))
	}
	if rec.Status != fasthttp.StatusOK {
		b, _ := readAll(resp)
		fail("status %d: %.200s", rec.Status, b)
		return
	}
	if msg := readReplayStream(resp, due, rec); msg != "" {
		fail("%s", msg)
		return
	}
	rec.E2E = time.Since(due)
}

var usageKey = []byte(`"usage":{`)

// readReplayStream reads an SSE chat answer, timing its content events and
// taking the usage; it returns what is wrong with the stream, or "".
func readReplayStream(resp *fasthttp.Response, due time.Time, rec *ReplayRecord) string {
	src := resp.BodyStream()
	if src == nil {
		src = bytes.NewReader(resp.Body())
	}
	br := bufio.NewReaderSize(src, 16<<10)
	var p fastjson.Parser
	var first, last time.Time
	done, usage := false, false
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			if len(line) > 1<<20 {
				return "stream event longer than 1 MiB"
			}
			continue
		}
		if payload, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), dataPrefix); ok {
			payload = bytes.TrimPrefix(payload, []byte(" "))
			switch {
			case done:
				return "data after [DONE]"
			case bytes.Equal(payload, doneEvent):
				done = true
			case bytes.HasPrefix(payload, errorEvent):
				return fmt.Sprintf("error event: %.200s", payload)
			default:
				now := time.Now()
				v, perr := p.ParseBytes(payload)
				if perr != nil {
					return fmt.Sprintf("event is not JSON: %s", perr)
				}
				if len(v.GetStringBytes("choices", "0", "delta", "content")) > 0 {
					if first.IsZero() {
						first = now
					}
					last = now
				}
				if bytes.Contains(payload, usageKey) {
					u := v.Get("usage")
					rec.Prompt = u.GetInt("prompt_tokens")
					rec.Completion = u.GetInt("completion_tokens")
					rec.Cached = u.GetInt("prompt_tokens_details", "cached_tokens")
					usage = true
					if sim := v.Get("sim"); sim != nil {
						rec.SimTTFT = time.Duration(sim.GetFloat64("ttft_ms") * float64(time.Millisecond))
						rec.SimE2E = time.Duration(sim.GetFloat64("e2e_ms") * float64(time.Millisecond))
					}
				}
			}
		}
		line = line[:0]
		if err == io.EOF {
			break
		}
		if err != nil {
			return "stream broke: " + err.Error()
		}
	}
	switch {
	case !done:
		return "stream ended without [DONE]"
	case first.IsZero():
		return "stream carried no content"
	case !usage:
		return "stream carried no usage"
	}
	rec.TTFT = first.Sub(due)
	if rec.Completion > 1 {
		rec.TPOT = last.Sub(first) / time.Duration(rec.Completion-1)
	}
	return ""
}

// Percentiles of a replay, in the unit the summary was asked for.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// ReplaySummary is a replay's figures. Durations are in milliseconds of
// wall time multiplied by Scale (the simulator's speed turns them into
// simulated time).
type ReplaySummary struct {
	Requests     int            `json:"requests"`
	OK           int            `json:"ok"`
	Failed       int            `json:"failed"`
	Errors       []string       `json:"errors,omitempty"` // a sample
	Scale        float64        `json:"scale"`
	TTFTms       Percentiles    `json:"ttft_ms"`
	ServerTTFTms Percentiles    `json:"server_ttft_ms"` // the simulator's own, simulated, not scaled (zero without one)
	TPOTms       Percentiles    `json:"tpot_ms"`
	E2Ems        Percentiles    `json:"e2e_ms"`
	LagMaxMs     float64        `json:"lag_max_ms"` // the sender's own lateness, wall time
	PromptTokens int64          `json:"prompt_tokens"`
	CachedTokens int64          `json:"cached_tokens"`
	HitShare     float64        `json:"hit_share"`    // cached / prompt tokens
	OutputRate   float64        `json:"output_tok_s"` // answer tokens per (scaled) second, first send to last answer
	Upstreams    map[string]int `json:"upstreams"`    // requests answered per upstream
	Ceiling      float64        `json:"ceiling"`      // the trace's ceiling hit share (Ceiling)
	Records      []ReplayRecord `json:"records,omitempty"`
}

// Summarize turns records into a summary; scale multiplies durations.
func Summarize(recs []ReplayRecord, scale float64) ReplaySummary {
	if scale <= 0 {
		scale = 1
	}
	s := ReplaySummary{Requests: len(recs), Scale: scale, Upstreams: map[string]int{}}
	var ttft, tpot, e2e, sttft []time.Duration
	var out int64
	var end time.Duration
	var seen []string
	for i := range recs {
		r := &recs[i]
		s.LagMaxMs = max(s.LagMaxMs, float64(r.Lag)/1e6)
		end = max(end, r.Due+r.E2E)
		if r.Err != "" {
			s.Failed++
			if len(s.Errors) < maxErrors && !slices.Contains(seen, r.Err) {
				seen = append(seen, r.Err)
				s.Errors = append(s.Errors, fmt.Sprintf("line %d: %s", r.Line, r.Err))
			}
			continue
		}
		s.OK++
		s.Upstreams[r.Upstream]++
		ttft = append(ttft, r.TTFT)
		e2e = append(e2e, r.E2E)
		if r.SimTTFT > 0 {
			sttft = append(sttft, r.SimTTFT)
		}
		if r.Completion > 1 {
			tpot = append(tpot, r.TPOT)
		}
		s.PromptTokens += int64(r.Prompt)
		s.CachedTokens += int64(r.Cached)
		out += int64(r.Completion)
	}
	pct := func(d []time.Duration, scale float64) Percentiles {
		slices.Sort(d)
		ms := func(q float64) float64 { return float64(Quantile(d, q)) / 1e6 * scale }
		return Percentiles{P50: ms(0.50), P90: ms(0.90), P99: ms(0.99)}
	}
	s.TTFTms, s.TPOTms, s.E2Ems = pct(ttft, scale), pct(tpot, scale), pct(e2e, scale)
	s.ServerTTFTms = pct(sttft, 1)
	if s.PromptTokens > 0 {
		s.HitShare = float64(s.CachedTokens) / float64(s.PromptTokens)
	}
	if end > 0 {
		s.OutputRate = float64(out) / (end.Seconds() * scale)
	}
	return s
}
