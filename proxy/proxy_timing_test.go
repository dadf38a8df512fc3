package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// Sink keeps benchmark results alive.
var Sink int

const cannedAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"qwen-7b","choices":[{"index":0,"message":{"role":"assistant","content":"the quick brown fox jumps over the lazy dog"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}`

// cannedUpstream answers every request on a kept-alive connection with the
// same bytes, allocating nothing per request, so allocation counts of a
// proxied request are gptapi's own.
func cannedUpstream(tb testing.TB, answer string) string {
	tb.Helper()
	return rawUpstream(tb, answering([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(answer))+"\r\n\r\n"+answer)))
}

// handlerRun returns a function that serves one chat request through the
// handler in process, with quiet logging at level.
func handlerRun(tb testing.TB, level slog.Level, body string) (func(), *fasthttp.RequestCtx) {
	cfg := testConfig(cannedUpstream(tb, cannedAnswer))
	cfg.Clients[0].MaxTokens = 512
	cfg.Clients[0].Stop = []string{"<|im_end|>"}
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: level}))
	s, err := New(cfg, nil, log)
	if err != nil {
		tb.Fatal(err)
	}
	h := s.Handler()
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, nil)
	b := []byte(body)
	return func() {
		ctx.Request.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/chat/completions")
		ctx.Request.SetBodyRaw(b)
		ctx.Response.Reset()
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		Sink += len(ctx.Response.Body())
	}, &ctx
}

const benchChat = `{"model":"qwen-7b","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"  What is the capital of France?  "},{"role":"assistant","content":"<think>easy</think>Paris."},{"role":"user","content":"And of Italy?"}],"max_tokens":4096,"temperature":0.7,"stop":["\n\n"]}`

func BenchmarkChatNonStream(b *testing.B) {
	for _, lvl := range []slog.Level{slog.LevelInfo, slog.LevelWarn} {
		b.Run("log="+lvl.String(), func(b *testing.B) {
			run, _ := handlerRun(b, lvl, benchChat)
			run()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run()
			}
		})
	}
}

// BenchmarkRewrite is the request path's JSON work alone: parse, preprocess,
// build the upstream body.
func BenchmarkRewrite(b *testing.B) {
	var x exchange
	c := configs.Client{MaxTokens: 512, Stop: []string{"<|im_end|>"}, StreamUsage: true}
	pp := configs.Preprocess{Strip: true, StripThink: true, DropEmpty: true, MergeUser: "merge"}
	body := []byte(benchChat)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		x.req.reset()
		x.arena.Reset()
		if e := x.req.parse(body, logsink.Chat); e != nil {
			b.Fatal(e.Message)
		}
		if !preprocess(&x.req, &x.arena, &pp) {
			b.Fatal("empty")
		}
		x.upBody = x.req.appendUpstreamBody(x.upBody[:0], &c, x.req.model)
	}
	Sink += len(x.upBody)
	if !bytes.Contains(x.upBody, []byte(`"max_tokens":512`)) {
		b.Fatalf("not rewritten: %s", x.upBody)
	}
}

// BenchmarkRecords is the cost of recording: the same proxied request with
// records off (discarded) and on (the real SQLite sink, bodies stored), run
// in parallel so the writer competes for the CPU as it does in production.
func BenchmarkRecords(b *testing.B) {
	upURL := cannedUpstream(b, cannedAnswer)
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig(upURL)
			var sink RecordSink
			if on {
				dir := b.TempDir()
				d := configs.Default().Logsink
				s, err := logsink.Open(logsink.Options{Driver: d.Driver, Path: dir + "/r.db", QueueSize: d.QueueSize,
					BatchSize: d.BatchSize, FlushInterval: d.FlushInterval, StoreBodies: true, MaxBodyLogBytes: d.MaxBodyLogBytes,
					SpillDir: dir + "/spill", MaxPendingBytes: int64(d.MaxPendingBytes),
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				sink = s
			}
			log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
			srv, err := New(cfg, sink, log)
			if err != nil {
				b.Fatal(err)
			}
			h := srv.Handler()
			body := []byte(benchChat)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var ctx fasthttp.RequestCtx
				var req fasthttp.Request
				ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, nil)
				for pb.Next() {
					ctx.Request.Reset()
					ctx.Request.Header.SetMethod("POST")
					ctx.Request.SetRequestURI("/v1/chat/completions")
					ctx.Request.SetBodyRaw(body)
					ctx.Response.Reset()
					h(&ctx)
					if ctx.Response.StatusCode() != 200 {
						b.Errorf("status %d", ctx.Response.StatusCode())
						return
					}
				}
			})
		})
	}
}
