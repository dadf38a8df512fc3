package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

// The three targets, in report order.
const (
	direct = "direct"
	gptapi = "gptapi"
	nginx  = "nginx"
)

var targetNames = []string{direct, gptapi, nginx}

// target is one endpoint measured.
type target struct {
	name  string
	addr  string
	proxy *proc // the proxy process whose CPU is charged; nil for direct
	kids  bool  // charge the proxy's children too (nginx workers)
}

// runData is what one run measured and found wrong.
type runData struct {
	figures  map[string]map[string]float64 // target → metric key → value
	notes    []string
	failures []string
	records  string // what the record check found
	load     [2]string
}

func (rd *runData) set(t, key string, v float64) {
	if rd.figures[t] == nil {
		rd.figures[t] = map[string]float64{}
	}
	rd.figures[t][key] = v
}

func (rd *runData) failf(format string, args ...any) {
	rd.failures = append(rd.failures, fmt.Sprintf(format, args...))
}

func (rd *runData) notef(format string, args ...any) {
	rd.notes = append(rd.notes, fmt.Sprintf(format, args...))
}

// sentThrough counts what the load generators sent through gptapi, to be
// found again in its records.
type sentThrough struct {
	lg       int   // Go generator requests (X-Request-Id lg-…)
	lgOK     int   // of which answered 200 and valid
	streams  int   // of which streams
	wrk, hey int64 // completed as counted by the tool
	wrkConns int   // requests a tool may have left open when it stopped
	heyConns int
}

// runDirs holds the folder of the run in progress, for removal when the
// harness is stopped by a signal or its time limit.
var runDirs atomic.Value

// removeRunDir removes the folder of the run in progress, if any.
func removeRunDir() {
	if d, _ := runDirs.Load().(string); d != "" {
		os.RemoveAll(d)
	}
}

