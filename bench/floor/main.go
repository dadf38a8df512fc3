// Command floor is the least an HTTP proxy on fasthttp can do: each request
// is read by fasthttp's server, sent as it came to one upstream through a
// fasthttp.HostClient, and the answer's status, Content-Type and body are
// written back; a request that asks for a stream gets the answer's body
// relayed as it arrives, each read flushed to the caller at once. No
// parsing, no routing, no records, no timeouts of its own.
//
// The benchmark harness (bench/harness) runs it beside gptapi and nginx, so
// that every report shows what goroutines on fasthttp cost before gptapi
// does anything: gptapi's figures minus the floor's are gptapi's own work,
// and the floor against nginx bounds what any gptapi on these libraries
// could reach.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18082", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:18001", "upstream host:port")
	flag.Parse()
	plain := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024}
	streamed := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024, StreamResponseBody: true}
	bufs := sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	handle := func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		ctx.Request.CopyTo(req)
		// The cheapest test that tells a stream request; the JSON is not parsed.
		if !bytes.Contains(req.Body(), []byte(`"stream":true`)) {
			defer fasthttp.ReleaseResponse(resp)
			if err := plain.Do(req, resp); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
				return
			}
			ctx.SetStatusCode(resp.StatusCode())
			ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
			ctx.SetBody(resp.Body())
			return
		}
		if err := streamed.Do(req, resp); err != nil {
			fasthttp.ReleaseResponse(resp)
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			return
		}
		ctx.SetStatusCode(resp.StatusCode())
		ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
		body := resp.BodyStream()
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			defer fasthttp.ReleaseResponse(resp)
			defer resp.CloseBodyStream() //nolint:errcheck // the answer is over either way
			bp := bufs.Get().(*[]byte)
			defer bufs.Put(bp)
			buf := *bp
			for {
				n, err := body.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil || w.Flush() != nil {
						return
					}
				}
				if err != nil {
					if err != io.EOF {
						fmt.Fprintln(os.Stderr, "floor: upstream stream:", err)
					}
					return
				}
			}
		})
	}
	srv := &fasthttp.Server{Handler: handle, Name: "floor", NoDefaultDate: true, NoDefaultContentType: true}
	if err := srv.ListenAndServe(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	}
}
