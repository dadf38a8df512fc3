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
	quick         bool
	runs          int
	phase         time.Duration // each load phase
	warm          time.Duration // warm-up per target before the phases
	conns         int           // wrk and hey connections
	streamWorkers int           // concurrent streams, closed loop
	rate          float64       // open-loop non-stream requests per second
	streamRate    float64       // open-loop streams per second, paced chunks
	chunkDelayMs  int           // the mock's pause between chunks in the paced phase
	olConns       int           // open-loop connection pool
	settleWindow  time.Duration // a process is idle when a window passes with ≤1 tick
	settleLimit   time.Duration
}

func fullPlan(runs int) plan {
	return plan{runs: runs, phase: 10 * time.Second, warm: time.Second, conns: 64, streamWorkers: 32,
		rate: 1000, streamRate: 200, chunkDelayMs: 5, olConns: 256,
		settleWindow: 250 * time.Millisecond, settleLimit: 60 * time.Second}
}

// quickPlan checks the pipeline, not the speed: short phases, low rates.
func quickPlan() plan {
	return plan{quick: true, runs: 1, phase: time.Second, warm: 200 * time.Millisecond, conns: 16, streamWorkers: 8,
		rate: 200, streamRate: 50, chunkDelayMs: 5, olConns: 64,
		settleWindow: 100 * time.Millisecond, settleLimit: 15 * time.Second}
}

// setup is the machine-dependent part of a run: binaries, tools, pinning.
type setup struct {
	gptapi, mockllm string // binaries
	nginx, wrk, hey string // "" when missing
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
	gptapi := flag.String("gptapi", "bin/gptapi", "gptapi binary")
	mock := flag.String("mockllm", "bin/mockllm", "mock upstream binary")
	genCPUs := flag.String("gen-cpus", "", "CPUs for the load generators (default: 0 when there are two or more)")
	sutCPUs := flag.String("sut-cpus", "", "CPUs for the mock and the proxies (default: 1 when there are two or more)")
	keep := flag.Bool("keep", false, "keep each run's temp folder (configs, logs, the SQLite file)")
	skip := flag.String("skip", "", "comma-separated tools to leave out as if missing: nginx, wrk, hey")
	render := flag.String("render", "", "measure nothing: draw the report and chart again from a saved .json into -out")
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

	p := fullPlan(*runs)
	if *quick {
		p = quickPlan()
	}
	s, err := newSetup(*root, *gptapi, *mock, *genCPUs, *sutCPUs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	s.keep = *keep
	for _, tool := range strings.Split(*skip, ",") {
		switch strings.TrimSpace(tool) {
		case "nginx":
			s.nginx = ""
		case "wrk":
			s.wrk = ""
		case "hey":
			s.hey = ""
		case "":
		default:
			fmt.Fprintf(os.Stderr, "harness: -skip: unknown tool %q\n", tool)
			return 2
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "harness: %s: stopping every process\n", s)
		stopAll()
		removeRunDir()
		os.Exit(130)
	}()
	defer stopAll()
	if *limit > 0 {
		time.AfterFunc(*limit, func() {
			fmt.Fprintf(os.Stderr, "harness: time limit %s reached: stopping every process\n", *limit)
			stopAll()
			removeRunDir()
			os.Exit(124)
		})
	}

	outDir := *out
	if outDir == "" {
		if p.quick {
			if outDir, err = os.MkdirTemp("", "gptapi-bench-quick-"); err != nil {
				fmt.Fprintln(os.Stderr, "harness:", err)
				return 2
			}
		} else {
			outDir = filepath.Join(*root, "bench", "results")
		}
	}

	started := time.Now().UTC()
	rep := &report{plan: p, setup: s, started: started, machine: machineFacts(), versions: versions(s)}
	for i := range p.runs {
		fmt.Printf("== run %d/%d\n", i+1, p.runs)
		rd := runOnce(p, s, i)
		rep.runs = append(rep.runs, rd)
		for _, n := range rd.notes {
			if strings.HasPrefix(n, "SKIP") {
				fmt.Println(n)
			}
		}
		for _, f := range rd.failures {
			fmt.Printf("FAIL run %d: %s\n", i+1, f)
		}
		stopAll()
	}
	rep.elapsed = time.Since(started)

	paths, err := rep.write(outDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	fmt.Println()
	fmt.Print(rep.table())
	fmt.Println()
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

func newSetup(root, gptapi, mock, genCPUs, sutCPUs string) (*setup, error) {
	s := &setup{
		gptapi:   absPath(root, gptapi),
		mockllm:  absPath(root, mock),
		bodyPath: filepath.Join(root, "bench", "wrk", "chat.json"),
		luaPath:  filepath.Join(root, "bench", "wrk", "chat.lua"),
	}
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
	s.bodyPath, _ = filepath.Abs(s.bodyPath)
	s.luaPath, _ = filepath.Abs(s.luaPath)
	s.nginx = lookTool("nginx", "/usr/sbin/nginx")
	s.wrk = lookTool("wrk")
	s.hey = lookTool("hey")

	s.genCPUs, s.sutCPUs = genCPUs, sutCPUs
	if genCPUs == "" && sutCPUs == "" && onlineCPUs() >= 2 && lookTool("taskset") != "" {
		s.genCPUs, s.sutCPUs = "0", "1"
	}
	return s, nil
}

func absPath(root, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// lookTool finds a command on PATH or at one of the extra paths.
func lookTool(name string, extra ...string) string {
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

// renderSaved writes the report of a saved run again, e.g. after a change to
// the report's layout.
func renderSaved(path, out string) int {
	r, err := loadReport(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	if out == "" {
		out = filepath.Dir(path)
	}
	paths, err := r.write(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	for _, p := range paths {
		fmt.Println("wrote", p)
	}
	return 0
}
