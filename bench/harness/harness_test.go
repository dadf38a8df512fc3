package main

import (
	"database/sql"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gptapi/gptapi/configs"
)

const wrkOut = `Running 10s test @ http://127.0.0.1:8080/v1/chat/completions
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   635.91us    0.89ms  12.92ms   93.69%
    Req/Sec    56.20k     8.61k   64.00k    70.00%
  Latency Distribution
     50%  291.00us
     75%  597.00us
     90%    1.97ms
     99%    3.10ms
  559023 requests in 10.00s, 88.83MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  55891.25
Transfer/sec:      8.88MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 559023, Seconds: 10, RPS: 55891.25, P50: 291 * time.Microsecond, P99: 3100 * time.Microsecond, SocketErrors: 3, Non2xx: 12}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); !errors.Is(err, errToolOutput) {
		t.Fatalf("garbage gave %v, want errToolOutput", err)
	}
	clean := strings.NewReplacer("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "", "  Non-2xx or 3xx responses: 12\n", "").Replace(wrkOut)
	r, err = parseWrk(clean)
	if err != nil || r.SocketErrors != 0 || r.Non2xx != 0 || r.Requests != 559023 {
		t.Fatalf("clean run: %+v, %v", r, err)
	}
}

const heyOut = `
Summary:
  Total:	1.0004 secs
  Requests/sec:	18849.1146

Latency distribution:
  10% in 0.0002 secs
  99% in 0.0054 secs

Status code distribution:
  [200]	18857 responses
  [502]	3 responses

Error distribution:
  [12]	Post "http://127.0.0.1:18999/v1/chat/completions": context deadline exceeded
  [2]	Post "http://127.0.0.1:18999/v1/chat/completions": EOF
