//go:build amd64

package logsink

import (
	"strings"
	"testing"
)

// Every recorded stream is NDJSON that ParseND takes whole, so the
// line-by-line fallback is never needed for them, and a second parse reuses
// the first's memory.
func TestSIMDParseNDWholeStream(t *testing.T) {
	if defaultParser == "fastjson" {
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

// A stream longer than ndGroup is parsed in groups of whole lines, and a
// line longer than ndGroup is a group of its own: the result is the same as
// the portable parser's.
func TestSIMDGroups(t *testing.T) {
	if defaultParser == "fastjson" {
		t.Skip("this CPU lacks AVX2 or CLMUL")
	}
	long := `{"id":"x","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("a", ndGroup+100) + `"}}]}` + "\n"
	short := ndjsonFromSSE(t, "openai-chat-usage.sse")
	for _, chunks := range []string{
		string(short) + long + string(short),
		long + long,
		strings.Repeat(string(short), 5), // several groups of whole lines
		long[:len(long)-1],               // no newline at all
	} {
		r := &Record{Endpoint: Chat, Stream: true, Chunks: []byte(chunks)}
		simd, fast := deriveWith("simdjson+fastjson", r, 0), deriveWith("fastjson", r, 0)
		if !derivedEqual(simd, fast) {
			t.Fatalf("grouped parse differs:\n%.300s\n%.300s", simd.respBody, fast.respBody)
		}
		if got := checkAgainstRef(t, simd.respBody, refAssemble(t, []byte(chunks)), true); len(got.Choices) != 1 {
			t.Fatalf("%d choices", len(got.Choices))
		}
	}
}
