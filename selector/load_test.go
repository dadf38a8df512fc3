package selector

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseQueue(t *testing.T) {
	ok := func(text string, want int64) {
		t.Helper()
		got, err := ParseQueue(strings.NewReader(text))
		if err != nil || got != want {
			t.Errorf("ParseQueue(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	bad := func(text string) {
		t.Helper()
		if got, err := ParseQueue(strings.NewReader(text)); err == nil {
			t.Errorf("ParseQueue(%q) = %d, want an error", text, got)
		}
	}
	ok("# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"+
		"# TYPE vllm:num_requests_waiting gauge\n"+
		`vllm:num_requests_waiting{engine="0",model_name="qwen"} 7.0`+"\n"+
		"# TYPE vllm:num_requests_running gauge\n"+
		`vllm:num_requests_running{engine="0",model_name="qwen"} 30.0`+"\n", 7)
	// one series per engine (data parallel): summed
	ok("# TYPE vllm:num_requests_waiting gauge\n"+
		`vllm:num_requests_waiting{engine="0"} 2`+"\n"+
		`vllm:num_requests_waiting{engine="1"} 3`+"\n", 5)
	ok("# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 12\n", 12)
	ok("sglang:num_queue_reqs 4\n", 4) // untyped
	ok("# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n", 0)

	bad("")
	bad("<!DOCTYPE html><html><body>Not found</body></html>")
	bad("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3\n") // no queue metric
	bad("vllm:num_requests_waiting NaN\n")
	bad("vllm:num_requests_waiting -1\n")
	bad("vllm:num_requests_waiting +Inf\n")
	bad("vllm:num_requests_waiting 1e300\n")
	if _, err := ParseQueue(strings.NewReader("up 1\n")); !errors.Is(err, ErrNoQueueMetric) {
		t.Errorf("missing metric: %v, want ErrNoQueueMetric", err)
	}
}

func TestLoadWaitingStale(t *testing.T) {
	var l Load
	if _, ok := l.Waiting(t0, time.Second); ok {
		t.Fatal("a queue never read is known")
	}
	l.SetWaiting(5, t0)
	f := func(after time.Duration, want bool) {
		t.Helper()
		n, ok := l.Waiting(t0.Add(after), 3*time.Second)
		if ok != want || ok && n != 5 {
			t.Errorf("%v after the reading: %d, %v; want known=%v", after, n, ok, want)
		}
	}
	f(0, true)
	f(3*time.Second, true)
	f(3*time.Second+1, false)
	l.Begin()
	l.Begin()
	l.End()
	if l.InFlight() != 1 {
		t.Fatalf("in flight %d", l.InFlight())
	}
}