// runOnce starts the three targets, measures them and stops them.
func runOnce(p plan, s *setup, idx int) *runData {
	rd := &runData{figures: map[string]map[string]float64{}}
	rd.load[0] = loadAvg()
	dir, err := os.MkdirTemp("", "gptapi-bench-run-")
	if err != nil {
		rd.failf("cannot make a temp folder: %s", err)
		return rd
	}
	if !s.keep {
		runDirs.Store(dir)
	}
	defer func() {
		runDirs.Store("")
		if s.keep || len(rd.failures) > 0 {
			rd.notef("run folder kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	targets, mock, gp, err := startTargets(p, s, dir, rd)
	if err != nil {
		rd.failf("%s", err)
		return rd
	}
	// Rotate the order from run to run so that no target always goes first.
	order := make([]*target, len(targets))
	for i := range targets {
		order[i] = targets[(i+idx)%len(targets)]
	}

	var sent sentThrough
	sent.wrkConns, sent.heyConns = p.conns, p.conns
	sut := []*proc{mock}
	for _, t := range targets {
		if t.proxy != nil {
			sut = append(sut, t.proxy)
		}
	}
	m := &measurer{p: p, s: s, rd: rd, mock: mock, sent: &sent, noise: newNoiseProbe(s, sut)}
	for _, t := range order {
		m.warm(t)
	}
	for _, phase := range []func(*target){m.wrkPhase, m.heyPhase, m.streamPhase, m.openLoopPhase, m.pacedStreamPhase} {
		for _, t := range order {
			phase(t)
		}
	}
	rd.load[1] = loadAvg()

	// gptapi flushes every record on SIGTERM; then its file must hold one
	// per request sent through it.
	start := time.Now()
	if !gp.stop(syscall.SIGTERM, 90*time.Second) {
		rd.failf("gptapi did not exit within 90s of SIGTERM")
	} else if gp.err != nil {
		rd.failf("gptapi exited with %v after SIGTERM: %s", gp.err, gp.logTail())
	}
	rd.notef("gptapi stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	checkRecords(rd, filepath.Join(dir, "gptapi.db"), &sent)
	return rd
}

// startTargets starts the mock, gptapi and nginx (when installed) and waits
// until each answers.
func startTargets(p plan, s *setup, dir string, rd *runData) ([]*target, *proc, *proc, error) {
	ports := make([]int, 3)
	for i := range ports {
		port, err := freePort()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cannot find a free port: %w", err)
		}
		ports[i] = port
	}
	mockPort, gpPort, ngPort := ports[0], ports[1], ports[2]
	one := []string{"GOMAXPROCS=1"}

	mock, err := startProc("mockllm", s.sutCPUs, one, filepath.Join(dir, "mockllm.log"), s.mockllm,
		"-listen", fmt.Sprintf("127.0.0.1:%d", mockPort), "-quiet")
	if err != nil {
		return nil, nil, nil, err
	}
	mockAddr := fmt.Sprintf("127.0.0.1:%d", mockPort)
	if err := waitHealthy(mock, mockAddr, "/health"); err != nil {
		return nil, nil, nil, err
	}

	cfg := filepath.Join(dir, "gptapi.yaml")
	if err := os.WriteFile(cfg, []byte(gptapiConfig(gpPort, mockPort, dir)), 0o644); err != nil {
		return nil, nil, nil, err
	}
	gp, err := startProc("gptapi", s.sutCPUs, one, filepath.Join(dir, "gptapi.log"), s.gptapi, "-config", cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	gpAddr := fmt.Sprintf("127.0.0.1:%d", gpPort)
	if err := waitHealthy(gp, gpAddr, "/health"); err != nil {
		return nil, nil, nil, err
	}
	targets := []*target{{name: direct, addr: mockAddr}, {name: gptapi, addr: gpAddr, proxy: gp}}

	if s.nginx == "" {
		rd.notef("SKIP nginx: not installed (or -skip)")
		return targets, mock, gp, nil
	}
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		_ = os.MkdirAll(filepath.Join(dir, t+"_temp"), 0o755)
	}
	ncfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(ncfg, []byte(nginxConfig(ngPort, mockPort, dir)), 0o644); err != nil {
		return nil, nil, nil, err
	}
	ng, err := startProc("nginx", s.sutCPUs, nil, filepath.Join(dir, "nginx.log"), s.nginx,
		"-p", dir, "-c", ncfg, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		rd.notef("SKIP nginx: %s", err)
		return targets, mock, gp, nil
	}
	ngAddr := fmt.Sprintf("127.0.0.1:%d", ngPort)
	if err := waitHealthy(ng, ngAddr, "/health"); err != nil {
		rd.notef("SKIP nginx: %s", err)
		ng.stop(syscall.SIGTERM, 3*time.Second)
		return targets, mock, gp, nil
	}
	targets = append(targets, &target{name: nginx, addr: ngAddr, proxy: ng, kids: true})
	return targets, mock, gp, nil
}

// waitHealthy polls GET path on addr until 200, for up to 15s.
func waitHealthy(p *proc, addr, path string) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited at start (%v): %s", p.name, p.err, p.logTail())
		}
		resp, err := c.Get("http://" + addr + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer GET %s within 15s: %s", p.name, path, p.logTail())
}

// measurer runs the load phases of one run.
type measurer struct {
	p     plan
	s     *setup
	rd    *runData
	mock  *proc
	sent  *sentThrough
	seq   uint64
	noise *noiseProbe
}

// bodies derived from the one chat body.
func (m *measurer) streamBody() []byte {
	return withFields(m.s.body, `"stream":true`)
}

func (m *measurer) pacedBody() []byte {
	return withFields(m.s.body, `"stream":true,"mock":{"chunk_delay":`+strconv.Itoa(m.p.chunkDelayMs)+`}`)
}

// withFields puts fields first in the JSON object body.
func withFields(body []byte, fields string) []byte {
	rest := bytes.TrimPrefix(bytes.TrimSpace(body), []byte("{"))
	return []byte("{" + fields + "," + string(rest))
}

func (m *measurer) request(t *target, body []byte, stream bool) loadgen.Request {
	r := loadgen.Request{Addr: t.addr, Path: "/v1/chat/completions", Body: body, Stream: stream,
		IDPrefix: "lg-", Strict: m.p.quick}
	if stream {
		r.WantContent = 20
	}
	return r
}

// account checks a generator result and remembers what went through gptapi.
func (m *measurer) account(t *target, phase string, res *loadgen.Result, stream bool) {
	if res.Sent == 0 {
		m.rd.failf("%s %s: nothing was sent", t.name, phase)
	}
	if res.Failed > 0 {
		m.rd.failf("%s %s: %d of %d requests failed: %v", t.name, phase, res.Failed, res.Sent, res.Errors)
	}
	if t.name == gptapi {
		m.sent.lg += res.Sent
		m.sent.lgOK += res.OK
		if stream {
			m.sent.streams += res.Sent
		}
	}
}

func (m *measurer) nextSeq(n int) uint64 {
	s := m.seq
	m.seq += uint64(n) + 1
	return s
}

// warm opens connections and wakes every path before anything is timed.
func (m *measurer) warm(t *target) {
	for _, stream := range []bool{false, true} {
		body := m.s.body
		if stream {
			body = m.streamBody()
		}
		res, err := loadgen.ClosedLoop(m.request(t, body, stream), 8, m.p.warm, m.nextSeq(1<<20))
		if err != nil {
			m.rd.failf("%s warm-up: %s", t.name, err)
			continue
		}
		m.account(t, "warm-up", &res, stream)
	}
	m.cpu(t, "", func() int64 { return 0 }) // let gptapi write the warm-up records
}

// cpu runs load, waits until the proxy (and the mock) are idle again, and
// returns the CPU seconds each spent; load returns how many requests it got
// answered. It records the other processes' share of both cores as the
// phase's noise.
func (m *measurer) cpu(t *target, phase string, load func() int64) (proxySec, mockSec float64, n int64) {
	m.noise.start()
	defer func() {
		gen, sut := m.noise.stop()
		if phase == "" {
			return
		}
		if gen >= 0 {
			m.rd.set(t.name, "noise_gen_"+phase, 100*gen)
		}
		if sut >= 0 {
			m.rd.set(t.name, "noise_sut_"+phase, 100*sut)
		}
	}()
	var p0 cpuSample
	if t.proxy != nil {
		p0, _ = cpuOf(t.proxy.pid(), t.kids)
	}
	m0, _ := cpuOf(m.mock.pid(), false)
	n = load()
	if t.proxy != nil {
		p1, ok := settle(t.proxy, t.kids, m.p.settleWindow, m.p.settleLimit)
		if !ok {
			m.rd.notef("%s was still busy %s after a phase", t.name, m.p.settleLimit)
		}
		proxySec = p1.since(p0).Seconds()
	}
	m1, _ := settle(m.mock, false, m.p.settleWindow, m.p.settleLimit)
	mockSec = m1.since(m0).Seconds()
	return proxySec, mockSec, n
}

// settle waits until p spends at most 2% of a window on CPU, for up to
// limit, and returns its CPU time then. gptapi keeps writing records after
// the load stops, and that work belongs to the requests just served.
func settle(p *proc, kids bool, window, limit time.Duration) (cpuSample, bool) {
	deadline := time.Now().Add(limit)
	last, err := cpuOf(p.pid(), kids)
	if err != nil {
		return last, false
	}
	for time.Now().Before(deadline) {
		time.Sleep(window)
		now, err := cpuOf(p.pid(), kids)
		if err != nil {
			return last, false
		}
		if now.since(last) <= window/50 {
			return now, true
		}
		last = now
	}
	return last, false
}

// perRequest stores CPU µs per request for the proxy and the mock.
func (m *measurer) perRequest(t *target, key string, proxySec, mockSec float64, n int64) {
	if n <= 0 {
		return
	}
	if t.proxy != nil {
		m.rd.set(t.name, key, proxySec*1e6/float64(n))
	}
	m.rd.set(t.name, "mock_"+key, mockSec*1e6/float64(n))
}

func (m *measurer) wrkPhase(t *target) {
	if m.s.wrk == "" {
		m.skipOnce("SKIP wrk: not installed (or -skip)")
		return
	}
	var res wrkResult
	ps, ms, n := m.cpu(t, "wrk", func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), m.p.phase+30*time.Second)
		defer cancel()
		out, err := runTool(ctx, m.s.genCPUs, []string{"BENCH_BODY=" + m.s.bodyPath}, m.s.wrk,
			"-t1", "-c"+strconv.Itoa(m.p.conns), "-d"+durationArg(m.p.phase), "--latency",
			"-s", m.s.luaPath, "http://"+t.addr+"/v1/chat/completions")
		if err != nil {
			m.rd.failf("%s wrk: %s", t.name, err)
			return 0
		}
		if res, err = parseWrk(out); err != nil {
			m.rd.failf("%s wrk: %s", t.name, err)
			return 0
		}
		return res.Requests
	})
	if res.Requests == 0 {
		return
	}
	if res.Non2xx > 0 || res.SocketErrors > 0 {
		m.rd.failf("%s wrk: %d non-2xx answers, %d socket errors", t.name, res.Non2xx, res.SocketErrors)
	}
	if t.name == gptapi {
		m.sent.wrk += res.Requests
	}
	m.progress(t, "wrk", "%.0f req/s, p99 %s", res.RPS, res.P99)
	m.rd.set(t.name, "wrk_rps", res.RPS)
	m.rd.set(t.name, "wrk_p50", us(res.P50))
	m.rd.set(t.name, "wrk_p99", us(res.P99))
	m.perRequest(t, "cpu_wrk", ps, ms, n)
}

