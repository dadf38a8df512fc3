package main

import (
	"database/sql"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
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
	want := wrkResult{Requests: 559023, RPS: 55891.25, P50: 291 * time.Microsecond, P99: 3100 * time.Microsecond, SocketErrors: 3, Non2xx: 12}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); !errors.Is(err, errWrkOutput) {
		t.Fatalf("garbage gave %v, want errWrkOutput", err)
	}
	clean := strings.NewReplacer("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "", "  Non-2xx or 3xx responses: 12\n", "").Replace(wrkOut)
	r, err = parseWrk(clean)
	if err != nil || r.SocketErrors != 0 || r.Non2xx != 0 || r.Requests != 559023 {
		t.Fatalf("clean run: %+v, %v", r, err)
	}
}

func TestSplitStat(t *testing.T) {
	f := func(line string, wantUtime, wantPPid string, wantErr bool) {
		t.Helper()
		fs, err := splitStat([]byte(line))
		if (err != nil) != wantErr {
			t.Fatalf("splitStat(%q): %v", line, err)
		}
		if !wantErr && (fs[11] != wantUtime || fs[1] != wantPPid) {
			t.Fatalf("splitStat(%q): utime %q, ppid %q", line, fs[11], fs[1])
		}
	}
	f("4242 (gptapi) S 17 4242 17 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 100 0 0", "153", "17", false)
	f("7 (nginx: worker (x) y) R 6 6 6 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0", "5", "6", false)
	f("garbage", "", "", true)
}

func TestParseUsage(t *testing.T) {
	got, err := parseUsage([]byte("usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnice_usec 0\n"))
	if err != nil || got != 1234567*time.Microsecond {
		t.Fatalf("got %s, %v", got, err)
	}
	for _, bad := range []string{"", "user_usec 5\n", "usage_usec x\n"} {
		if _, err := parseUsage([]byte(bad)); !errors.Is(err, errFormat) {
			t.Fatalf("parseUsage(%q): %v, want errFormat", bad, err)
		}
	}
}

// When HARNESS_TEST_BURN is set, the test binary is a target stand-in: it
// spins two threads for 150 ms of CPU, prints its own rusage in µs and
// waits to be stopped.
func TestMain(m *testing.M) {
	if os.Getenv("HARNESS_TEST_BURN") == "" {
		os.Exit(m.Run())
	}
	done := make(chan bool)
	for range 2 {
		go func() {
			for x, start := 0, time.Now(); time.Since(start) < 75*time.Millisecond; x++ {
			}
			done <- true
		}()
	}
	<-done
	<-done
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("rusage_us %d\n", (ru.Utime.Nano()+ru.Stime.Nano())/1000)
	time.Sleep(time.Minute)
	os.Exit(0)
}

// settle must wait until the stand-in has done its work and then read the
// CPU time its own rusage gives, both ways: from its cgroup (when this
// machine lets the test make one) and from /proc.
func TestSettleCPU(t *testing.T) {
	for _, mode := range []string{"cgroup", "proc"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "cgroup" {
				if how := openCgroups(true); cgroupDir == "" {
					t.Skip(how)
				}
				defer closeCgroups()
			}
			log := filepath.Join(t.TempDir(), "burn.log")
			p, err := startProc("burn", "", []string{"HARNESS_TEST_BURN=1"}, log, os.Args[0], "-test.run=^$")
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop(syscall.SIGKILL, time.Second)
			m := &measurer{p: plan{SettleWindow: 50 * time.Millisecond, SettleLimit: 10 * time.Second}, rd: &runData{}}
			got, err := m.settle(p)
			if err != nil || len(m.rd.Notes) > 0 {
				t.Fatalf("settle: %v %v", err, m.rd.Notes)
			}
			var want int64
			b, _ := os.ReadFile(log)
			if _, err := fmt.Sscanf(string(b), "rusage_us %d", &want); err != nil {
				t.Fatalf("settled before the stand-in finished: its log says %q", b)
			}
			// /proc counts in 10 ms ticks; the start and Go's runtime add a little.
			if d := got - time.Duration(want)*time.Microsecond; d < -20*time.Millisecond || d > 40*time.Millisecond {
				t.Fatalf("%s read %s of CPU, the process's rusage says %s", mode, got, time.Duration(want)*time.Microsecond)
			}
			if (mode == "cgroup") != (p.cg != "") {
				t.Fatalf("%s mode, cgroup %q", mode, p.cg)
			}
		})
	}
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
	c := nginxConfig(18081, 18001)
	for _, want := range []string{
		"worker_processes 1;", "daemon off;", "access_log off;", "keepalive 256;",
		"server 127.0.0.1:18001;", "listen 127.0.0.1:18081", "proxy_pass http://mock;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_buffering off;",
		"pid nginx.pid;", "proxy_temp_path proxy_temp;",
	} {
		if !strings.Contains(c, want) {
			t.Fatalf("nginx config lacks %q:\n%s", want, c)
		}
	}
	if strings.Count(c, "{") != strings.Count(c, "}") {
		t.Fatalf("unbalanced braces:\n%s", c)
	}
	// Only "location /" and the upstream's URL have slashes: every file
	// nginx writes is under its prefix, the run folder.
	if strings.Contains(c, "0.0.0.0") || strings.Count(c, "/") != 3 {
		t.Fatalf("nginx config reaches outside the loopback or the run folder:\n%s", c)
	}
}

