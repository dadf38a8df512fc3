package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// metric is one row of the report.
type metric struct {
	key   string
	label string
	unit  string
	added bool // latency: show the µs each proxy adds to direct
	plain bool // no ratio column: the figure is about the machine, not the target
}

// section is a group of rows under one heading.
type section struct {
	title   string
	metrics []metric
}

func (r *report) sections() []section {
	p := r.plan
	return []section{
		{fmt.Sprintf("Throughput (closed loop, %d connections; hey and the stream generator often saturate their own core first)", p.conns), []metric{
			{key: "wrk_rps", label: "non-stream, wrk", unit: "req/s"},
			{key: "hey_rps", label: "non-stream, hey", unit: "req/s"},
			{key: "stream_rps", label: fmt.Sprintf("20-chunk streams, %d concurrent", p.streamWorkers), unit: "streams/s"},
			{key: "stream_cps", label: "20-chunk streams, content chunks", unit: "chunks/s"},
			{key: "wrk_p50", label: "non-stream, wrk p50 at saturation (queueing)", unit: "µs"},
			{key: "wrk_p99", label: "non-stream, wrk p99 at saturation (queueing)", unit: "µs"},
		}},
		{fmt.Sprintf("Latency, non-stream, open loop at %.0f req/s (from the intended send time)", p.rate), []metric{
			{key: "ol_p50", label: "p50", unit: "µs", added: true},
			{key: "ol_p99", label: "p99", unit: "µs", added: true},
			{key: "ol_p999", label: "p99.9", unit: "µs", added: true},
			{key: "ol_lag_p99", label: "generator lateness p99 (not the target's)", unit: "µs", plain: true},
		}},
		{fmt.Sprintf("Streams, open loop at %.0f streams/s, 20 chunks %d ms apart", p.streamRate, p.chunkDelayMs), []metric{
			{key: "ttft_p50", label: "time to first event p50", unit: "µs", added: true},
			{key: "ttft_p99", label: "time to first event p99", unit: "µs", added: true},
			{key: "gap_p50", label: "inter-chunk gap p50", unit: "µs", added: true},
			{key: "gap_p99", label: "inter-chunk gap p99", unit: "µs", added: true},
		}},
		{"CPU time of the proxy process per request (until idle again, so gptapi's record writing is included)", []metric{
			{key: "cpu_wrk", label: "non-stream, saturated (wrk)", unit: "µs/req"},
			{key: "cpu_ol", label: fmt.Sprintf("non-stream, %.0f req/s", p.rate), unit: "µs/req"},
			{key: "cpu_stream", label: "20-chunk stream, saturated", unit: "µs/stream"},
			{key: "cpu_paced", label: fmt.Sprintf("20-chunk stream, %.0f/s, %d ms chunks", p.streamRate, p.chunkDelayMs), unit: "µs/stream"},
			{key: "mock_cpu_wrk", label: "the mock upstream's own, non-stream (wrk)", unit: "µs/req"},
			{key: "mock_cpu_stream", label: "the mock upstream's own, stream", unit: "µs/stream"},
		}},
		{"Noise: CPU time other processes took on each core during the phase, % of the phase (0 is a clean measurement)", noiseMetrics()},
	}
}

// noisePhases names the phases in the noise section.
var noisePhases = [][2]string{{"wrk", "wrk"}, {"hey", "hey"}, {"stream", "streams, closed loop"}, {"ol", "open loop"}, {"paced", "paced streams"}}

func noiseMetrics() []metric {
	var ms []metric
	for _, ph := range noisePhases {
		ms = append(ms, metric{key: "noise_gen_" + ph[0], label: ph[1] + ": generator core", unit: "%", plain: true})
		ms = append(ms, metric{key: "noise_sut_" + ph[0], label: ph[1] + ": targets' core", unit: "%", plain: true})
	}
	return ms
}

// report is everything one harness invocation measured.
type report struct {
	plan     plan
	setup    *setup
	started  time.Time
	elapsed  time.Duration
	machine  [][2]string
	versions [][2]string
	runs     []*runData
}

// stat is a figure over the runs.
type stat struct {
	med, lo, hi float64
	n           int
}

func (s stat) ok() bool { return s.n > 0 }

// stat gathers key for target over every run.
func (r *report) stat(target, key string) stat {
	var v []float64
	for _, rd := range r.runs {
		if x, ok := rd.figures[target][key]; ok && !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	return summarize(v)
}

// summarize is the median (mean of the middle two for an even count) and
// the range.
func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med: med, lo: s[0], hi: s[n-1], n: n}
}

func (r *report) failures() int {
	n := 0
	for _, rd := range r.runs {
		n += len(rd.failures)
	}
	return n
}

// num formats a figure: whole numbers from 100 up, one decimal below.
func num(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *report) cell(s stat) string {
	if !s.ok() {
		return "—"
	}
	if len(r.runs) == 1 {
		return num(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.med), num(s.lo), num(s.hi))
}

