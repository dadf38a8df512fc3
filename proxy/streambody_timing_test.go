package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/sse"
)

// The two ways fasthttp's server can send an SSE body: SetBodyStream with a
// BodyWriterTo (gptapi's relay: WriteTo runs on the server goroutine, each
// Write flushed as one chunk) and SetBodyStreamWriter (fasthttp runs the
// writer on a goroutine of its own and pipes it). Same 20-event stream, read
// by a client over loopback.
func BenchmarkStreamBody(b *testing.B) {
	var stream bytes.Buffer
	for i := 0; i < 20; i++ {
		stream.WriteString(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}` + "\n\n")
	}
	stream.WriteString("data: [DONE]\n\n")
	events := stream.Bytes()

	relays := make(chan *sse.Relay, 1024)
	handlers := map[string]fasthttp.RequestHandler{
		"BodyWriterTo": func(ctx *fasthttp.RequestCtx) {
			var r *sse.Relay
			select {
			case r = <-relays:
			default:
				r = new(sse.Relay)
			}
			r.Reset()
			if err := r.Start(bytes.NewReader(events)); err != nil {
				ctx.Error(err.Error(), 500)
				return
			}
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStream(&pooledRelay{Relay: r, pool: relays}, -1)
		},
		"SetBodyStreamWriter": func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				rest := events
				for len(rest) > 0 {
					i := bytes.Index(rest, []byte("\n\n")) + 2
					w.Write(rest[:i])
					if w.Flush() != nil {
						return
					}
					rest = rest[i:]
				}
			})
		},
	}
	for _, name := range []string{"BodyWriterTo", "SetBodyStreamWriter"} {
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &fasthttp.Server{Handler: handlers[name]}
			go srv.Serve(ln) //nolint:errcheck
			defer srv.Shutdown()
			c := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := fasthttp.AcquireRequest()
				resp := fasthttp.AcquireResponse()
				req.SetRequestURI("/")
				req.Header.SetHost("x")
				buf := make([]byte, 8192)
				for pb.Next() {
					resp.StreamBody = true
					if err := c.Do(req, resp); err != nil {
						b.Error(err)
						return
					}
					n, err := drainStream(resp, buf)
					if err != nil {
						b.Error(err)
						return
					}
					if n != len(events) {
						b.Errorf("read %d bytes, want %d", n, len(events))
						return
					}
					resp.Reset()
				}
			})
		})
	}
}

// pooledRelay returns its relay to the pool when fasthttp closes the body.
type pooledRelay struct {
	*sse.Relay
	pool chan *sse.Relay
}

func (p *pooledRelay) Close() error {
	select {
	case p.pool <- p.Relay:
	default:
	}
	return nil
}

// cannedStreamUpstream answers every request on a kept-alive connection
// with the same 20-event chunked stream, written at once.
func cannedStreamUpstream(tb testing.TB) string {
	tb.Helper()
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := 0; i <= 20; i++ {
		ev := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}` + "\n\n"
		if i == 20 {
			ev = "data: [DONE]\n\n"
		}
		b.WriteString(strconv.FormatInt(int64(len(ev)), 16) + "\r\n" + ev + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	return rawUpstream(tb, answering(b.Bytes()))
}

// BenchmarkStreamProxied is a whole proxied stream over loopback: caller →
// gptapi → an upstream that sends 20 events and [DONE] at once → caller,
// records discarded. It measures the upstream side gptapi owns (connection,
// header, chunked body, coalescing) together with the relay.
func BenchmarkStreamProxied(b *testing.B) {
	_, addr := startProxy(b, testConfig(cannedStreamUpstream(b)), nil)
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	body := []byte(`{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI("/v1/chat/completions")
		req.Header.SetMethod("POST")
		req.Header.SetHost("x")
		req.SetBodyRaw(body)
		buf := make([]byte, 8192)
		for pb.Next() {
			resp.StreamBody = true
			if err := c.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			n, err := drainStream(resp, buf)
			if err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 || n < 2000 {
				b.Errorf("status %d, %d bytes", resp.StatusCode(), n)
				return
			}
			Sink += n
			resp.Reset()
		}
	})
}

// drainStream reads a streamed answer's body to its end through buf and
// closes it; it returns how many bytes came.
func drainStream(resp *fasthttp.Response, buf []byte) (int, error) {
	defer resp.CloseBodyStream()
	n := 0
	for {
		m, err := resp.BodyStream().Read(buf)
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
