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