// table is the figures as Markdown tables, one per section.
func (r *report) table() string {
	var b strings.Builder
	for _, sec := range r.sections() {
		fmt.Fprintf(&b, "### %s\n\n", sec.title)
		b.WriteString("| figure | unit | direct | gptapi | nginx | gptapi/nginx | gptapi − direct | nginx − direct |\n")
		b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, m := range sec.metrics {
			d, g, n := r.stat(direct, m.key), r.stat(gptapi, m.key), r.stat(nginx, m.key)
			ratio, addG, addN := "—", "—", "—"
			if g.ok() && n.ok() && n.med != 0 && !m.plain {
				ratio = fmt.Sprintf("%.2f×", g.med/n.med)
			}
			if m.added && d.ok() {
				if g.ok() {
					addG = fmt.Sprintf("%+.0f µs", g.med-d.med)
				}
				if n.ok() {
					addN = fmt.Sprintf("%+.0f µs", n.med-d.med)
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
				m.label, m.unit, r.cell(d), r.cell(g), r.cell(n), ratio, addG, addN)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// goal is one of gptapi's performance targets.
type goal struct {
	name   string
	got    string
	met    bool
	judged bool // false when a figure is missing
}

func (r *report) goals() []goal {
	var gs []goal
	cmp := func(name, key string) {
		g, n := r.stat(gptapi, key), r.stat(nginx, key)
		if !g.ok() || !n.ok() {
			gs = append(gs, goal{name: name, got: "not measured"})
			return
		}
		gs = append(gs, goal{name: name, got: fmt.Sprintf("gptapi %s µs, nginx %s µs", num(g.med), num(n.med)), met: g.med <= n.med, judged: true})
	}
	added := func(name, key string, limit float64) {
		g, d := r.stat(gptapi, key), r.stat(direct, key)
		if !g.ok() || !d.ok() {
			gs = append(gs, goal{name: name, got: "not measured"})
			return
		}
		a := g.med - d.med
		got := fmt.Sprintf("%+.0f µs", a)
		if why := r.latencyDisturbed(); why != "" {
			gs = append(gs, goal{name: name, got: got + "; not judged: " + why})
			return
		}
		gs = append(gs, goal{name: name, got: got, met: a <= limit, judged: true})
	}
	cmp("CPU per non-stream request ≤ nginx's (saturated)", "cpu_wrk")
	cmp(fmt.Sprintf("CPU per non-stream request ≤ nginx's (%.0f req/s)", r.plan.rate), "cpu_ol")
	cmp("CPU per 20-chunk stream ≤ nginx's (saturated)", "cpu_stream")
	cmp("CPU per 20-chunk stream ≤ nginx's (paced)", "cpu_paced")
	added(fmt.Sprintf("added p50 ≤ 50 µs at %.0f req/s", r.plan.rate), "ol_p50", 50)
	added(fmt.Sprintf("added p99 ≤ 300 µs at %.0f req/s", r.plan.rate), "ol_p99", 300)
	return gs
}

// Latency at a fixed rate is only worth judging when the generator kept its
// schedule and the targets' core was not shared with other work.
const (
	maxLagP99   = 100 // µs of generator lateness at p99
	maxSUTNoise = 10  // % of the targets' core taken by other processes
)

// latencyDisturbed says why the open-loop latencies of gptapi and direct
// cannot be judged, or "" when they can.
func (r *report) latencyDisturbed() string {
	var why []string
	for _, t := range []string{direct, gptapi} {
		if lag := r.stat(t, "ol_lag_p99"); lag.ok() && lag.med > maxLagP99 {
			why = append(why, fmt.Sprintf("generator lateness p99 %s µs during %s", num(lag.med), t))
		}
		if n := r.stat(t, "noise_sut_ol"); n.ok() && n.med > maxSUTNoise {
			why = append(why, fmt.Sprintf("other processes took %s%% of the targets' core during %s", num(n.med), t))
		}
	}
	return strings.Join(why, ", ")
}

// markdown is the whole results file.
func (r *report) markdown(svgName string) string {
	var b strings.Builder
	p, s := r.plan, r.setup
	mode := "full"
	if p.quick {
		mode = "quick (pipeline check: short phases, low rates; the figures mean little)"
	}
	fmt.Fprintf(&b, "# gptapi benchmark, %s\n\n", r.started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Mode: %s. Runs: %d (each cell: median", mode, len(r.runs))
	if len(r.runs) > 1 {
		b.WriteString(", then min–max over the runs")
	}
	fmt.Fprintf(&b, "). Wall time: %s.\n\n", r.elapsed.Round(time.Second))
	if svgName != "" {
		fmt.Fprintf(&b, "![latency and CPU per request](%s)\n\n", svgName)
	}

	b.WriteString("## Machine\n\n| | |\n| --- | --- |\n")
	for _, f := range r.machine {
		fmt.Fprintf(&b, "| %s | %s |\n", f[0], f[1])
	}
	var loads []string
	for _, rd := range r.runs {
		loads = append(loads, rd.load[0]+"→"+rd.load[1])
	}
	fmt.Fprintf(&b, "| 1-min load average per run (start→end) | %s |\n", strings.Join(loads, ", "))
	b.WriteString("\n## Versions\n\n| | |\n| --- | --- |\n")
	for _, v := range r.versions {
		fmt.Fprintf(&b, "| %s | %s |\n", v[0], v[1])
	}

	b.WriteString("\n## Setup\n\n")
	pin := "not pinned (fewer than two CPUs or no taskset)"
	if s.genCPUs != "" || s.sutCPUs != "" {
		pin = fmt.Sprintf("load generators (wrk, hey, the Go generator) on CPU %s; the mock upstream and both proxies on CPU %s (taskset)", s.genCPUs, s.sutCPUs)
	}
	fmt.Fprintf(&b, "- Pinning: %s. Each proxy shares its core with the upstream it forwards to, as on a single-core box; the direct target is the mock alone on that core.\n", pin)
	b.WriteString("- gptapi: GOMAXPROCS=1, one client pointing at the mock, records ON with bodies (SQLite in a temp folder, default queue/batch/flush), log level warn, every other key at its default (preprocessing on, stream usage requested upstream and hidden).\n")
	b.WriteString("- nginx: `worker_processes 1`, upstream `keepalive 256`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, `proxy_buffering off`, `access_log off`, `keepalive_requests 1000000` on both sides (gptapi does not recycle connections either).\n")
	b.WriteString("- mockllm: GOMAXPROCS=1, 20 one-word chunks per stream, no delays except in the paced-stream phase (`\"mock\":{\"chunk_delay\":…}` in the body, which both proxies pass through).\n")
	fmt.Fprintf(&b, "- Phases per target, %s each, targets interleaved phase by phase, order rotated per run: wrk `-t1 -c%d`; hey `-c %d`; Go generator closed loop, %d concurrent streams; open loop %.0f req/s over up to %d connections; open loop %.0f streams/s with %d ms chunks. Warm-up %s per target first.\n",
		p.phase, p.conns, p.conns, p.streamWorkers, p.rate, p.olConns, p.streamRate, p.chunkDelayMs, p.warm)
	b.WriteString("- Body: `bench/wrk/chat.json` (a system and a user message, `max_tokens` 64); the mock answers ~420 bytes; streams add `\"stream\":true`.\n")
	b.WriteString("- CPU per request: the proxy process's CPU time (nginx: master + worker) from the start of a phase until the process is idle again, divided by the requests answered; this includes gptapi's background record writing. Read from per-thread `/proc/<pid>/task/*/schedstat` (ns), cross-checked with utime+stime of `/proc/<pid>/stat` (used instead if threads exited with their time).\n")
	b.WriteString("- Noise: CPU time of other processes on each pinned core, from `/proc/stat` (user+nice+system+steal) less the benchmark's own processes; irq/softirq is left out, most of it being the benchmark's own loopback traffic.\n")
	b.WriteString("- The harness's Go generator paces with nanosleep on its own thread (GOMAXPROCS=2 on the generator core) and counts latency from the intended send time.\n\n")

	b.WriteString("## Results\n\n")
	b.WriteString(r.table())

	b.WriteString("## gptapi's targets\n\n")
	fmt.Fprintf(&b, "Latency targets are judged only when the generator's lateness p99 stayed under %d µs and other processes took under %d%% of the targets' core (see Noise); CPU per request holds on a busy machine.\n\n", maxLagP99, maxSUTNoise)
	b.WriteString("| target | measured | verdict |\n| --- | --- | --- |\n")
	for _, g := range r.goals() {
		v := "not judged"
		if g.judged {
			v = "met"
			if !g.met {
				v = "MISSED"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.name, g.got, v)
	}

	b.WriteString("\n## Checks\n\n")
	for i, rd := range r.runs {
		status := "pass"
		if len(rd.failures) > 0 {
			status = "FAIL"
		}
		fmt.Fprintf(&b, "- run %d: %s. %s.\n", i+1, status, rd.records)
		for _, f := range rd.failures {
			fmt.Fprintf(&b, "  - FAIL: %s\n", f)
		}
		for _, n := range rd.notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	return b.String()
}

// write puts the report, its chart and its data in dir:
// <date>-<host>.md/.svg/.json, and latest.* copies. It returns the files written.
func (r *report) write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", dir, err)
	}
	host := "host"
	for _, f := range r.machine {
		if f[0] == "host" && f[1] != "" {
			host = f[1]
		}
	}
	stem := r.started.Format("2006-01-02T1504Z") + "-" + sanitize(host)
	svg := r.svg()
	md := r.markdown("latest.svg")
	dated := r.markdown(stem + ".svg")
	js, err := json.MarshalIndent(r.toSaved(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode the report: %w", err)
	}
	files := []struct{ name, body string }{
		{stem + ".md", dated}, {stem + ".svg", svg}, {stem + ".json", string(js) + "\n"},
		{"latest.md", md}, {"latest.svg", svg}, {"latest.json", string(js) + "\n"},
	}
	var paths []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.body), 0o644); err != nil {
			return paths, fmt.Errorf("cannot write %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// sanitize keeps a host name safe in a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}
