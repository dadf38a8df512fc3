//go:build !race

package main

import (
	"io"
	"testing"
)

// TestAllocs checks that answering, streams included, allocates nothing once
// the pools are warm: the mock must never be what a benchmark measures.
func TestAllocs(t *testing.T) {
	m := localMock(t, quietOptions())
	f := func(path, body string) {
		t.Helper()
		ctx := localCtx(path, body)
		run := func() {
			if err := roundTrip(m, ctx, io.Discard); err != nil {
				t.Fatalf("answer failed: %s", err)
			}
			if ctx.Response.StatusCode() != 200 {
				t.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
		run()
		if n := testing.AllocsPerRun(200, run); n > 0 {
			t.Fatalf("%s %s: %.1f allocs per answer, want 0", path, body, n)
		}
	}
	f("/v1/chat/completions", benchChat)
	f("/v1/chat/completions", benchChatStream)
	f("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"n":2,"mock":{"tool_calls":true}}`)
	f("/v1/completions", `{"model":"m","prompt":"hi","stream":true}`)
	f("/v1/embeddings", benchEmbeddings)
	f("/v1/rerank", `{"model":"m","query":"a b","documents":["a","b c","d"]}`)
}
