package main

import (
	"io"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

const (
	benchChat       = `{"model":"qwen-7b","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"tell me a story about a fox"}],"max_tokens":256}`
	benchChatStream = `{"model":"qwen-7b","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"tell me a story about a fox"}],"stream":true,"stream_options":{"include_usage":true}}`
	benchEmbeddings = `{"model":"emb","input":["the quick brown fox","jumps over","the lazy dog","again"]}`
)

// Sink keeps benchmark results alive.
var Sink int

// benchHandler measures the handler and the writing of its answer, without
// the network.
func benchHandler(b *testing.B, path, body string) {
	m := localMock(b, quietOptions())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := localCtx(path, body)
		var w countWriter
		for pb.Next() {
			if err := roundTrip(m, ctx, &w); err != nil {
				b.Fatal(err)
			}
		}
		Sink += w.n
	})
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

func BenchmarkChatJSON(b *testing.B)   { benchHandler(b, "/v1/chat/completions", benchChat) }
func BenchmarkChatStream(b *testing.B) { benchHandler(b, "/v1/chat/completions", benchChatStream) }
func BenchmarkEmbeddings(b *testing.B) { benchHandler(b, "/v1/embeddings", benchEmbeddings) }

// BenchmarkLoopback measures whole exchanges over 127.0.0.1 with a fasthttp
// client, as the load harness sees the mock.
func BenchmarkLoopback(b *testing.B) {
	f := func(name, body string) {
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go serve(ln, quietOptions())
			c := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.Header.SetMethod("POST")
				req.SetRequestURI("http://" + ln.Addr().String() + "/v1/chat/completions")
				req.SetBodyString(body)
				for pb.Next() {
					if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Fatalf("status %d, err %v", resp.StatusCode(), err)
					}
					Sink += len(resp.Body())
				}
			})
		})
	}
	f("json", benchChat)
	f("stream", benchChatStream)
}

var _ io.Writer = (*countWriter)(nil)