// testReport is a report of two runs with every figure set: target i,
// metric j of its section, run k has 100(i+1) + 10j + k.
func testReport() *report {
	r := &report{Plan: fullPlan(), GenCPUs: "0", SUTCPUs: "1", CPUFrom: "cgroup v2", Started: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}
	for i := range 2 {
		rd := &runData{Figures: map[string]map[string]float64{}, Records: "ok"}
		for ti, name := range targetNames {
			for _, sec := range r.sections() {
				for mi, m := range sec.metrics {
					if name == direct && strings.HasPrefix(m.key, "cpu_") {
						continue
					}
					v := float64(100*(ti+1) + 10*mi + i)
					if m.key == "ol_lag_p99" {
						v = float64(ti + i) // a generator on time
					}
					rd.set(name, m.key, v)
				}
			}
		}
		r.Runs = append(r.Runs, rd)
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
	for _, want := range []string{"## Machine", "## Setup", "## Results", "## gptapi's targets", "## Checks",
		"![latency and CPU per request](latest.svg)", "CPU 0", "CPU 1", "Read from cgroup v2."} {
		if !strings.Contains(md, want) {
			t.Fatalf("markdown lacks %q", want)
		}
	}
}

// TestFloorTable: the floor's table and sentence appear once it was
// measured, with its ratios to nginx and gptapi's to it.
func TestFloorTable(t *testing.T) {
	r := testReport()
	if strings.Contains(r.table(), "The floor") || strings.Contains(r.markdown("x.svg"), "The floor alone") {
		t.Fatal("a floor that was not measured has a table")
	}
	// gptapi's cpu_wrk is 200/201 and nginx's 300/301 (medians 200.5, 300.5).
	for i, rd := range r.Runs {
		rd.set(floor, "cpu_wrk", float64(150+i))
		rd.set(floor, "cpu_ol", float64(160+i))
	}
	want := "| CPU per request, saturated (wrk) | µs/req | 150 (150–151) | 200 (200–201) | 300 (300–301) | 0.50× | 1.33× |"
	tab := r.table()
	if !strings.Contains(tab, want) {
		t.Fatalf("table lacks %q:\n%s", want, tab)
	}
	if strings.Contains(tab, "CPU per 20-chunk stream, saturated | µs/stream |") {
		t.Fatalf("table has a row for streams the floor was not measured on:\n%s", tab)
	}
	if md := r.markdown("x.svg"); !strings.Contains(md, "The floor alone (fasthttp with nothing of gptapi's) costs, against nginx's CPU, 0.50× per saturated request and ") {
		t.Fatalf("markdown lacks the floor's sentence:\n%s", md)
	}
	// With streams measured, the table and the sentence give them too.
	for i, rd := range r.Runs {
		rd.set(floor, "cpu_stream", float64(600+i))
		rd.set(floor, "cpu_paced", float64(900+i))
	}
	g, n := r.stat(gptapi, "cpu_paced"), r.stat(nginx, "cpu_paced")
	want = fmt.Sprintf("| 900 (900–901) | %s | %s | %.2f× | %.2f× |", r.cell(g), r.cell(n), 900.5/n.med, g.med/900.5)
	if tab := r.table(); !strings.Contains(tab, want) {
		t.Fatalf("table lacks the paced streams' row %q:\n%s", want, tab)
	}
	if md := r.markdown("x.svg"); !strings.Contains(md, fmt.Sprintf(" and %.2f× per paced stream. A target below", 900.5/n.med)) {
		t.Fatalf("markdown's floor sentence lacks the paced streams:\n%s", md)
	}
}

func TestGoals(t *testing.T) {
	verdicts := func(r *report) string {
		var v []string
		for _, g := range r.goals() {
			v = append(v, g[2])
		}
		return strings.Join(v, ",")
	}
	// CPU: gptapi 2xx, nginx 3xx: within 1.5x and 1x. Added p99: gptapi
	// +100 µs, nginx +200 µs.
	r := testReport()
	if got := verdicts(r); got != "met,met,met,met,met" {
		t.Fatalf("verdicts %s", got)
	}
	// gptapi at 1.2x nginx's CPU meets the non-stream target, not the stream one.
	for _, rd := range r.Runs {
		for _, k := range []string{"cpu_wrk", "cpu_stream"} {
			rd.set(gptapi, k, 1.2*rd.Figures[nginx][k])
		}
	}
	if got := verdicts(r); got != "met,met,MISSED,met,met" {
		t.Fatalf("verdicts at 1.2x: %s", got)
	}
	// Added p99 400 µs more than nginx's misses.
	for _, rd := range r.Runs {
		rd.set(gptapi, "ol_p99", rd.Figures[nginx]["ol_p99"]+400)
	}
	if got := verdicts(r); !strings.HasSuffix(got, ",MISSED") {
		t.Fatalf("verdicts with p99 +400 µs: %s", got)
	}
	// A late generator voids the latency verdict, not the CPU ones.
	for _, rd := range r.Runs {
		rd.set(direct, "ol_lag_p99", 5000)
	}
	if gs := r.goals(); gs[4][2] != "not judged" || !strings.Contains(gs[4][1], "during direct") || gs[0][2] != "met" {
		t.Fatalf("late generator: %v", gs)
	}
	// Without nginx nothing is judged.
	for _, rd := range r.Runs {
		rd.Figures[nginx] = nil
	}
	if got := verdicts(r); got != strings.Repeat("not judged,", 4)+"not judged" {
		t.Fatalf("without nginx: %s", got)
	}
}

func TestSVG(t *testing.T) {
	for _, r := range []*report{testReport(), {Plan: quickPlan(), Runs: []*runData{{}}}} {
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
		// background, 3 legend keys; bars: latency 3x3, TTFT 2x3, CPU 2x2 twice
		want := 1 + 3
		if len(r.Runs[0].Figures) > 0 {
			want += 3*3 + 2*3 + 2*2*2
		}
		if rects != want {
			t.Fatalf("SVG has %d rects, want %d", rects, want)
		}
		if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
			t.Fatalf("SVG has a NaN or Inf coordinate")
		}
	}
}

