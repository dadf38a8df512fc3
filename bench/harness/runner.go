package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

// The three targets, in report order, and the floor (bench/floor), which
// has a table of its own.
const (
	direct = "direct"
	gptapi = "gptapi"
	nginx  = "nginx"
	floor  = "floor"
)

var targetNames = []string{direct, gptapi, nginx}

// target is one endpoint measured.
type target struct {
	name  string
	addr  string
	proxy *proc // the proxy whose CPU is charged; nil for direct
}

// runData is what one run measured and found wrong.
type runData struct {
	Figures  map[string]map[string]float64 // target → metric key → value
	Notes    []string
	Failures []string
	Records  string    // what the record check found
	Load     [2]string // 1-minute load average at start and end
}

func (rd *runData) set(t, key string, v float64) {
	if rd.Figures[t] == nil {
		rd.Figures[t] = map[string]float64{}
	}
	rd.Figures[t][key] = v
}

func (rd *runData) failf(format string, args ...any) {
	rd.Failures = append(rd.Failures, fmt.Sprintf(format, args...))
}

func (rd *runData) notef(format string, args ...any) {
	rd.Notes = append(rd.Notes, fmt.Sprintf(format, args...))
}

// sentThrough counts what the load generators sent through gptapi, to be
// found again in its records.
type sentThrough struct {
	lg      int   // Go generator requests (X-Request-Id lg-…)
	lgOK    int   // of which answered 200 and valid
	streams int   // of which streams
	wrk     int64 // completed as counted by wrk
	conns   int   // requests wrk may have left open when it stopped
}

// runDir is the folder of the run in progress, removed when the harness is
// stopped by a signal or its time limit.
var runDir atomic.Value

func removeRunDir() {
	if d, _ := runDir.Load().(string); d != "" {
		os.RemoveAll(d)
	}
}

