// Command replay sends a Mooncake-format trace to an OpenAI-compatible
// endpoint, open loop, streamed, and writes the per-request records and
// their summary as JSON (see loadgen.Replay).
//
//	replay -trace FILE -speed K [-start 10m -length 5m] -addr HOST:PORT[,HOST:PORT...] [-oracle] [-scale S] [-out FILE]
//
// One -addr sends everything there (gptapi, or one server); several take
// requests in turn (client-side round robin, or several gateways), or with
// -oracle are the simulated servers of bench/fleetsim placed by the
// precise-placement reference router.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

func main() {
	trace := flag.String("trace", "", "trace file (Mooncake JSONL)")
	speed := flag.Float64("speed", 1, "divide the trace's arrival times by this")
	start := flag.Duration("start", 0, "skip the trace before this time")
	length := flag.Duration("length", 0, "replay this much of the trace (0: to the end)")
	addr := flag.String("addr", "127.0.0.1:8080", "comma-separated host:port list")
	oracle := flag.Bool("oracle", false, "place requests with the precise-placement reference over -addr (fleetsim servers)")
	model := flag.String("model", "meta-llama/Llama-3.1-8B-Instruct", "model name sent")
	scale := flag.Float64("scale", 1, "multiply measured durations by this in the summary (the simulator's -speed gives simulated time)")
	out := flag.String("out", "", "write the summary with every record here (default: the summary alone to stdout)")
	flag.Parse()

	f, err := os.Open(*trace)
	if err != nil {
		fail("%s", err)
	}
	reqs, bad, err := loadgen.ReadTrace(f, *start, *length)
	f.Close()
	for _, b := range bad {
		fmt.Fprintf(os.Stderr, "replay: %s: skipped %s\n", *trace, b)
	}
	if err != nil {
		fail("%s: %s", *trace, err)
	}
	addrs := strings.Split(*addr, ",")
	var r loadgen.Router = loadgen.RoundRobin(addrs)
	switch {
	case *oracle:
		r = loadgen.NewOracle(addrs)
	case len(addrs) == 1:
		r = loadgen.Fixed(addrs[0])
	}
	rp := &loadgen.Replay{Trace: reqs, Router: r, Model: *model, Speed: *speed, IDPrefix: "replay-"}
	t0 := time.Now()
	recs, err := rp.Run()
	if err != nil {
		fail("%s", err)
	}
	s := loadgen.Summarize(recs, *scale)
	s.Ceiling = loadgen.Ceiling(reqs)
	fmt.Fprintf(os.Stderr, "replay: %d requests in %s, %d failed\n", s.Requests, time.Since(t0).Round(time.Millisecond), s.Failed)
	w := os.Stdout
	if *out != "" {
		s.Records = recs
		if w, err = os.Create(*out); err != nil {
			fail("%s", err)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&s); err != nil {
		fail("%s", err)
	}
	if err := w.Close(); err != nil {
		fail("%s", err)
	}
	if s.Failed > 0 {
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replay: "+format+"\n", args...)
	os.Exit(1)
}