// A saved report draws the same Markdown and chart as the original.
func TestSavedRoundTrip(t *testing.T) {
	r := testReport()
	r.Elapsed = 8 * time.Minute
	r.Machine = [][2]string{{"host", "bench box"}, {"CPU", "test"}, {"gptapi", "v1"}}
	r.Runs[1].Failures = []string{"something broke"}
	dir := t.TempDir()
	paths, err := r.write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 || filepath.Base(paths[0]) != "latest.md" {
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
	if _, err := loadReport(paths[0]); err == nil {
		t.Fatal("a Markdown file loaded as a report")
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
	good := [][3]any{{"lg-1", 200, 0}, {"lg-2", 200, 1}, {"wrk", 200, 0}, {"wrk", 200, 0}, {"wrk", 499, 0}}
	sent := sentThrough{lg: 2, lgOK: 2, streams: 1, wrk: 2, conns: 4}
	f := func(rows [][3]any, sent sentThrough, wantFail string) {
		t.Helper()
		rd := &runData{}
		checkRecords(rd, makeRecords(t, rows), &sent)
		if wantFail == "" {
			if len(rd.Failures) != 0 {
				t.Fatalf("unexpected failures: %v", rd.Failures)
			}
			return
		}
		if len(rd.Failures) == 0 || !strings.Contains(strings.Join(rd.Failures, "; "), wantFail) {
			t.Fatalf("failures %v, want one about %q", rd.Failures, wantFail)
		}
	}
	f(good, sent, "")
	f(good[1:], sent, "generator records")                            // one lost
	f(append(good, [3]any{"lg-2", 200, 1}), sent, "distinct")         // one twice
	f(append(good[:2:2], good[3:]...), sent, "wrk records")           // a completed wrk request lost
	f(append(good, [3]any{"stray", 200, 0}), sent, "no known sender") // a record nobody sent
	f([][3]any{{"lg-1", 200, 0}, {"lg-2", 200, 0}, {"wrk", 200, 0}, {"wrk", 200, 0}}, sent, "stream records")
	f([][3]any{{"lg-1", 200, 0}, {"lg-2", 502, 1}, {"wrk", 200, 0}, {"wrk", 200, 0}}, sent, "with status 200")
	f(good, sentThrough{lg: 2, lgOK: 2, streams: 1, wrk: 1, conns: 1}, "wrk records") // more than one per connection left open

	rd := &runData{}
	checkRecords(rd, filepath.Join(t.TempDir(), "missing.db"), &sent)
	if len(rd.Failures) == 0 {
		t.Fatal("a missing record file passed")
	}
}