// runOnce starts the three targets, measures them and stops them.
func runOnce(p plan, s *setup, idx int) *runData {
	rd := &runData{Figures: map[string]map[string]float64{}}
	rd.Load[0] = loadAvg()
	dir, err := os.MkdirTemp("", "gptapi-bench-run-")
	if err != nil {
		rd.failf("cannot make a temp folder: %s", err)
		return rd
	}
	if !s.keep {
		runDir.Store(dir)
	}
	defer func() {
		runDir.Store("")
		if s.keep || len(rd.Failures) > 0 {
			rd.notef("run folder kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	targets, mock, gp, err := startTargets(s, dir, rd)
	if err != nil {
		rd.failf("%s", err)
		return rd
	}
	// Rotate the order from run to run so that no target always goes first.
	order := make([]*target, len(targets))
	for i := range targets {
		order[i] = targets[(i+idx)%len(targets)]
	}
	m := &measurer{p: p, s: s, rd: rd, mock: mock, sent: &sentThrough{conns: p.Conns}}
	for _, t := range order {
		m.warm(t)
	}
	for _, phase := range []func(*target){m.wrkPhase, m.streamPhase, m.openLoopPhase, m.pacedStreamPhase} {
		for _, t := range order {
			phase(t)
		}
	}
	rd.Load[1] = loadAvg()

	// gptapi flushes every record on SIGTERM; then its file must hold one
	// per request sent through it.
	start := time.Now()
	if !gp.stop(syscall.SIGTERM, 90*time.Second) {
		rd.failf("gptapi did not exit within 90s of SIGTERM")
	} else if gp.err != nil {
		rd.failf("gptapi exited with %v after SIGTERM: %s", gp.err, gp.logTail())
	}
	rd.notef("gptapi stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	checkRecords(rd, filepath.Join(dir, "gptapi.db"), m.sent)
	return rd
}

// startTargets starts the mock, gptapi, the floor and nginx (when built and
// installed) and waits until each answers.
func startTargets(s *setup, dir string, rd *runData) (targets []*target, mock, gp *proc, err error) {
	var ports [4]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, nil, nil, fmt.Errorf("cannot find a free port: %w", err)
		}
	}
	// launch starts a process listening on port and waits until it answers.
	launch := func(name string, port int, env []string, bin string, args ...string) (*proc, string, error) {
		p, err := startProc(name, s.sutCPUs, env, filepath.Join(dir, name+".log"), bin, args...)
		if err != nil {
			return nil, "", err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		return p, addr, waitHealthy(p, addr, "/health")
	}
	one := []string{"GOMAXPROCS=1"}
	mock, mockAddr, err := launch("mockllm", ports[0], one, s.mockllm, "-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-quiet")
	if err != nil {
		return nil, nil, nil, err
	}
	cfg := filepath.Join(dir, "gptapi.yaml")
	if err := os.WriteFile(cfg, []byte(gptapiConfig(ports[1], ports[0], dir)), 0o644); err != nil {
		return nil, nil, nil, err
	}
	gp, gpAddr, err := launch(gptapi, ports[1], one, s.gptapi, "-config", cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	targets = []*target{{name: direct, addr: mockAddr}, {name: gptapi, addr: gpAddr, proxy: gp}}
	if s.floor == "" {
		rd.notef("SKIP floor: not built (or -skip)")
	} else {
		fl, flAddr, err := launch(floor, ports[3], one, s.floor, "-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]), "-upstream", mockAddr)
		if err != nil {
			return nil, nil, nil, err
		}
		targets = append(targets, &target{name: floor, addr: flAddr, proxy: fl})
	}
	if s.nginx == "" {
		rd.notef("SKIP nginx: not installed (or -skip)")
		return targets, mock, gp, nil
	}
	cfg = filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(nginxConfig(ports[2], ports[0])), 0o644); err != nil {
		return nil, nil, nil, err
	}
	ng, ngAddr, err := launch(nginx, ports[2], nil, s.nginx, "-p", dir+"/", "-c", cfg, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		rd.notef("SKIP nginx: %s", err)
		if ng != nil {
			ng.stop(syscall.SIGTERM, 3*time.Second)
		}
		return targets, mock, gp, nil
	}
	return append(targets, &target{name: nginx, addr: ngAddr, proxy: ng}), mock, gp, nil
}

// waitHealthy polls GET path on addr until 200, for up to 15s.
func waitHealthy(p *proc, addr, path string) error {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if p.exited() {
			return fmt.Errorf("%s exited at start (%v): %s", p.name, p.err, p.logTail())
		}
		if resp, err := c.Get("http://" + addr + path); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("%s did not answer GET %s within 15s: %s", p.name, path, p.logTail())
}

// measurer runs the load phases of one run.
type measurer struct {
	p    plan
	s    *setup
	rd   *runData
	mock *proc
	sent *sentThrough
	seq  uint64
}

// withFields puts fields first in the JSON object body.
func withFields(body []byte, fields string) []byte {
	rest := bytes.TrimPrefix(bytes.TrimSpace(body), []byte("{"))
	return []byte("{" + fields + "," + string(rest))
}

// genLoad is one load of the Go generator.
type genLoad struct {
	phase         string
	stream, paced bool    // streams; paced: with the mock's chunk delay
	rate          float64 // open loop at rate; 0: closed loop of workers
	workers       int
	d             time.Duration
	cpuKey        string // where CPU per request goes; "" for none
}

// generate runs the Go generator against t, checks and counts its result
// and stores the CPU per request.
func (m *measurer) generate(t *target, l genLoad) loadgen.Result {
	body := m.s.body
	if l.stream {
		body = withFields(body, `"stream":true`)
	}
	if l.paced {
		body = withFields(body, `"mock":{"chunk_delay":`+strconv.Itoa(m.p.ChunkDelayMs)+`}`)
	}
	req := loadgen.Request{Addr: t.addr, Path: "/v1/chat/completions", Body: body, Stream: l.stream,
		IDPrefix: "lg-", Strict: m.p.Quick}
	if l.stream {
		req.WantContent = 20
	}
	m.seq += 1 << 32 // ids of different loads never meet
	var res loadgen.Result
	var err error
	ps, ms, n := m.cpu(t, func() int64 {
		if l.rate > 0 {
			res, err = loadgen.OpenLoop(req, l.rate, l.d, m.p.OLConns, m.seq)
		} else {
			res, err = loadgen.ClosedLoop(req, l.workers, l.d, m.seq)
		}
		return int64(res.OK)
	})
	if err != nil {
		m.rd.failf("%s %s: %s", t.name, l.phase, err)
	}
	if res.Sent == 0 {
		m.rd.failf("%s %s: nothing was sent", t.name, l.phase)
	}
	if res.Failed > 0 {
		m.rd.failf("%s %s: %d of %d requests failed: %v", t.name, l.phase, res.Failed, res.Sent, res.Errors)
	}
	if t.name == gptapi {
		m.sent.lg += res.Sent
		m.sent.lgOK += res.OK
		if l.stream {
			m.sent.streams += res.Sent
		}
	}
	if l.cpuKey != "" {
		m.perRequest(t, l.cpuKey, ps, ms, n)
	}
	return res
}

// warm opens connections and wakes every path before anything is timed;
// gptapi writes the warm-up records before the first phase starts.
func (m *measurer) warm(t *target) {
	m.generate(t, genLoad{phase: "warm-up", workers: 8, d: m.p.Warm})
	m.generate(t, genLoad{phase: "warm-up streams", stream: true, workers: 8, d: m.p.Warm})
}

// cpu runs load, waits until the proxy and the mock are idle again, and
// returns the CPU time each spent; load returns how many requests it got
// answered. Waiting charges gptapi's record writing to the requests that
// caused it. A CPU time that cannot be read is a failure, and n is 0 then.
func (m *measurer) cpu(t *target, load func() int64) (proxy, mock time.Duration, n int64) {
	ps := []*proc{m.mock}
	if t.proxy != nil {
		ps = append(ps, t.proxy)
	}
	var before, spent [2]time.Duration
	var errs [4]error
	for i, p := range ps {
		before[i], errs[i] = p.cpu()
	}
	n = load()
	for i, p := range slices.Backward(ps) {
		var after time.Duration
		after, errs[2+i] = m.settle(p)
		spent[i] = after - before[i]
	}
	if err := errors.Join(errs[:]...); err != nil {
		m.rd.failf("%s: cannot read CPU time: %s", t.name, err)
		return 0, 0, 0
	}
	return spent[1], spent[0], n
}

// settle waits until p spends at most 2% of a window on CPU, for up to
// SettleLimit, and returns its CPU time then.
func (m *measurer) settle(p *proc) (time.Duration, error) {
	last, err := p.cpu()
	deadline := time.Now().Add(m.p.SettleLimit)
	for err == nil {
		if time.Now().After(deadline) {
			m.rd.notef("%s was still busy %s after a phase", p.name, m.p.SettleLimit)
			return last, nil
		}
		time.Sleep(m.p.SettleWindow)
		var now time.Duration
		if now, err = p.cpu(); err == nil && now-last <= m.p.SettleWindow/50 {
			return now, nil
		}
		last = now
	}
	return last, err
}

// perRequest stores CPU µs per request for the proxy and the mock.
func (m *measurer) perRequest(t *target, key string, proxy, mock time.Duration, n int64) {
	if n <= 0 {
		return
	}
	if t.proxy != nil {
		m.rd.set(t.name, key, us(proxy)/float64(n))
	}
	m.rd.set(t.name, "mock_"+key, us(mock)/float64(n))
}

// tool runs a load tool for a phase, pinned with the generators.
func (m *measurer) tool(env []string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.p.Phase+30*time.Second)
	defer cancel()
	argv := append([]string{bin}, args...)
	if m.s.genCPUs != "" {
		argv = append([]string{"taskset", "-c", m.s.genCPUs}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(cmd.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s failed: %w: %.500s", filepath.Base(bin), err, out)
	}
	return string(out), nil
}

func (m *measurer) wrkPhase(t *target) {
	if m.s.wrk == "" {
		m.skipOnce("SKIP wrk: not installed (or -skip)")
		return
	}
	var res wrkResult
	ps, ms, n := m.cpu(t, func() int64 {
		out, err := m.tool([]string{"BENCH_BODY=" + m.s.bodyPath}, m.s.wrk, "-t1", "-c"+strconv.Itoa(m.p.Conns),
			"-d"+durationArg(m.p.Phase), "--latency", "-s", m.s.luaPath, "http://"+t.addr+"/v1/chat/completions")
		if err == nil {
			res, err = parseWrk(out)
		}
		if err != nil {
			m.rd.failf("%s wrk: %s", t.name, err)
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

func (m *measurer) streamPhase(t *target) {
	res := m.generate(t, genLoad{phase: "streams", stream: true, workers: m.p.StreamWorkers, d: m.p.Phase, cpuKey: "cpu_stream"})
	m.progress(t, "streams", "%.0f streams/s, %d failed", res.Rate(), res.Failed)
	if res.Elapsed > 0 {
		m.rd.set(t.name, "stream_rps", res.Rate())
		m.rd.set(t.name, "stream_cps", float64(res.Contents)/res.Elapsed.Seconds())
	}
}

func (m *measurer) openLoopPhase(t *target) {
	res := m.generate(t, genLoad{phase: "open loop", rate: m.p.Rate, d: m.p.Phase, cpuKey: "cpu_ol"})
	q := func(d []time.Duration, q float64) time.Duration { return loadgen.Quantile(d, q) }
	m.progress(t, "open loop", "p50 %s p99 %s, generator lateness p99 %s, %d failed",
		q(res.Latency, 0.5), q(res.Latency, 0.99), q(res.Lag, 0.99), res.Failed)
	m.rd.set(t.name, "ol_p50", us(q(res.Latency, 0.5)))
	m.rd.set(t.name, "ol_p99", us(q(res.Latency, 0.99)))
	m.rd.set(t.name, "ol_p999", us(q(res.Latency, 0.999)))
	m.rd.set(t.name, "ol_lag_p99", us(q(res.Lag, 0.99)))
}

func (m *measurer) pacedStreamPhase(t *target) {
	res := m.generate(t, genLoad{phase: "paced streams", stream: true, paced: true, rate: m.p.StreamRate, d: m.p.Phase, cpuKey: "cpu_paced"})
	q := func(d []time.Duration, q float64) time.Duration { return loadgen.Quantile(d, q) }
	m.progress(t, "paced streams", "TTFT p50 %s p99 %s, %d failed", q(res.TTFT, 0.5), q(res.TTFT, 0.99), res.Failed)
	m.rd.set(t.name, "ttft_p50", us(q(res.TTFT, 0.5)))
	m.rd.set(t.name, "ttft_p99", us(q(res.TTFT, 0.99)))
	m.rd.set(t.name, "gap_p50", us(q(res.Gaps, 0.5)))
	m.rd.set(t.name, "gap_p99", us(q(res.Gaps, 0.99)))
}

// progress prints one line per phase, so a long run shows where it is.
func (m *measurer) progress(t *target, phase, format string, args ...any) {
	fmt.Printf("  %-6s %-13s %s\n", t.name, phase, fmt.Sprintf(format, args...))
}

func (m *measurer) skipOnce(note string) {
	if !slices.Contains(m.rd.Notes, note) {
		m.rd.Notes = append(m.rd.Notes, note)
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// durationArg formats d for wrk ("10s", "500ms").
func durationArg(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return strconv.Itoa(int(d/time.Millisecond)) + "ms"
}

// loadAvg is the 1-minute load average, a hint of what else ran.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := bytes.Fields(b); len(f) > 0 {
		return string(f[0])
	}
	return "?"
}
