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

	"github.com/gptapi/gptapi/bench/chart"
)

// report is everything one harness invocation measured; it is saved as
// JSON next to the Markdown, so -render can draw both again.
type report struct {
	Started          time.Time
	Elapsed          time.Duration
	Plan             plan
	GenCPUs, SUTCPUs string      // pinning, "" when unpinned
	CPUFrom          string      // how CPU time was read
	Machine          [][2]string // host facts and versions
	Runs             []*runData
}

// metric is one row of the report.
type metric struct {
	key, label, unit string
	added            bool // latency: show the µs each proxy adds to direct
	plain            bool // no ratio: the figure is about the generator, not the target
}

// section is a group of rows under one heading.
type section struct {
	title   string
	metrics []metric
}

func (r *report) sections() []section {
	p := r.Plan
	return []section{
		{"Throughput (closed loop; the stream generator often saturates its own core first)", []metric{
			{key: "wrk_rps", label: fmt.Sprintf("non-stream, wrk, %d connections", p.Conns), unit: "req/s"},
			{key: "stream_rps", label: fmt.Sprintf("20-chunk streams, %d concurrent", p.StreamWorkers), unit: "streams/s"},
			{key: "stream_cps", label: "20-chunk streams, content chunks", unit: "chunks/s"},
			{key: "wrk_p50", label: "non-stream, wrk p50 at saturation (queueing)", unit: "µs"},
			{key: "wrk_p99", label: "non-stream, wrk p99 at saturation (queueing)", unit: "µs"},
		}},
		{fmt.Sprintf("Latency, non-stream, open loop at %.0f req/s (from the intended send time)", p.Rate), []metric{
			{key: "ol_p50", label: "p50", unit: "µs", added: true},
			{key: "ol_p99", label: "p99", unit: "µs", added: true},
			{key: "ol_p999", label: "p99.9", unit: "µs", added: true},
			{key: "ol_lag_p99", label: "generator lateness p99 (not the target's)", unit: "µs", plain: true},
		}},
		{fmt.Sprintf("Streams, open loop at %.0f streams/s, 20 chunks %d ms apart", p.StreamRate, p.ChunkDelayMs), []metric{
			{key: "ttft_p50", label: "time to first event p50", unit: "µs", added: true},
			{key: "ttft_p99", label: "time to first event p99", unit: "µs", added: true},
			{key: "gap_p50", label: "inter-chunk gap p50", unit: "µs", added: true},
			{key: "gap_p99", label: "inter-chunk gap p99", unit: "µs", added: true},
		}},
		{"CPU time of the proxy's process tree per request (until idle again, so gptapi's record writing is included)", []metric{
			{key: "cpu_wrk", label: "non-stream, saturated (wrk)", unit: "µs/req"},
			{key: "cpu_ol", label: fmt.Sprintf("non-stream, %.0f req/s", p.Rate), unit: "µs/req"},
			{key: "cpu_stream", label: "20-chunk stream, saturated", unit: "µs/stream"},
			{key: "cpu_paced", label: fmt.Sprintf("20-chunk stream, %.0f/s, %d ms chunks", p.StreamRate, p.ChunkDelayMs), unit: "µs/stream"},
			{key: "mock_cpu_wrk", label: "the mock upstream's own, non-stream (wrk)", unit: "µs/req"},
			{key: "mock_cpu_stream", label: "the mock upstream's own, stream", unit: "µs/stream"},
		}},
	}
}

// stat is a figure over the runs: the median (the mean of the middle two
// for an even count) and the range.
type stat struct {
	med, lo, hi float64
	n           int
}

func (s stat) ok() bool { return s.n > 0 }

// stat gathers key for target over every run.
func (r *report) stat(target, key string) stat {
	var v []float64
	for _, rd := range r.Runs {
		if x, ok := rd.Figures[target][key]; ok && !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	return summarize(v)
}

func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	return stat{med: (s[(n-1)/2] + s[n/2]) / 2, lo: s[0], hi: s[n-1], n: n}
}

func (r *report) failures() int {
	n := 0
	for _, rd := range r.Runs {
		n += len(rd.Failures)
	}
	return n
}

func (r *report) cell(s stat) string {
	switch {
	case !s.ok():
		return "—"
	case len(r.Runs) == 1:
		return chart.Label(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", chart.Label(s.med), chart.Label(s.lo), chart.Label(s.hi))
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
			if m.added && d.ok() && g.ok() {
				addG = fmt.Sprintf("%+.0f µs", g.med-d.med)
			}
			if m.added && d.ok() && n.ok() {
				addN = fmt.Sprintf("%+.0f µs", n.med-d.med)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
				m.label, m.unit, r.cell(d), r.cell(g), r.cell(n), ratio, addG, addN)
		}
		b.WriteString("\n")
	}
	b.WriteString(r.floorTable())
	return b.String()
}