func (m *measurer) heyPhase(t *target) {
	if m.s.hey == "" {
		m.skipOnce("SKIP hey: not installed (or -skip)")
		return
	}
	var res heyResult
	var ok bool
	m.cpu(t, "hey", func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), m.p.phase+30*time.Second)
		defer cancel()
		out, err := runTool(ctx, m.s.genCPUs, nil, m.s.hey, "-z", durationArg(m.p.phase), "-c", strconv.Itoa(m.p.conns),
			"-m", "POST", "-D", m.s.bodyPath, "-T", "application/json", "-H", "X-Request-Id: hey",
			"http://"+t.addr+"/v1/chat/completions")
		if err != nil {
			m.rd.failf("%s hey: %s", t.name, err)
			return 0
		}
		if res, err = parseHey(out); err != nil {
			m.rd.failf("%s hey: %s", t.name, err)
			return 0
		}
		ok = true
		return res.Total()
	})
	if !ok {
		return
	}
	for code, n := range res.Status {
		if code != 200 {
			m.rd.failf("%s hey: %d answers with status %d", t.name, n, code)
		}
	}
	// hey stops at its deadline with requests in flight and counts them as
	// errors; more errors than connections is a real failure.
	if res.Errors > int64(m.p.conns) {
		m.rd.failf("%s hey: %d requests got no answer", t.name, res.Errors)
	}
	if t.name == gptapi {
		m.sent.hey += res.Status[200]
	}
	m.progress(t, "hey", "%.0f req/s", res.RPS)
	m.rd.set(t.name, "hey_rps", res.RPS)
}

