package main

import (
	"io"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// localMock is a mock driven in-process, without a listener, for fuzzing,
// allocation tests and benchmarks.
func localMock(tb testing.TB, o options) *mock {
	tb.Helper()
	return newMock(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9001}, o)
}

// localCtx is a request context carrying a POST of body to path.
func localCtx(path, body string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI(path)
	req.SetBodyString(body)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	return ctx
}

// roundTrip runs the handler and drains the answer into w, as fasthttp's
// server would after the handler returns.
func roundTrip(m *mock, ctx *fasthttp.RequestCtx, w io.Writer) error {
	ctx.Response.Reset()
	m.handle(ctx)
	return ctx.Response.BodyWriteTo(w)
}