// floorTable sets gptapi and nginx beside the floor, a bare fasthttp proxy
// (bench/floor); "" when the floor was not measured.
func (r *report) floorTable() string {
	if !r.stat(floor, "cpu_wrk").ok() {
		return ""
	}
	var b strings.Builder
	b.WriteString("### The floor: a bare proxy on fasthttp (bench/floor)\n\n")
	b.WriteString("What goroutines on fasthttp cost before any of gptapi's work: fasthttp's server reads each request and a HostClient sends it to the mock, and a stream's body is relayed as it arrives, nothing else (no parsing, routing or records).\n\n")
	b.WriteString("| figure | unit | floor | gptapi | nginx | floor/nginx | gptapi/floor |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range r.floorMetrics() {
		f, g, n := r.stat(floor, m.key), r.stat(gptapi, m.key), r.stat(nginx, m.key)
		if !f.ok() {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", m.label, m.unit, r.cell(f), r.cell(g), r.cell(n), ratioText(f, n), ratioText(g, f))
	}
	b.WriteString("\n")
	return b.String()
}

// floorMetrics are the figures the floor's table gives.
func (r *report) floorMetrics() []metric {
	pl := r.Plan
	return []metric{
		{key: "cpu_wrk", label: "CPU per request, saturated (wrk)", unit: "µs/req"},
		{key: "cpu_ol", label: fmt.Sprintf("CPU per request, %.0f req/s", pl.Rate), unit: "µs/req"},
		{key: "cpu_stream", label: "CPU per 20-chunk stream, saturated", unit: "µs/stream"},
		{key: "cpu_paced", label: fmt.Sprintf("CPU per 20-chunk stream, %.0f/s, %d ms chunks", pl.StreamRate, pl.ChunkDelayMs), unit: "µs/stream"},
		{key: "wrk_rps", label: fmt.Sprintf("throughput, wrk, %d connections", pl.Conns), unit: "req/s"},
		{key: "ol_p50", label: fmt.Sprintf("latency p50 at %.0f req/s", pl.Rate), unit: "µs"},
		{key: "ol_p99", label: fmt.Sprintf("latency p99 at %.0f req/s", pl.Rate), unit: "µs"},
		{key: "ttft_p50", label: fmt.Sprintf("time to first event p50 at %.0f streams/s", pl.StreamRate), unit: "µs"},
		{key: "ttft_p99", label: fmt.Sprintf("time to first event p99 at %.0f streams/s", pl.StreamRate), unit: "µs"},
	}
}

// floorCPU is the floor's CPU against nginx's for each CPU target it was
// measured on, as a phrase; "" when it was measured on none.
func (r *report) floorCPU() string {
	var parts []string
	for _, m := range [][2]string{
		{"cpu_wrk", "per saturated request"},
		{"cpu_ol", fmt.Sprintf("per request at %.0f req/s", r.Plan.Rate)},
		{"cpu_stream", "per saturated stream"},
		{"cpu_paced", "per paced stream"},
	} {
		f, n := r.stat(floor, m[0]), r.stat(nginx, m[0])
		if f.ok() && n.ok() && n.med > 0 {
			parts = append(parts, ratioText(f, n)+" "+m[1])
		}
	}
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// maxLagP99 is the generator lateness (µs, p99) above which the open-loop
// latencies are not judged: the generator, not the target, kept them.
const maxLagP99 = 100

// goals judges gptapi's targets (issue 15): name, what was measured, verdict.
func (r *report) goals() [][3]string {
	var gs [][3]string
	cpu := func(name, key string, limit float64) {
		g, n := r.stat(gptapi, key), r.stat(nginx, key)
		if !g.ok() || !n.ok() || n.med == 0 {
			gs = append(gs, [3]string{name, "not measured", "not judged"})
			return
		}
		gs = append(gs, [3]string{name, fmt.Sprintf("gptapi %s µs, nginx %s µs: %.2f×", chart.Label(g.med), chart.Label(n.med), g.med/n.med), verdict(g.med <= limit*n.med)})
	}
	cpu("CPU per non-stream request ≤ 1.5× nginx's (saturated)", "cpu_wrk", 1.5)
	cpu(fmt.Sprintf("CPU per non-stream request ≤ 1.5× nginx's (%.0f req/s)", r.Plan.Rate), "cpu_ol", 1.5)
	cpu("CPU per 20-chunk stream ≤ nginx's (saturated)", "cpu_stream", 1)
	cpu("CPU per 20-chunk stream ≤ nginx's (paced)", "cpu_paced", 1)

	name := fmt.Sprintf("added p99 at %.0f req/s ≤ nginx's + 300 µs", r.Plan.Rate)
	d, g, n := r.stat(direct, "ol_p99"), r.stat(gptapi, "ol_p99"), r.stat(nginx, "ol_p99")
	if !d.ok() || !g.ok() || !n.ok() {
		return append(gs, [3]string{name, "not measured", "not judged"})
	}
	got := fmt.Sprintf("gptapi %+.0f µs, nginx %+.0f µs", g.med-d.med, n.med-d.med)
	var late []string
	for _, t := range targetNames {
		if lag := r.stat(t, "ol_lag_p99"); lag.ok() && lag.med > maxLagP99 {
			late = append(late, fmt.Sprintf("%s µs during %s", chart.Label(lag.med), t))
		}
	}
	if len(late) > 0 {
		return append(gs, [3]string{name, got + "; generator lateness p99 " + strings.Join(late, ", "), "not judged"})
	}
	return append(gs, [3]string{name, got, verdict(g.med <= n.med+300)})
}

// ratioText is a/b as "1.23×", or "—".
func ratioText(a, b stat) string {
	if !a.ok() || !b.ok() || b.med == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a.med/b.med)
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}

// markdown is the whole results file.
func (r *report) markdown(svgName string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	mode := "full"
	if r.Plan.Quick {
		mode = "quick (pipeline check: short phases, low rates; the figures mean little)"
	}
	p("# gptapi benchmark, %s\n", r.Started.Format("2006-01-02 15:04 UTC"))
	spread := ""
	if len(r.Runs) > 1 {
		spread = ", then min–max over the runs"
	}
	p("Mode: %s. Runs: %d (each cell: median%s). Wall time: %s.\n", mode, len(r.Runs), spread, r.Elapsed.Round(time.Second))
	p("![latency and CPU per request](%s)\n", svgName)

	p("## Machine\n\n| | |\n| --- | --- |")
	for _, f := range r.Machine {
		p("| %s | %s |", f[0], f[1])
	}
	var loads []string
	for _, rd := range r.Runs {
		loads = append(loads, rd.Load[0]+"→"+rd.Load[1])
	}
	p("| 1-min load average per run (start→end) | %s |\n", strings.Join(loads, ", "))

	pl := r.Plan
	pin := "not pinned"
	if r.GenCPUs != "" || r.SUTCPUs != "" {
		pin = fmt.Sprintf("load generators (wrk, the Go generator) on CPU %s; the mock upstream and the proxies on CPU %s (taskset)", r.GenCPUs, r.SUTCPUs)
	}
	p("## Setup\n")
	p("- Pinning: %s. Each proxy shares its core with the upstream it forwards to, as on a single-core box; the direct target is the mock alone on that core.", pin)
	p("- gptapi: GOMAXPROCS=1, one client pointing at the mock, records ON with bodies (SQLite in a temp folder, default queue/batch/flush), log level warn, every other key at its default.")
	p("- floor (bench/floor): GOMAXPROCS=1, fasthttp's server and a HostClient with their defaults (a second one with StreamResponseBody for requests that ask for a stream), the request sent as it came and the answer's status, Content-Type and body written back; a stream's body relayed as it arrives, each read flushed to the caller.")
	p("- nginx: `worker_processes 1`, upstream `keepalive 256`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, `proxy_buffering off`, `access_log off`, `keepalive_requests 1000000` on both sides.")
	p("- mockllm: GOMAXPROCS=1, 20 one-word chunks per stream, no delays except in the paced-stream phase (`\"mock\":{\"chunk_delay\":…}` in the body, which both proxies pass through).")
	p("- Phases per target, %s each, targets interleaved phase by phase, order rotated per run: wrk `-t1 -c%d`; Go generator closed loop, %d concurrent streams; open loop %.0f req/s over up to %d connections; open loop %.0f streams/s with %d ms chunks. Warm-up %s per target first.",
		pl.Phase, pl.Conns, pl.StreamWorkers, pl.Rate, pl.OLConns, pl.StreamRate, pl.ChunkDelayMs, pl.Warm)
	p("- Body: `bench/wrk/chat.json` (a system and a user message, `max_tokens` 64); streams add `\"stream\":true`.")
	p("- CPU per request: the CPU time of the proxy's process tree (nginx: master + worker; gptapi: every thread, the SQLite writer's included) from the start of a phase until it is idle again, divided by the requests answered. Read from %s.", r.CPUFrom)
	p("- The Go generator paces with nanosleep on its own thread (nice -20 when allowed) and counts latency from the intended send time; its own lateness is reported.\n")

	p("## Results\n")
	b.WriteString(r.table())

	p("## gptapi's targets\n")
	p("The latency target is judged only when the generator's lateness p99 stayed under %d µs; CPU per request holds on a busy machine.\n", maxLagP99)
	p("| target | measured | verdict |\n| --- | --- | --- |")
	for _, g := range r.goals() {
		p("| %s | %s | %s |", g[0], g[1], g[2])
	}
	if floorCPU := r.floorCPU(); floorCPU != "" {
		p("\nThe floor alone (fasthttp with nothing of gptapi's) costs, against nginx's CPU, %s. A target below the floor's figure asks for less than fasthttp's own server and client spend; above it, the difference is what gptapi's own work may take.", floorCPU)
	}
	p("\n## Checks\n")
	for i, rd := range r.Runs {
		status := "pass"
		if len(rd.Failures) > 0 {
			status = "FAIL"
		}
		p("- run %d: %s. %s.", i+1, status, rd.Records)
		for _, f := range rd.Failures {
			p("  - FAIL: %s", f)
		}
		for _, n := range rd.Notes {
			p("  - %s", n)
		}
	}
	return b.String()
}

// svg draws latency and TTFT by target (bars: medians, whiskers: min–max
// over the runs) and the proxies' CPU per request and per stream.
func (r *report) svg() string {
	panel := func(title string, log bool, groups, keys []string) chart.Panel {
		p := chart.Panel{Title: title, Log: log, Groups: groups}
		for _, key := range keys {
			var v, lo, hi []float64
			for _, t := range targetNames {
				s := r.stat(t, key)
				if !s.ok() {
					s = stat{med: math.NaN(), lo: math.NaN(), hi: math.NaN()}
				}
				v, lo, hi = append(v, s.med), append(lo, s.lo), append(hi, s.hi)
			}
			p.Val, p.Lo, p.Hi = append(p.Val, v), append(p.Lo, lo), append(p.Hi, hi)
		}
		return p
	}
	pl := r.Plan
	c := chart.Chart{
		Title:  fmt.Sprintf("gptapi vs nginx vs direct (mock upstream), %s", r.Started.Format("2006-01-02")),
		Series: targetNames,
		Panels: []chart.Panel{
			panel(fmt.Sprintf("Non-stream latency, µs, %.0f req/s open loop", pl.Rate), true,
				[]string{"p50", "p99", "p99.9"}, []string{"ol_p50", "ol_p99", "ol_p999"}),
			panel(fmt.Sprintf("Stream time to first event, µs, %.0f streams/s", pl.StreamRate), true,
				[]string{"p50", "p99"}, []string{"ttft_p50", "ttft_p99"}),
			panel("Proxy CPU per non-stream request, µs", false,
				[]string{"saturated\n(wrk)", fmt.Sprintf("%.0f req/s\n(open loop)", pl.Rate)}, []string{"cpu_wrk", "cpu_ol"}),
			panel("Proxy CPU per 20-chunk stream, µs", false,
				[]string{"saturated\n(closed loop)", fmt.Sprintf("%.0f streams/s\n(%d ms chunks)", pl.StreamRate, pl.ChunkDelayMs)}, []string{"cpu_stream", "cpu_paced"}),
		},
	}
	if len(r.Runs) > 1 {
		c.Title += fmt.Sprintf(", median of %d runs, whiskers min–max", len(r.Runs))
	}
	if pl.Quick {
		c.Title += " — QUICK MODE, not a measurement"
	}
	return c.SVG()
}

// write puts the report, its chart and its data in dir as latest.md,
// latest.svg and latest.json, replacing the previous run's: the report
// carries its own date, host and commit, and git keeps the older ones.
func (r *report) write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", dir, err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode the report: %w", err)
	}
	var paths []string
	for _, f := range [][2]string{
		{"latest.md", r.markdown("latest.svg")}, {"latest.svg", r.svg()}, {"latest.json", string(js) + "\n"},
	} {
		path := filepath.Join(dir, f[0])
		if err := os.WriteFile(path, []byte(f[1]), 0o644); err != nil {
			return paths, fmt.Errorf("cannot write %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// loadReport reads a report saved by write.
func loadReport(path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil || len(r.Runs) == 0 {
		return nil, fmt.Errorf("cannot use %s: not a saved harness report (%v)", path, err)
	}
	return &r, nil
}
