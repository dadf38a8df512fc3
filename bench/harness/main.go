package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// plan is how long and how hard each measurement runs.
type plan struct {
	Quick         bool
	Phase         time.Duration // each load phase
	Warm          time.Duration // warm-up per target before the phases
	Conns         int           // wrk connections
	StreamWorkers int           // concurrent streams, closed loop
	Rate          float64       // open-loop non-stream requests per second
	StreamRate    float64       // open-loop streams per second, paced chunks
	ChunkDelayMs  int           // the mock's pause between chunks in the paced phase
	OLConns       int           // open-loop connection pool
	// A process is idle again when a window passes with at most 2% CPU.
	SettleWindow, SettleLimit time.Duration
}

func fullPlan() plan {
	return plan{Phase: 10 * time.Second, Warm: time.Second, Conns: 64, StreamWorkers: 32,
		Rate: 1000, StreamRate: 200, ChunkDelayMs: 5, OLConns: 256,
		SettleWindow: 250 * time.Millisecond, SettleLimit: 60 * time.Second}
}

// quickPlan checks the pipeline, not the speed: short phases, low rates.
func quickPlan() plan {
	return plan{Quick: true, Phase: time.Second, Warm: 200 * time.Millisecond, Conns: 16, StreamWorkers: 8,
		Rate: 200, StreamRate: 50, ChunkDelayMs: 5, OLConns: 64,
		SettleWindow: 100 * time.Millisecond, SettleLimit: 15 * time.Second}
}

// setup is the machine-dependent part of a run: binaries, tools, pinning.
type setup struct {
	gptapi, mockllm string // binaries
	floor           string // bench/floor's binary, "" when missing
	nginx, wrk      string // "" when missing
	body            []byte // the chat body, from bench/wrk/chat.json
	bodyPath        string
	luaPath         string
	genCPUs         string // where the load generators run ("" = unpinned)
	sutCPUs         string // where the mock and the proxies run
	keep            bool   // keep each run's temp folder
}

func main() { os.Exit(run()) }

