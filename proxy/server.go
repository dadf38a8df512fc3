package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// RecordSink receives one record per request. Put must not block; it owns
// the record afterwards.
type RecordSink interface {
	Put(*logsink.Record)
}

// Server is gptapi's HTTP server.
type Server struct {
	state   atomic.Pointer[state]
	sink    RecordSink
	log     *slog.Logger
	srv     *fasthttp.Server
	streams streamSet
	waiting waitingSet // non-stream requests waiting on an upstream (watch.go)
	metrics *serverMetrics
	// draining is set by Shutdown: new requests get Connection: close.
	draining atomic.Bool
	// cutting is set when shutdown stops waiting: what still runs is cut.
	cutting atomic.Bool
	// unfinished counts records taken by requests and not yet handed to
	// the sink, so shutdown says "every record written" only when true.
	unfinished atomic.Int64
	ln         *callerListener
	poll       *poller // reads metrics_url for routing (poll.go); from Serve to Shutdown
}

// New builds a server for cfg; records go to sink (nil: dropped, for tests
// that don't look at them).
func New(cfg *configs.Config, sink RecordSink, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if sink == nil {
		sink = discardSink{}
	}
	s := &Server{sink: sink, log: log}
	s.metrics = newServerMetrics(s)
	s.poll = newPoller(s)
	st, err := buildState(cfg, nil, s.metrics)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.srv = &fasthttp.Server{
		Handler:                       s.routes(),
		ErrorHandler:                  s.errorHandler,
		Name:                          "gptapi",
		ReadTimeout:                   cfg.Server.ReadTimeout,
		IdleTimeout:                   cfg.Server.IdleTimeout,
		WriteTimeout:                  0, // absolute in fasthttp: it would cut long streams
		MaxRequestBodySize:            cfg.Server.MaxBodyBytes,
		ReadBufferSize:                16 << 10, // also the header size limit: beyond it, 431
		WriteBufferSize:               16 << 10,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		ReduceMemoryUsage:             false,
		Logger:                        fasthttpLogger{log},
	}
	return s, nil
}

// Apply swaps in a new config (the reload hook). Requests already running
// finish on the old snapshot; idle connections of removed upstreams close.
// Everything it reads per request applies at once, server.send_timeout,
// trusted_proxies and a lower max_body_bytes included; what fasthttp fixed
// when the server started (listen, read_timeout, idle_timeout, a
// max_body_bytes above the first) waits for a restart: RestartKeys names
// them.
func (s *Server) Apply(cfg *configs.Config) error {
	prev := s.state.Load()
	st, err := buildState(cfg, prev, s.metrics)
	if err != nil {
		return err
	}
	s.state.Store(st)
	prev.retire(st)
	s.metrics.forget(st)
	s.poll.refresh()
	return nil
}

// Handler is the server's request handler, for tests that serve it on
// their own listener.
func (s *Server) Handler() fasthttp.RequestHandler { return s.srv.Handler }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.ln = newCallerListener(ln, s)
	s.poll.start()
	stop := make(chan struct{})
	defer close(stop)
	go s.waiting.watch(stop)
	return s.srv.Serve(s.ln)
}

// Shutdown grace periods once the waiting stops: a cut stream's caller has
// cutGrace to take its error event, then every caller connection still
// open is closed and its request ends within closeGrace.
const (
	cutGrace   = time.Second
	closeGrace = 3 * time.Second
)

// Shutdown stops accepting and waits for requests and streams to finish
// until ctx ends. Then it cuts what still runs (SPEC §1): open streams end
// with an error event, requests waiting on an upstream fail, their records
// say 502 "gptapi shutting down", and the callers' connections are closed.
// It returns once every connection is closed; an error means some were
// still open after that, and Unfinished tells whether records were lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.poll.close()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	s.cutting.Store(true)
	n := s.streams.cutAll()
	n += s.waiting.check(errShutdown)
	conns := 0
	if s.ln != nil {
		conns = s.ln.cutAll(time.Now().Add(cutGrace))
	}
	s.log.Warn("shutdown: cutting what still runs", "requests", n, "connections", conns)
	t := time.NewTimer(cutGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if s.ln != nil {
		if n := s.ln.closeAll(); n > 0 {
			s.log.Warn("shutdown: closed caller connections", "connections", n)
		}
	}
	t.Reset(closeGrace)
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errors.New("proxy: connections still open after cutting them")
	}
}

// Unfinished is the number of records requests took and did not hand to
// the sink: 0 once every request has ended.
func (s *Server) Unfinished() int64 { return s.unfinished.Load() }

