// Command floor is the least an HTTP proxy on fasthttp can do: each request
// is read by fasthttp's server, sent as it came to one upstream through a
// fasthttp.HostClient, and the answer's status, Content-Type and body are
// written back. No parsing, no routing, no records, no timeouts of its own.
//
// The benchmark harness (bench/harness) runs it beside gptapi and nginx on
// plain requests, so that every report shows what goroutines on fasthttp
// cost before gptapi does anything: gptapi's figures minus the floor's are
// gptapi's own work, and the floor against nginx bounds what any gptapi on
// these libraries could reach. Streams are not relayed.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18082", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:18001", "upstream host:port")
	flag.Parse()
	hc := &fasthttp.HostClient{Addr: *upstream, MaxConns: 1024}
	handle := func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		ctx.Request.CopyTo(req)
		if err := hc.Do(req, resp); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			return
		}
		ctx.SetStatusCode(resp.StatusCode())
		ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
		ctx.SetBody(resp.Body())
	}
	srv := &fasthttp.Server{Handler: handle, Name: "floor", NoDefaultDate: true, NoDefaultContentType: true}
	if err := srv.ListenAndServe(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	}
}
