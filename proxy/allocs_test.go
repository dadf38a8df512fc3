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

// Asking a stream's body what is buffered, once per relayed write, and
// pointing it at a connection's reader allocate nothing.
func TestAllocsBodyStream(t *testing.T) {
	bs, _ := heldStream(t)
	p := make([]byte, len("data: 0\n\n"))
	if _, err := bs.Read(p); err != nil {
		t.Fatal(err)
	}
	saved := *bs
	if n := testing.AllocsPerRun(100, func() {
		*bs = saved
		if bs.Buffered() == 0 {
			t.Fatal("the next chunks should be buffered")
		}
	}); n > 0 {
		t.Errorf("%.1f allocations per Buffered, want 0", n)
	}
}