`

func TestParseHey(t *testing.T) {
	r, err := parseHey(heyOut)
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 18849.1146 || r.Status[200] != 18857 || r.Status[502] != 3 || r.Errors != 14 || r.Total() != 18860 {
		t.Fatalf("got %+v", r)
	}
	if _, err := parseHey("flag provided but not defined"); !errors.Is(err, errToolOutput) {
		t.Fatalf("garbage gave %v, want errToolOutput", err)
	}
}

func TestParseStat(t *testing.T) {
	f := func(line string, wantTicks int64, wantPPid int, wantErr bool) {
		t.Helper()
		ticks, err := parseStatTicks([]byte(line))
		if (err != nil) != wantErr || ticks != wantTicks {
			t.Fatalf("parseStatTicks(%q) = %d, %v", line, ticks, err)
		}
		ppid, err := parseStatPPid([]byte(line))
		if (err != nil) != wantErr || ppid != wantPPid {
			t.Fatalf("parseStatPPid(%q) = %d, %v", line, ppid, err)
		}
	}
	f("4242 (gptapi) S 17 4242 17 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 100 0 0", 200, 17, false)
	f("7 (nginx: worker (x) y) R 6 6 6 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0", 11, 6, false)
	f("garbage", 0, 0, true)
	f("1 (short) S", 0, 0, true)
}

func TestParseSchedRun(t *testing.T) {
	f := func(in string, want time.Duration) {
		t.Helper()
		if got := parseSchedRun([]byte(in)); got != want {
			t.Fatalf("parseSchedRun(%q) = %s, want %s", in, got, want)
		}
	}
	f("912179 94269 2\n", 912179)
	f("", 0)
	f("x 1 2", 0)
}

func TestCPUSampleSince(t *testing.T) {
	f := func(a, b cpuSample, want time.Duration) {
		t.Helper()
		if got := b.since(a); got != want {
			t.Fatalf("%+v since %+v = %s, want %s", b, a, got, want)
		}
	}
	ms := time.Millisecond
	f(cpuSample{}, cpuSample{run: 123 * ms, ticks: 12}, 123*ms)    // precise figure kept
	f(cpuSample{}, cpuSample{run: 100 * ms, ticks: 40}, 400*ms)    // a thread left with its time
	f(cpuSample{run: 5 * ms}, cpuSample{run: 5 * ms, ticks: 1}, 0) // idle, tick boundary
}

// cpuOf must agree with the kernel's rusage for this very process.
func TestCPUOfSelf(t *testing.T) {
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	a, err := cpuOf(os.Getpid(), false)
	if err != nil {
		t.Fatal(err)
	}
	r0 := rusage()
	for start := time.Now(); rusage()-r0 < 80*time.Millisecond && time.Since(start) < 10*time.Second; {
	}
	b, err := cpuOf(os.Getpid(), false)
	if err != nil {
		t.Fatal(err)
	}
	want := rusage() - r0
	if got := b.since(a); got < want-30*time.Millisecond || got > want+30*time.Millisecond {
		t.Fatalf("cpuOf measured %s of CPU, rusage %s", got, want)
	}
}

func TestCountCPUList(t *testing.T) {
	f := func(in string, want int, wantOK bool) {
		t.Helper()
		got, ok := countCPUList(in)
		if got != want || ok != wantOK {
			t.Fatalf("countCPUList(%q) = %d, %v; want %d, %v", in, got, ok, want, wantOK)
		}
	}
	f("0-1", 2, true)
	f("0", 1, true)
	f("0-3,8,10-11", 7, true)
	f("", 0, false)
	f("3-1", 0, false)
}

func TestSummarize(t *testing.T) {
	f := func(in []float64, want stat) {
		t.Helper()
		if got := summarize(in); got != want {
			t.Fatalf("summarize(%v) = %+v, want %+v", in, got, want)
		}
	}
	f(nil, stat{})
	f([]float64{5}, stat{med: 5, lo: 5, hi: 5, n: 1})
	f([]float64{9, 1, 5}, stat{med: 5, lo: 1, hi: 9, n: 3})
	f([]float64{4, 1, 2, 8}, stat{med: 3, lo: 1, hi: 8, n: 4})
}

func TestWithFields(t *testing.T) {
	f := func(body, fields, want string) {
		t.Helper()
		if got := string(withFields([]byte(body), fields)); got != want {
			t.Fatalf("withFields(%q, %q) = %q, want %q", body, fields, got, want)
		}
	}
	f(`{"model":"m"}`, `"stream":true`, `{"stream":true,"model":"m"}`)
	f(" {\"a\":1}\n", `"b":2`, `{"b":2,"a":1}`)
}

func TestDurationArg(t *testing.T) {
	f := func(d time.Duration, want string) {
		t.Helper()
		if got := durationArg(d); got != want {
			t.Fatalf("durationArg(%s) = %q, want %q", d, got, want)
		}
	}
	f(10*time.Second, "10s")
	f(1500*time.Millisecond, "1500ms")
}

// The bench config must be one gptapi's own loader accepts, with records on.
func TestGptapiConfigLoads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gptapi.yaml")
	if err := os.WriteFile(path, []byte(gptapiConfig(18080, 18001, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatalf("gptapi refuses the bench config: %v", err)
	}
	if cfg.Server.Listen != "127.0.0.1:18080" || cfg.Logsink.Path != filepath.Join(dir, "gptapi.db") || !cfg.Logsink.StoreBodies {
		t.Fatalf("listen %q, logsink %q, bodies %v", cfg.Server.Listen, cfg.Logsink.Path, cfg.Logsink.StoreBodies)
	}
	if len(cfg.Clients) != 1 || !strings.Contains(cfg.Clients[0].BaseURL, "127.0.0.1:18001") {
		t.Fatalf("clients: %+v", cfg.Clients)
	}
}

func TestNginxConfig(t *testing.T) {
	c := nginxConfig(18081, 18001, "/tmp/run")
	for _, want := range []string{
		"worker_processes 1;", "daemon off;", "access_log off;", "keepalive 256;",
		"server 127.0.0.1:18001;", "listen 127.0.0.1:18081", "proxy_pass http://mock;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_buffering off;",
		"pid /tmp/run/nginx.pid;", "proxy_temp_path /tmp/run/proxy_temp;",
	} {
		if !strings.Contains(c, want) {
			t.Fatalf("nginx config lacks %q:\n%s", want, c)
		}
	}
	if strings.Count(c, "{") != strings.Count(c, "}") {
		t.Fatalf("unbalanced braces:\n%s", c)
	}
	if strings.Contains(c, "0.0.0.0") || strings.Contains(c, "/var/") {
		t.Fatalf("nginx config reaches outside the loopback or the run folder:\n%s", c)
	}
}

// testReport is a report of two runs with every figure set.
func testReport() *report {
	r := &report{plan: fullPlan(2), setup: &setup{genCPUs: "0", sutCPUs: "1"}, started: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}
	for i := range 2 {
		rd := &runData{figures: map[string]map[string]float64{}, records: "ok"}
		for ti, name := range targetNames {
			for _, sec := range r.sections() {
				for mi, m := range sec.metrics {
					if name == direct && strings.HasPrefix(m.key, "cpu_") {
						continue
					}
					v := float64(100*(ti+1) + 10*mi + i)
					if m.key == "ol_lag_p99" || strings.HasPrefix(m.key, "noise_") {
						v = float64(ti + i) // a quiet machine
					}
					rd.set(name, m.key, v)
				}
			}
		}
		r.runs = append(r.runs, rd)
	}
	return r
}

func TestReportTable(t *testing.T) {
	r := testReport()
	tab := r.table()
	// ol_p50 is metric 0 of its section: direct 100/101, gptapi 200/201,
	// nginx 300/301; medians 100.5, 200.5, 300.5.
	want := "| p50 | µs | 100 (100–101) | 200 (200–201) | 300 (300–301) | 0.67× | +100 µs | +200 µs |"
	if !strings.Contains(tab, want) {
		t.Fatalf("table lacks %q:\n%s", want, tab)
	}
	if !strings.Contains(tab, "| non-stream, saturated (wrk) | µs/req | — |") {
		t.Fatalf("direct should have no proxy CPU:\n%s", tab)
	}
	md := r.markdown("latest.svg")
	for _, want := range []string{"## Machine", "## Versions", "## Setup", "## Results", "## gptapi's targets", "## Checks", "![latency and CPU per request](latest.svg)", "CPU 0", "CPU 1"} {
		if !strings.Contains(md, want) {
			t.Fatalf("markdown lacks %q", want)
		}
	}
}

func TestGoals(t *testing.T) {
	r := testReport()
	gs := r.goals()
	if len(gs) != 6 {
		t.Fatalf("got %d goals", len(gs))
	}
	for _, g := range gs {
		if !g.judged {
			t.Fatalf("goal %q not judged", g.name)
		}
	}
	// gptapi's CPU (2xx) is below nginx's (3xx): met; its added p50 is
	// +100 µs: missed; added p99 +100 µs: met.
	if !gs[0].met || gs[4].met || !gs[5].met {
		t.Fatalf("verdicts: %+v", gs)
	}
	r.runs[0].figures[nginx] = nil
	r.runs[1].figures[nginx] = nil
	if r.goals()[0].judged {
		t.Fatal("a goal without nginx figures was judged")
	}

	// A late generator or a busy targets' core voids the latency verdicts,
	// not the CPU ones.
	for _, key := range []string{"ol_lag_p99", "noise_sut_ol"} {
		r := testReport()
		for _, rd := range r.runs {
			rd.set(gptapi, key, 5000)
		}
		gs := r.goals()
		if !gs[0].judged || gs[4].judged || gs[5].judged {
			t.Fatalf("%s high: verdicts %+v", key, gs)
		}
		if !strings.Contains(gs[4].got, "not judged") {
			t.Fatalf("%s high: %q does not say why", key, gs[4].got)
		}
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	for _, r := range []*report{testReport(), {plan: quickPlan(), setup: &setup{}, runs: []*runData{{}}}} {
		svg := r.svg()
		dec := xml.NewDecoder(strings.NewReader(svg))
		rects := 0
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("SVG does not parse: %v\n%s", err, svg)
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
				rects++
			}
		}
		if len(r.runs[0].figures) > 0 && rects < 1+3*3+2*3+2*2*2 {
			t.Fatalf("SVG has %d rects, too few for every bar", rects)
		}
		if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
			t.Fatalf("SVG has a NaN or Inf coordinate")
		}
	}
}

func TestScaleTicks(t *testing.T) {
	p := panel{log: true, val: [][]float64{{120, 3400}}, lo: [][]float64{{110, 3000}}, hi: [][]float64{{130, 5000}}}
	sc := p.scale()
	if sc.lo != 2 || sc.hi != 4 {
		t.Fatalf("log scale %+v, want 10^2..10^4", sc)
	}
	if y := sc.y(1000); math.Abs(y-plotH/2) > 1e-9 {
		t.Fatalf("1000 on a 100..10000 log axis is at %g, want the middle", y)
	}
	f := func(v, want float64) {
		t.Helper()
		if got := niceStep(v); got != want {
			t.Fatalf("niceStep(%g) = %g, want %g", v, got, want)
		}
	}
	f(114, 20)
	f(590, 100)
	f(6, 1)
	f(0.7, 0.2)
	f(1200, 200)
	lp := panel{val: [][]float64{{114}}, lo: [][]float64{{114}}, hi: [][]float64{{114}}}
	lin := lp.scale() // 114 plus headroom is 123: steps of 50 up to 150
	if lin.hi != 150 || len(lin.ticks()) != 4 {
		t.Fatalf("linear scale for 114: %+v, ticks %v", lin, lin.ticks())
	}
}

// makeRecords writes a requests table with the columns the check reads.
func makeRecords(t *testing.T, rows [][3]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gptapi.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id TEXT, status INTEGER, stream INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if _, err := db.Exec(`INSERT INTO requests (request_id, status, stream) VALUES (?, ?, ?)`, r[0], r[1], r[2]); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestCheckRecords(t *testing.T) {
	good := [][3]any{{"lg-1", 200, 0}, {"lg-2", 200, 1}, {"wrk", 200, 0}, {"wrk", 200, 0}, {"wrk", 499, 0}, {"hey", 200, 0}}
	sent := sentThrough{lg: 2, lgOK: 2, streams: 1, wrk: 2, hey: 1, wrkConns: 4, heyConns: 4}
	f := func(rows [][3]any, sent sentThrough, wantFail string) {
		t.Helper()
		rd := &runData{}
		checkRecords(rd, makeRecords(t, rows), &sent)
		if wantFail == "" {
			if len(rd.failures) != 0 {
				t.Fatalf("unexpected failures: %v", rd.failures)
			}
			return
		}
		if len(rd.failures) == 0 || !strings.Contains(strings.Join(rd.failures, "; "), wantFail) {
			t.Fatalf("failures %v, want one about %q", rd.failures, wantFail)
		}
	}
	f(good, sent, "")
	f(good[1:], sent, "generator records")                            // one lost
	f(append(good, [3]any{"lg-2", 200, 1}), sent, "distinct")         // one twice
	f(append(good[:2:2], good[3:]...), sent, "wrk records")           // a completed wrk request lost
	f(append(good, [3]any{"stray", 200, 0}), sent, "no known sender") // a record nobody sent
	f([][3]any{{"lg-1", 200, 0}, {"lg-2", 200, 0}, {"wrk", 200, 0}, {"wrk", 200, 0}, {"hey", 200, 0}}, sent, "stream records")
	f(good, sentThrough{lg: 2, lgOK: 2, streams: 1, wrk: 2, hey: 5, heyConns: 1, wrkConns: 4}, "hey records")

	rd := &runData{}
	checkRecords(rd, filepath.Join(t.TempDir(), "missing.db"), &sent)
	if len(rd.failures) == 0 {
		t.Fatal("a missing record file passed")
	}
}

func TestParseCore(t *testing.T) {
	stat := []byte("cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 0 0\ncpu1 100 0 50 1000 10 0 5 0 0 0\nintr 1\n")
	f := func(n int, want coreTicks, wantOK bool) {
		t.Helper()
		got, ok := parseCore(stat, n)
		if got != want || ok != wantOK {
			t.Fatalf("parseCore(cpu%d) = %+v, %v; want %+v, %v", n, got, ok, want, wantOK)
		}
	}
	f(0, coreTicks{busy: 1 + 2 + 3 + 8, total: 1 + 2 + 3 + 40 + 5 + 6 + 7 + 8}, true)
	f(1, coreTicks{busy: 150, total: 1165}, true)
	f(2, coreTicks{}, false)
}

func TestParseStatAllTicks(t *testing.T) {
	got, err := parseStatAllTicks([]byte("9 (harness) S 1 9 9 0 -1 0 0 0 0 0 10 20 30 40 20 0 4 0 1 0 0"))
	if err != nil || got != 100 {
		t.Fatalf("got %d, %v; want 100", got, err)
	}
	if _, err := parseStatAllTicks([]byte("9 (harness) S 1 9")); err == nil {
		t.Fatal("a short line parsed")
	}
}

func TestSingleCPU(t *testing.T) {
	f := func(in string, want int) {
		t.Helper()
		if got := singleCPU(in); got != want {
			t.Fatalf("singleCPU(%q) = %d, want %d", in, got, want)
		}
	}
	f("1", 1)
	f("0", 0)
	f("", -1)
	f("0-1", -1)
}

// A saved report draws the same Markdown and chart as the original.
func TestSavedRoundTrip(t *testing.T) {
	r := testReport()
	r.elapsed = 8 * time.Minute
	r.machine = [][2]string{{"host", "bench-box"}, {"CPU", "test"}}
	r.versions = [][2]string{{"gptapi", "v1"}}
	r.runs[1].failures = []string{"something broke"}
	dir := t.TempDir()
	paths, err := r.write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 6 || !strings.Contains(paths[0], "bench-box") {
		t.Fatalf("wrote %v", paths)
	}
	back, err := loadReport(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := back.markdown("x.svg"), r.markdown("x.svg"); got != want {
		t.Fatalf("markdown differs after a round trip:\n%s\n----\n%s", got, want)
	}
	if back.svg() != r.svg() {
		t.Fatal("SVG differs after a round trip")
	}
	if back.failures() != 1 {
		t.Fatalf("failures lost: %d", back.failures())
	}
}