func run() int {
	quick := flag.Bool("quick", false, "check the pipeline in well under a minute: short phases, low rates; results go to a temp folder")
	runs := flag.Int("runs", 1, "repeat the whole run N times; the report gives medians and min–max")
	out := flag.String("out", "", "results folder (default bench/results, or a temp folder with -quick)")
	root := flag.String("root", ".", "repository root (for bench/wrk and bin/)")
	gptapiBin := flag.String("gptapi", "bin/gptapi", "gptapi binary")
	mockBin := flag.String("mockllm", "bin/mockllm", "mock upstream binary")
	floorBin := flag.String("floor", "bin/floor", "bare fasthttp proxy binary (bench/floor); measured in every phase when present")
	genCPUs := flag.String("gen-cpus", "", "CPUs for the load generators, as taskset -c takes them (default: unpinned)")
	sutCPUs := flag.String("sut-cpus", "", "CPUs for the mock and the proxies (default: unpinned)")
	keep := flag.Bool("keep", false, "keep each run's temp folder (configs, logs, the SQLite file)")
	skip := flag.String("skip", "", "comma-separated tools to leave out as if missing: nginx, wrk, floor")
	render := flag.String("render", "", "measure nothing: draw the report and chart of a saved .json again into -out")
	useCgroup := flag.Bool("cgroup", true, "read CPU time from a cgroup v2 per target (false: from /proc/<pid>/stat)")
	limit := flag.Duration("limit", 0, "stop everything and exit 124 after this long (0: no limit)")
	flag.Parse()
	if *runs < 1 || *runs > 20 {
		fmt.Fprintln(os.Stderr, "harness: -runs must be 1..20")
		return 2
	}
	if *render != "" {
		return renderSaved(*render, *out)
	}
	// Two Ps on the generator's core: the pacer sleeps in nanosleep on its
	// own thread while the other P runs the requests.
	runtime.GOMAXPROCS(2)

	p := fullPlan()
	if *quick {
		p = quickPlan()
	}
	s, err := newSetup(*root, *gptapiBin, *mockBin, *floorBin, *skip)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	s.genCPUs, s.sutCPUs, s.keep = *genCPUs, *sutCPUs, *keep

	cpuFrom := openCgroups(*useCgroup)
	defer closeCgroups()
	abort := func(code int, why string) {
		fmt.Fprintf(os.Stderr, "harness: %s: stopping every process\n", why)
		stopAll()
		removeRunDir()
		closeCgroups()
		os.Exit(code)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() { abort(130, (<-sig).String()) }()
	if *limit > 0 {
		time.AfterFunc(*limit, func() { abort(124, "time limit "+limit.String()+" reached") })
	}
	defer stopAll()

	outDir := *out
	if outDir == "" {
		outDir = filepath.Join(*root, "bench", "results")
		if p.Quick {
			if outDir, err = os.MkdirTemp("", "gptapi-bench-quick-"); err != nil {
				fmt.Fprintln(os.Stderr, "harness:", err)
				return 2
			}
		}
	}

	rep := &report{Plan: p, Started: time.Now().UTC(), GenCPUs: s.genCPUs, SUTCPUs: s.sutCPUs,
		CPUFrom: cpuFrom, Machine: machine(s)}
	for i := range *runs {
		fmt.Printf("== run %d/%d\n", i+1, *runs)
		rd := runOnce(p, s, i)
		rep.Runs = append(rep.Runs, rd)
		for _, n := range rd.Notes {
			if strings.HasPrefix(n, "SKIP") {
				fmt.Println(n)
			}
		}
		for _, f := range rd.Failures {
			fmt.Printf("FAIL run %d: %s\n", i+1, f)
		}
		stopAll()
	}
	rep.Elapsed = time.Since(rep.Started)

	paths, err := rep.write(outDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	fmt.Printf("\n%s\n", rep.table())
	for _, path := range paths {
		fmt.Println("wrote", path)
	}
	if n := rep.failures(); n > 0 {
		fmt.Printf("FAIL: %d check(s) failed\n", n)
		return 1
	}
	fmt.Println("PASS: every answer valid, every stream complete, every gptapi request recorded")
	return 0
}

func newSetup(root, gptapiBin, mockBin, floorBin, skip string) (*setup, error) {
	abs := func(p string) string {
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		a, _ := filepath.Abs(p)
		return a
	}
	s := &setup{gptapi: abs(gptapiBin), mockllm: abs(mockBin),
		bodyPath: abs("bench/wrk/chat.json"), luaPath: abs("bench/wrk/chat.lua")}
	for _, b := range []string{s.gptapi, s.mockllm} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("missing binary (make build mockllm): %w", err)
		}
	}
	body, err := os.ReadFile(s.bodyPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read the chat body: %w", err)
	}
	s.body = []byte(strings.TrimSpace(string(body)))
	skipped := map[string]bool{}
	for _, tool := range strings.Split(skip, ",") {
		switch tool = strings.TrimSpace(tool); tool {
		case "nginx", "wrk", "floor":
			skipped[tool] = true
		case "":
		default:
			return nil, fmt.Errorf("-skip: unknown tool %q", tool)
		}
	}
	look := func(name string, extra ...string) string {
		if skipped[name] {
			return ""
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, e := range extra {
			if st, err := os.Stat(e); err == nil && !st.IsDir() {
				return e
			}
		}
		return ""
	}
	s.nginx, s.wrk = look("nginx", "/usr/sbin/nginx"), look("wrk")
	if st, err := os.Stat(abs(floorBin)); err == nil && !st.IsDir() && !skipped["floor"] {
		s.floor = abs(floorBin)
	}
	return s, nil
}

// machine describes the host and the versions of everything measured and
// measuring, for the report.
func machine(s *setup) [][2]string {
	host, _ := os.Hostname()
	cpu := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	facts := [][2]string{{"host", host}, {"CPU", cpu}, {"online CPUs", readTrim("/sys/devices/system/cpu/online")},
		{"kernel", readTrim("/proc/sys/kernel/osrelease")}, {"go (harness)", runtime.Version()}}
	version := func(name, bin string, args ...string) {
		if bin == "" {
			return
		}
		out, _ := exec.Command(bin, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		line, _, _ = strings.Cut(line, " Copyright")
		if line != "" {
			facts = append(facts, [2]string{name, line})
		}
	}
	version("gptapi", s.gptapi, "-version")
	version("nginx", s.nginx, "-v")
	version("wrk", s.wrk, "-v")
	return facts
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// renderSaved writes the report of a saved run again, e.g. after a change to
// the report's layout.
func renderSaved(path, out string) int {
	r, err := loadReport(path)
	if err == nil {
		if out == "" {
			out = filepath.Dir(path)
		}
		var paths []string
		paths, err = r.write(out)
		for _, p := range paths {
			fmt.Println("wrote", p)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	return 0
}