func (m *measurer) streamPhase(t *target) {
	var res loadgen.Result
	ps, ms, n := m.cpu(t, "stream", func() int64 {
		var err error
		res, err = loadgen.ClosedLoop(m.request(t, m.streamBody(), true), m.p.streamWorkers, m.p.phase, m.nextSeq(1<<24))
		if err != nil {
			m.rd.failf("%s streams: %s", t.name, err)
		}
		return int64(res.OK)
	})
	m.account(t, "streams", &res, true)
	m.progress(t, "streams", "%.0f streams/s, %d failed", res.Rate(), res.Failed)
	m.rd.set(t.name, "stream_rps", res.Rate())
	m.rd.set(t.name, "stream_cps", float64(res.Contents)/res.Elapsed.Seconds())
	m.perRequest(t, "cpu_stream", ps, ms, n)
}

func (m *measurer) openLoopPhase(t *target) {
	var res loadgen.Result
	ps, ms, n := m.cpu(t, "ol", func() int64 {
		var err error
		res, err = loadgen.OpenLoop(m.request(t, m.s.body, false), m.p.rate, m.p.phase, m.p.olConns, m.nextSeq(1<<24))
		if err != nil {
			m.rd.failf("%s open loop: %s", t.name, err)
		}
		return int64(res.OK)
	})
	m.account(t, "open loop", &res, false)
	m.progress(t, "open loop", "p50 %s p99 %s, generator lateness p99 %s, %d failed",
		loadgen.Quantile(res.Latency, 0.5), loadgen.Quantile(res.Latency, 0.99), loadgen.Quantile(res.Lag, 0.99), res.Failed)
	m.rd.set(t.name, "ol_p50", us(loadgen.Quantile(res.Latency, 0.5)))
	m.rd.set(t.name, "ol_p99", us(loadgen.Quantile(res.Latency, 0.99)))
	m.rd.set(t.name, "ol_p999", us(loadgen.Quantile(res.Latency, 0.999)))
	m.rd.set(t.name, "ol_lag_p99", us(loadgen.Quantile(res.Lag, 0.99)))
	m.rd.set(t.name, "ol_inflight", float64(res.MaxInFlight))
	m.perRequest(t, "cpu_ol", ps, ms, n)
}

