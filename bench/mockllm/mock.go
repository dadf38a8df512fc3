package main

import (
	"github.com/gptapi/gptapi/internal/jsonw"

	"context"
	"errors"
	"log"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// options are the process-wide defaults, set by flags.
type options struct {
	chunks     int
	words      int
	chunkDelay time.Duration
	ttfb       time.Duration
	stall      time.Duration
	usage      bool // usage in non-stream answers, and in streams that ask for it
	toolCalls  bool
	failStatus int     // 0: never fail
	failRatio  float64 // share of requests answered failStatus
	breakAfter int     // <0: never break
	quiet      bool
}

// defaultOptions are the flag defaults.
func defaultOptions() options {
	return options{chunks: 20, words: 1, usage: true, failRatio: 1, breakAfter: -1}
}

// mock is one mock upstream: one listener, one name.
type mock struct {
	name  string // "mock-<port>"
	nameB []byte
	port  string
	o     options
	srv   *fasthttp.Server

	stop     chan struct{} // closed on shutdown: delays end at once
	stopOnce sync.Once
	seq      atomic.Uint64 // answer ids

	toolArgs   string // arguments of the tool call this mock makes
	modelsBody []byte
	parsers    fastjson.ParserPool
}

var (
	healthBody      = []byte(`{"status":"ok"}`)
	ctJSON          = []byte("application/json")
	ctSSE           = []byte("text/event-stream; charset=utf-8")
	hdrMockName     = []byte("X-Mock-Name")
	noCache         = []byte("no-cache")
	hdrCacheControl = []byte("Cache-Control")
)

// newMock makes the mock that will answer on addr; its name is addr's port.
func newMock(addr net.Addr, o options) *mock {
	port := "0"
	if _, p, err := net.SplitHostPort(addr.String()); err == nil {
		port = p
	}
	m := &mock{
		name: "mock-" + port,
		port: port,
		o:    o,
		stop: make(chan struct{}),
	}
	m.nameB = []byte(m.name)
	m.toolArgs = `{"location":"` + m.name + `","unit":"celsius","days":3}`
	m.modelsBody = m.appendModels(nil, time.Now().Unix())
	m.srv = &fasthttp.Server{
		Handler:            m.handle,
		Name:               "mockllm",
		MaxRequestBodySize: 64 << 20,
		ReadBufferSize:     16 << 10,
		IdleTimeout:        2 * time.Minute,
		CloseOnShutdown:    true,
		Logger:             connLogger{quiet: o.quiet},
	}
	return m
}

// serve answers on ln until ln is closed.
func serve(ln net.Listener, o options) error {
	return newMock(ln.Addr(), o).serve(ln)
}

func (m *mock) serve(ln net.Listener) error {
	return m.srv.Serve(ln)
}

// shutdown stops accepting, cuts every pending delay short so that running
// answers finish at once, and waits for them until ctx is done.
func (m *mock) shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() { close(m.stop) })
	return m.srv.ShutdownWithContext(ctx)
}

// connLogger keeps fasthttp's connection errors but drops the ones this mock
// causes on purpose by breaking streams.
type connLogger struct{ quiet bool }

func (l connLogger) Printf(format string, args ...any) {
	if l.quiet {
		return
	}
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, errBreak) {
			return
		}
	}
	log.Printf(format, args...)
}

func (m *mock) handle(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetCanonical(hdrMockName, m.nameB)
	switch string(ctx.Path()) {
	case "/v1/chat/completions", "/chat/completions":
		m.post(ctx, epChat)
	case "/v1/completions", "/completions":
		m.post(ctx, epCompletions)
	case "/v1/embeddings", "/embeddings":
		m.post(ctx, epEmbeddings)
	case "/v1/rerank", "/rerank":
		m.post(ctx, epRerank)
	case "/v1/models", "/models":
		m.models(ctx)
	case "/health":
		if !ctx.IsGet() && !ctx.IsHead() {
			m.fail(ctx, 405, "method "+string(ctx.Method())+" not allowed on /health")
			return
		}
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.SetBody(healthBody)
	default:
		m.fail(ctx, 404, "unknown path "+string(ctx.Path()))
	}
}

