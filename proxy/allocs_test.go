//go:build !race

package proxy

import (
	"log/slog"
	"testing"
)

// A proxied non-streaming chat request allocates nothing in steady state
// beyond what the answer's size needs: parse, preprocess, rewrite, upstream
// exchange, record, metrics, and the access log line at info level.
func TestAllocsChatNonStream(t *testing.T) {
	for _, lvl := range []slog.Level{slog.LevelInfo, slog.LevelWarn} {
		run, _ := handlerRun(t, lvl, benchChat)
		for i := 0; i < 100; i++ {
			run()
		}
		if n := testing.AllocsPerRun(500, run); n > 0 {
			t.Errorf("log level %v: %.1f allocations per request, want 0", lvl, n)
		}
	}
}

// Pointing a stream's body at the relay and asking it what is buffered, once
// per relayed write, allocate nothing.
func TestAllocsBodyStream(t *testing.T) {
	resp, _ := heldStream(t)
	var bs bodyStream
	p := make([]byte, 4096)
	bs.reset(resp.BodyStream())
	if _, err := bs.Read(p); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		bs.reset(resp.BodyStream())
		if bs.Buffered() == 0 {
			t.Fatal("the next chunks should be buffered")
		}
	}); n > 0 {
		t.Errorf("%.1f allocations per reset and Buffered, want 0", n)
	}
}
