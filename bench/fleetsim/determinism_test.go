package main

import (
	"bytes"
	"math"
	"os"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

const traceSlice = "../loadgen/testdata/mooncake-conversation-3min.jsonl"

// outcome is what a request's caller can learn of it.
type outcome struct {
	at, first, done time.Duration
	cached, out     int
	words           string
}

// traceRequests turns the first n lines of the test trace into requests as
// the server parses them, with their arrival times.
func traceRequests(t *testing.T, s *server, n int) ([]time.Duration, []*request) {
	t.Helper()
	f, err := os.Open(traceSlice)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	trs, _, err := loadgen.ReadTrace(f, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Duration
	var rs []*request
	for i := range trs[:n] {
		a, status, msg := s.parse(loadgen.AppendTraceChat(nil, &trs[i], defaultModel), true)
		if status != 0 {
			t.Fatalf("line %d: %d %s", trs[i].Line, status, msg)
		}
		at = append(at, trs[i].At)
		rs = append(rs, newRequest(a.chain, a.text, a.prompt, a.maxOut))
	}
	return at, rs
}

func outcomes(cfg Config, rs []*request) []outcome {
	var os []outcome
	for _, r := range rs {
		os = append(os, outcome{r.at, r.firstAt, r.doneAt, r.cached, int(r.generated.Load()),
			string(appendWords(nil, cfg.Seed, r.text, 0, int(r.generated.Load())))})
	}
	return os
}

// offline runs the arrivals through a fresh engine without a clock.
func offline(t *testing.T, cfg Config, n int) []outcome {
	e := newEngine("s0", cfg, nil)
	at, rs := traceRequests(t, newServer("s0", e, 0), n)
	for i, r := range rs {
		e.advance(at[i])
		e.submitAt(at[i], r)
	}
	e.advance(math.MaxInt64)
	for _, r := range rs {
		if !r.finished.Load() {
			t.Fatal("a request never finished")
		}
	}
	return outcomes(cfg, rs)
}

// Results depend only on the seed and the trace: two runs agree, and the
// engine on its clock (fake time) agrees with the run without one, so
// wall-clock timing of the steps changes nothing. One server takes 120
// requests of the trace, so its cache evicts and its batch preempts.
func TestDeterministicForSeedAndTrace(t *testing.T) {
	cfg := defaultConfig()
	cfg.Seed = 7
	const n = 120
	a, b := offline(t, cfg, n), offline(t, cfg, n)
	if !slices.Equal(a, b) {
		t.Fatal("two offline runs of the same trace differ")
	}
	cached := 0
	for _, o := range a {
		cached += o.cached
	}
	if cached == 0 {
		t.Fatal("nothing was cached: the trace slice should reuse prefixes")
	}

	synctest.Test(t, func(t *testing.T) {
		const speed = 20
		e := startEngine(t, cfg, speed)
		at, rs := traceRequests(t, newServer("s0", e, 0), n)
		t0 := time.Now()
		for i, r := range rs {
			time.Sleep(time.Until(t0.Add(at[i] / speed)))
			e.submit(r)
		}
		for _, r := range rs {
			wait(r)
		}
		live := outcomes(cfg, rs)
		for i := range live {
			if live[i] != a[i] {
				t.Fatalf("request %d on the clock: %+v, offline: %+v", i, live[i], a[i])
			}
		}
	})

	other := cfg
	other.Seed = 8
	if bytes.Equal(appendWords(nil, cfg.Seed, 1, 0, 20), appendWords(nil, other.Seed, 1, 0, 20)) {
		t.Error("the seed does not change the answer text")
	}
}
