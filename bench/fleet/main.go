package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

const model = "meta-llama/Llama-3.1-8B-Instruct"

// strategy is one way of placing requests on the fleet.
type strategy struct {
	Name    string
	Routing string // gptapi's routing.strategy; "" for no gptapi
	Gptapis int    // gptapi processes taking requests in turn
	Direct  string // without gptapi: "rr" or "oracle"
}

var strategies = []strategy{
	{Name: "weighted", Routing: "weighted", Gptapis: 1},
	{Name: "least_loaded", Routing: "least_loaded", Gptapis: 1},
	{Name: "prefix", Routing: "prefix", Gptapis: 1},
	{Name: "prefix x3", Routing: "prefix", Gptapis: 3},
	{Name: "round robin", Direct: "rr"},
	{Name: "precise", Direct: "oracle"},
}

// plan is what one invocation measures.
type plan struct {
	Trace   string        `json:"trace"`
	Start   time.Duration `json:"start_ns"`
	Length  time.Duration `json:"length_ns"`
	Servers int           `json:"servers"`
	Speed   float64       `json:"speed"` // simulated seconds per wall second
	Loads   []float64     `json:"loads"` // trace arrival rate multipliers
	KVs     []int         `json:"kv_tokens"`
	Quick   bool          `json:"quick"`
}

func main() { os.Exit(fleetMain()) }

// quickOut is where -quick writes its report unless -out is given: one
// fixed folder, overwritten by every quick run.
var quickOut = filepath.Join(os.TempDir(), "gptapi-fleet-quick")

func fleetMain() int {
	p := plan{Servers: 8}
	flag.StringVar(&p.Trace, "trace", "../shared/testdata/traces/mooncake-conversation.jsonl", "trace file (Mooncake JSONL)")
	flag.DurationVar(&p.Start, "start", 10*time.Minute, "where the slice starts in the trace")
	flag.DurationVar(&p.Length, "length", 5*time.Minute, "how much of the trace each run replays")
	flag.Float64Var(&p.Speed, "speed", 20, "simulator time compression")
	loads := flag.String("loads", "0.5,1,1.5", "arrival rate multipliers of the trace")
	kvs := flag.String("kv", "147456,1179648", "KV capacities per server, tokens (one A100 40GB, 8x)")
	flag.BoolVar(&p.Quick, "quick", false, "one load (1), one capacity (8x), a one-minute slice from the start; fail on any error or missing figure")
	out := flag.String("out", "bench/results", "folder for fleet-latest.md, .json, .svg (-quick: a temp folder unless set)")
	gptapi := flag.String("gptapi", "bin/gptapi", "gptapi binary")
	sim := flag.String("fleetsim", "bin/fleetsim", "fleetsim binary")
	only := flag.String("only", "", "comma-separated strategy names to run (default: all)")
	render := flag.String("render", "", "redraw the .md and .svg of a saved fleet report (.json) beside it, without running")
	flag.Parse()
	if *render != "" {
		if err := rerender(*render); err != nil {
			fmt.Fprintf(os.Stderr, "fleet: %s\n", err)
			return 1
		}
		return 0
	}

	var err error
	if p.Loads, err = floats(*loads); err != nil {
		fail("-loads: %s", err)
	}
	var ks []float64
	if ks, err = floats(*kvs); err != nil {
		fail("-kv: %s", err)
	}
	for _, k := range ks {
		p.KVs = append(p.KVs, int(k))
	}
	outSet := false
	flag.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
	if p.Quick {
		p.Start, p.Length, p.Loads, p.KVs = 0, time.Minute, []float64{1}, []int{1179648}
		if !outSet {
			*out = quickOut
			_ = os.RemoveAll(quickOut)
		}
	}
	sts := strategies
	if *only != "" {
		sts = nil
		for _, s := range strategies {
			if strings.Contains(","+*only+",", ","+s.Name+",") {
				sts = append(sts, s)
			}
		}
	}

	f, err := os.Open(p.Trace)
	if err != nil {
		fail("%s", err)
	}
	trace, bad, err := loadgen.ReadTrace(f, p.Start, p.Length)
	f.Close()
	for _, b := range bad {
		fmt.Fprintf(os.Stderr, "fleet: %s: skipped %s\n", p.Trace, b)
	}
	if err != nil {
		fail("%s: %s", p.Trace, err)
	}
	work, err := os.MkdirTemp("", "gptapi-fleet-")
	if err != nil {
		fail("%s", err)
	}
	defer os.RemoveAll(work)

	rep := &report{Plan: p, Started: time.Now().UTC(), Requests: len(trace), Ceiling: loadgen.Ceiling(trace)}
	fmt.Printf("fleet: %d requests, slice ceiling %.1f%%, %d runs\n", len(trace), 100*rep.Ceiling, len(p.KVs)*len(p.Loads)*len(sts))
	n := 0
	for _, kv := range p.KVs {
		for _, load := range p.Loads {
			for _, s := range sts {
				n++
				dir := filepath.Join(work, fmt.Sprintf("run%02d", n))
				r, err := runOne(&p, s, kv, load, trace, dir, *gptapi, *sim)
				if err != nil {
					fmt.Fprintf(os.Stderr, "fleet: %s at kv %d, load %g: %s\n", s.Name, kv, load, err)
					return 1
				}
				sum := r.Summary
				fmt.Printf("fleet: kv %7d  load %-4g %-13s %4d/%d ok  server ttft p50 %6.0f p99 %7.0f ms  client p50 %6.0f p99 %7.0f ms  hit %5.1f%%  (%s)\n",
					kv, load, s.Name, sum.OK, sum.Requests, sum.ServerTTFTms.P50, sum.ServerTTFTms.P99, sum.TTFTms.P50, sum.TTFTms.P99,
					100*sum.HitShare, r.Wall.Round(100*time.Millisecond))
				rep.Runs = append(rep.Runs, r)
			}
		}
	}
	rep.Took = time.Since(rep.Started)
	paths, err := rep.write(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet: %s\n", err)
		return 1
	}
	fmt.Printf("fleet: %s in %s\n", strings.Join(paths, ", "), rep.Took.Round(time.Second))
	if problems := rep.check(sts); len(problems) > 0 {
		for _, m := range problems {
			fmt.Fprintf(os.Stderr, "fleet: FAIL %s\n", m)
		}
		return 1
	}
	return 0
}

