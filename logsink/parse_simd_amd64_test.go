//go:build amd64

package logsink

import "testing"

// Each recorded stream is parsed by one ParseND over all its chunks, not by
// the line-by-line fallback, and a second parse reuses the first's memory.
func TestSIMDParseNDWholeStream(t *testing.T) {
	if defaultParser != "simdjson" {
		t.Skip("this CPU lacks AVX2 or CLMUL")
	}
	sp := newSIMDParser()
	for _, name := range streamFiles(t) {
		chunks := trimDone(ndjsonFromSSE(t, name))
		if sp.parse(chunks, true) == nil {
			t.Fatalf("%s: ParseND failed", name)
		}
	}
	chunks := trimDone(ndjsonFromSSE(t, "groq-event-error.sse"))
	allocs := testing.AllocsPerRun(20, func() {
		if sp.parse(chunks, true) == nil {
			t.Fatal("ParseND failed")
		}
	})
	// A fresh internal state is about 100 KB in several allocations;
	// reuse leaves at most the bookkeeping of a parse.
	if allocs > 4 {
		t.Fatalf("ParseND with reuse allocates %.0f times", allocs)
	}
}