func (m *measurer) pacedStreamPhase(t *target) {
	var res loadgen.Result
	ps, ms, n := m.cpu(t, "paced", func() int64 {
		var err error
		res, err = loadgen.OpenLoop(m.request(t, m.pacedBody(), true), m.p.streamRate, m.p.phase, m.p.olConns, m.nextSeq(1<<24))
		if err != nil {
			m.rd.failf("%s paced streams: %s", t.name, err)
		}
		return int64(res.OK)
	})
	m.account(t, "paced streams", &res, true)
	m.progress(t, "paced streams", "TTFT p50 %s p99 %s, %d failed", loadgen.Quantile(res.TTFT, 0.5), loadgen.Quantile(res.TTFT, 0.99), res.Failed)
	m.rd.set(t.name, "ttft_p50", us(loadgen.Quantile(res.TTFT, 0.5)))
	m.rd.set(t.name, "ttft_p99", us(loadgen.Quantile(res.TTFT, 0.99)))
	m.rd.set(t.name, "gap_p50", us(loadgen.Quantile(res.Gaps, 0.5)))
	m.rd.set(t.name, "gap_p99", us(loadgen.Quantile(res.Gaps, 0.99)))
	m.rd.set(t.name, "gap_max", us(loadgen.Quantile(res.Gaps, 1)))
	m.perRequest(t, "cpu_paced", ps, ms, n)
}

// progress prints one line per phase, so a long run shows where it is.
func (m *measurer) progress(t *target, phase, format string, args ...any) {
	fmt.Printf("  %-6s %-13s %s\n", t.name, phase, fmt.Sprintf(format, args...))
}

func (m *measurer) skipOnce(note string) {
	for _, n := range m.rd.notes {
		if n == note {
			return
		}
	}
	m.rd.notes = append(m.rd.notes, note)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// durationArg formats d for wrk and hey ("10s", "500ms").
func durationArg(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return strconv.Itoa(int(d/time.Millisecond)) + "ms"
}