// put hands a finished record to the sink.
func (s *Server) put(rec *logsink.Record) {
	s.sink.Put(rec)
	s.unfinished.Add(-1)
}

// ActiveStreams is the number of streams being relayed now.
func (s *Server) ActiveStreams() int { return int(s.metrics.active.Load()) }

func (s *Server) routes() fasthttp.RequestHandler {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.GET("/health", s.handleHealth)
	r.GET("/metrics", s.handleMetrics)
	r.GET("/v1/models", s.handleModels)
	r.POST("/v1/chat/completions", s.handleChat)
	r.POST("/v1/completions", s.handleCompletions)
	r.POST("/v1/embeddings", s.handleEmbeddings)
	r.POST("/v1/rerank", s.handleRerank)
	r.POST("/rerank", s.handleRerank)
	r.NotFound = func(ctx *fasthttp.RequestCtx) { s.begin(ctx); writeError(ctx, errNotFound) }
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) { s.begin(ctx); writeError(ctx, errMethodNotAllowed) }
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("BUG: handler panic", "panic", v, "path", string(ctx.Path()), "stack", string(debug.Stack()))
		writeError(ctx, &apiError{Status: fasthttp.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: "Internal error."})
	}
	h := r.Handler
	return func(ctx *fasthttp.RequestCtx) {
		// fasthttp frames a request carrying both Content-Length and
		// Transfer-Encoding: chunked by its chunks, then forgets both (the
		// parsed header says Content-Length: <body read>); only the raw
		// header block keeps them. RFC 9112 §6.3: refuse and close, so
		// what a proxy in front framed otherwise is never served.
		if ambiguousLength(ctx.Request.Header.RawHeaders()) {
			s.begin(ctx)
			ctx.SetConnectionClose()
			writeError(ctx, errAmbiguousLength)
			return
		}
		h(ctx)
	}
}

// ambiguousLength reports whether a raw request header block has both a
// Content-Length and a Transfer-Encoding field. One pass, no allocation.
func ambiguousLength(raw []byte) bool {
	cl, te := false, false
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		switch {
		case len(line) > 15 && line[14] == ':' && bytes.EqualFold(line[:14], []byte("Content-Length")):
			cl = true
		case len(line) > 18 && line[17] == ':' && bytes.EqualFold(line[:17], []byte("Transfer-Encoding")):
			te = true
		}
	}
	return cl && te
}

// errorHandler answers requests fasthttp could not parse, OpenAI-shaped.
func (s *Server) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	s.begin(ctx)
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, errTooLarge)
	case errors.As(err, &small):
		writeError(ctx, errHeadersTooLarge)
	case isTimeout(err): // a caller sending slower than read_timeout allows
		writeError(ctx, errReadTimeout)
	default:
		writeError(ctx, errBadHTTP)
	}
}

func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	s.begin(ctx)
	ctx.SetContentType("application/json")
	ctx.Response.SetBodyString(`{"status":"ok"}`)
}

// streamSet tracks open streams so shutdown can cut them.
type streamSet struct {
	mu sync.Mutex
	m  map[*streamBody]struct{}
}

func (ss *streamSet) add(sb *streamBody) {
	ss.mu.Lock()
	if ss.m == nil {
		ss.m = make(map[*streamBody]struct{})
	}
	ss.m[sb] = struct{}{}
	ss.mu.Unlock()
}

func (ss *streamSet) remove(sb *streamBody) {
	ss.mu.Lock()
	delete(ss.m, sb)
	ss.mu.Unlock()
}

func (ss *streamSet) cutAll() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for sb := range ss.m {
		sb.cut()
	}
	return len(ss.m)
}

type discardSink struct{}

func (discardSink) Put(r *logsink.Record) { logsink.ReleaseRecord(r) }

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	if f.l.Enabled(context.Background(), slog.LevelDebug) {
		f.l.Debug("fasthttp", "msg", format, "args", args)
	}
}

// Config is the config in force.
func (s *Server) Config() *configs.Config { return s.state.Load().cfg }

// RestartKeys returns the key paths of the server settings that differ
// between the config the server started with and next and that only a
// restart applies (fasthttp fixed them at start).
func RestartKeys(started, next *configs.Config) []string {
	a, b := &started.Server, &next.Server
	var keys []string
	if a.ReadTimeout != b.ReadTimeout {
		keys = append(keys, "server.read_timeout")
	}
	if a.IdleTimeout != b.IdleTimeout {
		keys = append(keys, "server.idle_timeout")
	}
	if b.MaxBodyBytes > a.MaxBodyBytes {
		keys = append(keys, "server.max_body_bytes (above its value at start)")
	}
	return keys
}
