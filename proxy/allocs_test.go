//go:build !race

package proxy

import (
	"log/slog"
	"testing"
)

// A proxied non-streaming chat request allocates nothing in steady state
// beyond what the answer's size needs: parse, preprocess, rewrite, upstream
// exchange, record, metrics. Logging off, since slog's handler allocates for
// a line with this many fields.
func TestAllocsChatNonStream(t *testing.T) {
	run, _ := handlerRun(t, slog.LevelWarn, benchChat)
	for i := 0; i < 100; i++ {
		run()
	}
	if n := testing.AllocsPerRun(500, run); n > 0 {
		t.Fatalf("%.1f allocations per request, want 0", n)
	}
}
