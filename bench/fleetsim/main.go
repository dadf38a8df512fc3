package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := defaultConfig()
	listen := flag.String("listen", "127.0.0.1:9101", "first address; the other servers take the next ports (port 0: each its own free port); or a comma-separated list, one server each")
	n := flag.Int("n", 8, "servers, when -listen is one address")
	speed := flag.Float64("speed", 1, "time compression: every simulated duration is divided by this in wall time")
	flag.IntVar(&cfg.KVTokens, "kv-tokens", cfg.KVTokens, "KV cache capacity per server, in tokens")
	flag.IntVar(&cfg.MaxModelLen, "max-model-len", cfg.MaxModelLen, "context limit: prompt + max_tokens (lowered to fit -kv-tokens)")
	flag.IntVar(&cfg.StepTokens, "step-tokens", cfg.StepTokens, "token budget of one engine step (max_num_batched_tokens)")
	flag.IntVar(&cfg.MaxSeqs, "max-seqs", cfg.MaxSeqs, "most running requests (max_num_seqs)")
	flag.Float64Var(&cfg.Cost.PrefillRate, "prefill-rate", cfg.Cost.PrefillRate, "prefill tokens per simulated second")
	flag.DurationVar(&cfg.Cost.StepBase, "step-base", cfg.Cost.StepBase, "simulated floor of one step")
	flag.DurationVar(&cfg.Cost.PerSeq, "per-seq", cfg.Cost.PerSeq, "simulated time added to a step per decoding sequence")
	flag.StringVar(&cfg.Model, "model", cfg.Model, "the model name served")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "picks the answer text")
	gap := flag.Duration("event-gap", 100*time.Millisecond, "least simulated time between two events of a stream (tokens generated in between share an event)")
	gran := flag.Duration("granularity", 500*time.Microsecond, "least wall time an engine sleeps between steps")
	flag.Parse()

	switch {
	case *speed <= 0:
		fail(1, "-speed must be positive")
	case cfg.KVTokens < 4*blockTokens:
		fail(1, "-kv-tokens must be at least %d", 4*blockTokens)
	case cfg.StepTokens < 1, cfg.MaxSeqs < 1, cfg.MaxModelLen < 2:
		fail(1, "-step-tokens, -max-seqs must be positive, -max-model-len at least 2")
	case cfg.Cost.PrefillRate <= 0 || cfg.Cost.StepBase < 0 || cfg.Cost.PerSeq < 0:
		fail(1, "-prefill-rate must be positive, -step-base and -per-seq not negative")
	}
	cfg.MaxModelLen = min(cfg.MaxModelLen, cfg.KVTokens-blockTokens)

	addrs, err := addresses(*listen, *n)
	if err != nil {
		fail(1, "%s", err)
	}
	clock := newSimClock(*speed)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, len(addrs))
	var fleet []*server
	var lns []net.Listener
	for i, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fail(2, "cannot listen on %s: %s", addr, err)
		}
		name := "s" + strconv.Itoa(i)
		eng := newEngine(name, cfg, clock)
		go eng.run(ctx, *gran)
		s := newServer(name, eng, time.Duration(float64(*gap) / *speed))
		s.addr = ln.Addr().String()
		fleet = append(fleet, s)
		lns = append(lns, ln)
	}
	for i, s := range fleet {
		s.fleet = fleet
		go func() { errc <- s.serve(lns[i]) }()
		fmt.Printf("fleetsim %s listening on %s\n", s.name, s.addr)
	}
	fmt.Printf("fleetsim ready: %d servers, speed %g, kv %d tokens, prefill %g tok/s, step %s + %s/seq\n",
		len(addrs), *speed, cfg.KVTokens, cfg.Cost.PrefillRate, cfg.Cost.StepBase, cfg.Cost.PerSeq)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-errc:
		fail(1, "%s", err)
	}
}

// addresses expands -listen and -n.
func addresses(listen string, n int) ([]string, error) {
	if strings.Contains(listen, ",") {
		var out []string
		for a := range strings.SplitSeq(listen, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
		return out, nil
	}
	if n < 1 {
		return nil, fmt.Errorf("-n must be positive, got %d", n)
	}
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("-listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("-listen %q: bad port", listen)
	}
	out := make([]string, n)
	for i := range out {
		q := port
		if port != 0 {
			q += i
		}
		out[i] = net.JoinHostPort(host, strconv.Itoa(q))
	}
	return out, nil
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fleetsim: "+format+"\n", args...)
	os.Exit(code)
}