// run is one strategy at one load and capacity.
type run struct {
	Strategy string                `json:"strategy"`
	KV       int                   `json:"kv_tokens"`
	Load     float64               `json:"load"`
	Wall     time.Duration         `json:"wall_ns"`
	Summary  loadgen.ReplaySummary `json:"summary"`
}

// runOne starts a fresh fleet (and gptapi), replays the trace, stops them.
func runOne(p *plan, s strategy, kv int, load float64, trace []loadgen.TraceRequest, dir, gptapiBin, simBin string) (run, error) {
	r := run{Strategy: s.Name, KV: kv, Load: load}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	fl, err := startFleet(simBin, dir, p.Servers, p.Speed, kv)
	if err != nil {
		return r, err
	}
	defer fl.p.stop(5 * time.Second)
	var router loadgen.Router
	switch s.Direct {
	case "rr":
		router = loadgen.RoundRobin(fl.addrs)
	case "oracle":
		router = loadgen.NewOracle(fl.addrs)
	default:
		// gptapi reads each server's load every simulated second.
		poll := max(time.Duration(float64(time.Second)/p.Speed), 20*time.Millisecond)
		var addrs []string
		for i := range s.Gptapis {
			port, err := freePort()
			if err != nil {
				return r, err
			}
			gdir := filepath.Join(dir, "gptapi"+strconv.Itoa(i))
			g, err := startGptapi(gptapiBin, gdir, port, gptapiConfig(port, gdir, s.Routing, poll, model, fl.addrs))
			if err != nil {
				return r, err
			}
			defer g.stop(10 * time.Second)
			addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
		}
		router = loadgen.RoundRobin(addrs)
	}
	rp := &loadgen.Replay{Trace: trace, Router: router, Model: model, Speed: p.Speed * load, IDPrefix: "fleet-", Timeout: 10 * time.Minute}
	t0 := time.Now()
	recs, err := rp.Run()
	if err != nil {
		return r, err
	}
	r.Wall = time.Since(t0)
	r.Summary = loadgen.Summarize(recs, p.Speed)
	return r, nil
}

func floats(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fleet: "+format+"\n", args...)
	os.Exit(1)
}