// post answers the POST endpoints: parse, build, misbehave as told, send.
func (m *mock) post(ctx *fasthttp.RequestCtx, ep endpoint) {
	if !ctx.IsPost() {
		m.fail(ctx, 405, "method "+string(ctx.Method())+" not allowed on "+string(ctx.Path()))
		return
	}
	a := acquireAnswer(m, ep)
	if err := a.k.fromHeaders(&ctx.Request.Header); err != nil {
		releaseAnswer(a)
		m.fail(ctx, 400, err.Error())
		return
	}
	p := m.parsers.Get()
	err := a.parse(p, ctx.PostBody())
	m.parsers.Put(p)
	if err != nil {
		releaseAnswer(a)
		m.fail(ctx, 400, err.Error())
		return
	}
	a.sleep(a.k.stall)
	if status := m.failStatus(a.k.status); status != 0 {
		releaseAnswer(a)
		m.fail(ctx, status, "injected failure: status "+strconv.Itoa(status))
		return
	}
	a.sleep(a.k.ttfb)
	a.send(ctx)
}

// failStatus says which error status to answer, 0 for none. A status asked
// for by the request always applies; the -fail-status flag applies to a
// -fail-ratio share of requests.
func (m *mock) failStatus(asked int) int {
	if asked != 0 {
		if asked < 300 {
			return 0
		}
		return asked
	}
	if m.o.failStatus == 0 || m.o.failRatio <= 0 {
		return 0
	}
	if m.o.failRatio >= 1 || rand.Float64() < m.o.failRatio {
		return m.o.failStatus
	}
	return 0
}

// models answers GET /v1/models. Stall and status knobs apply, so a slow or
// failing upstream can be shown to drop out of gptapi's model union.
func (m *mock) models(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		m.fail(ctx, 405, "method "+string(ctx.Method())+" not allowed on "+string(ctx.Path()))
		return
	}
	k := m.defaults()
	if err := k.fromHeaders(&ctx.Request.Header); err != nil {
		m.fail(ctx, 400, err.Error())
		return
	}
	if k.stall > 0 {
		t := time.NewTimer(k.stall)
		select {
		case <-t.C:
		case <-m.stop:
			t.Stop()
		}
	}
	if status := m.failStatus(k.status); status != 0 {
		m.fail(ctx, status, "injected failure: status "+strconv.Itoa(status))
		return
	}
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.SetBody(m.modelsBody)
}

// modelIDs are served by every mock; each mock adds ids of its own so that
// gptapi's union of /v1/models shows every upstream that answered.
var modelIDs = []string{"mock-model", "gpt-4o-mini", "qwen2.5-7b-instruct", "text-embedding-3-small", "bge-reranker-v2-m3"}

func (m *mock) appendModels(dst []byte, created int64) []byte {
	dst = append(dst, `{"object":"list","data":[`...)
	ids := append(append([]string(nil), modelIDs...), m.name, m.name+"-chat")
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":`...)
		dst = jsonw.AppendString(dst, id)
		dst = append(dst, `,"object":"model","created":`...)
		dst = strconv.AppendInt(dst, created, 10)
		dst = append(dst, `,"owned_by":`...)
		dst = jsonw.AppendString(dst, m.name)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// fail answers status with an OpenAI-shaped error body.
func (m *mock) fail(ctx *fasthttp.RequestCtx, status int, msg string) {
	typ, code := errorKind(status)
	ctx.Response.Reset()
	ctx.Response.Header.SetCanonical(hdrMockName, m.nameB)
	ctx.SetStatusCode(status)
	if status == 429 || status == 503 {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.SetBody(appendError(nil, m.name+": "+msg, typ, code))
}

// defaults are the knobs set by flags.
func (m *mock) defaults() knobs {
	return knobs{
		chunks:     m.o.chunks,
		words:      m.o.words,
		chunkDelay: m.o.chunkDelay,
		ttfb:       m.o.ttfb,
		stall:      m.o.stall,
		breakAfter: m.o.breakAfter,
		toolCalls:  m.o.toolCalls,
	}
}
