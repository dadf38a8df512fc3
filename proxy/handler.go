package proxy

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/logsink"
)

// exchange is everything one proxied request needs, pooled: parser, arena,
// buffers. Nothing in it outlives the handler except what a stream moves
// into its streamBody.
type exchange struct {
	s      *Server
	st     *state
	req    request
	parser fastjson.Parser
	arena  fastjson.Arena
	body   []byte // the request's JSON: the caller's body, or inBody
	inBody []byte // the caller's body decoded, when it came compressed
	upBody []byte
	upReq  []byte // the request sent upstream (prepare)
	cands  []int
	seen   []string // models routed on, for fallback cycles
	key    []byte   // caller's bearer key; points into the request headers
	scr    []byte
	// rec is the request's record and out how the exchange went, which
	// finish writes into it. relayed: a stream took both along; it
	// finishes the record when it ends.
	rec     *logsink.Record
	out     outcome
	relayed bool
	// upWait is the time spent waiting on upstreams over all attempts
	// (for Server-Timing).
	upWait time.Duration
	attrs  []slog.Attr // access log scratch
	rt     routeScratch

	// conn is the upstream connection a non-stream attempt holds.
	conn heldConn
	// The watcher's view of a request waiting on an upstream (watch.go), under mu.
	mu       sync.Mutex
	watchSeq uint64
	caller   *callerConn
	held     *heldConn // the connection waited on now, nil between attempts
	cancel   error     // why the watcher cancelled the request; nil: it did not
	waitIdx  int       // index in Server.waiting, owned by it
}

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

func (s *Server) acquireExchange() *exchange {
	x := exchangePool.Get().(*exchange)
	x.s = s
	x.st = s.state.Load()
	x.out.start = time.Now()
	return x
}

func releaseExchange(x *exchange) {
	x.reset()
	exchangePool.Put(x)
}

// reset empties x for its next request. The upstream body and the scratch
// that held a relayed answer are dropped when large: a pooled exchange
// would otherwise hold up to max_body_bytes and max_response_bytes until
// the pool is emptied.
func (x *exchange) reset() {
	x.req.reset()
	x.arena.Reset()
	x.rt.reset()
	x.out.reset()
	x.s, x.st, x.rec, x.key, x.relayed, x.upWait = nil, nil, nil, nil, false, 0
	x.body, x.inBody = nil, x.inBody[:0]
	x.upBody, x.upReq, x.cands, x.scr = x.upBody[:0], x.upReq[:0], x.cands[:0], x.scr[:0]
	if cap(x.inBody) > maxKeptText {
		x.inBody = nil
	}
	if cap(x.upBody) > maxKeptText {
		x.upBody = nil
	}
	if cap(x.upReq) > maxKeptText {
		x.upReq = nil
	}
	if cap(x.scr) > maxKeptText {
		x.scr = nil
	}
	clear(x.seen)
	x.seen = x.seen[:0]
}

var requestIDHeader = []byte("X-Request-Id")

// begin gives every answer its X-Request-Id: the caller's, or a new one.
func (s *Server) begin(ctx *fasthttp.RequestCtx) []byte {
	id := ctx.Request.Header.PeekBytes(requestIDHeader)
	if len(id) == 0 || len(id) > 128 {
		var raw [8]byte
		var b [16]byte
		binary.BigEndian.PutUint64(raw[:], rand.Uint64())
		id = hex.AppendEncode(b[:0], raw[:])
	}
	ctx.Response.Header.SetBytesKV(requestIDHeader, id)
	if s.draining.Load() {
		ctx.SetConnectionClose()
	}
	return ctx.Response.Header.PeekBytes(requestIDHeader)
}

var bearerPrefix = []byte("Bearer ")

// bearer returns the caller's key from "Authorization: Bearer <key>".
func bearer(ctx *fasthttp.RequestCtx) []byte {
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if len(h) > len(bearerPrefix) && bytes.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
		return bytes.TrimSpace(h[len(bearerPrefix):])
	}
	return nil
}

func (st *state) authorized(key []byte) bool {
	if len(st.authKeys) == 0 {
		return true
	}
	ok := 0
	for _, k := range st.authKeys {
		ok |= subtle.ConstantTimeCompare(k, key)
	}
	return ok == 1
}

func (s *Server) handleChat(ctx *fasthttp.RequestCtx) {
	s.serveLLM(ctx, logsink.Chat)
}

func (s *Server) handleCompletions(ctx *fasthttp.RequestCtx) {
	s.serveLLM(ctx, logsink.Completions)
}

func (s *Server) handleEmbeddings(ctx *fasthttp.RequestCtx) {
	s.serveLLM(ctx, logsink.Embeddings)
}

func (s *Server) handleRerank(ctx *fasthttp.RequestCtx) {
	s.serveLLM(ctx, logsink.Rerank)
}

// serveLLM is every POST endpoint: authenticate, parse, preprocess, record,
// dispatch.
func (s *Server) serveLLM(ctx *fasthttp.RequestCtx, ep logsink.Endpoint) {
	id := s.begin(ctx)
	// fasthttp keeps a request's body buffer with its connection, for as
	// long as it stays open: a large one is let go once used.
	defer ctx.Request.ReleaseBody(maxKeptText)
	x := s.acquireExchange()
	defer releaseExchange(x)

	x.key = bearer(ctx)
	if !x.st.authorized(x.key) {
		s.reject(ctx, ep, errUnauthorized)
		return
	}
	if e := x.readBody(ctx); e != nil {
		s.reject(ctx, ep, e)
		return
	}
	if e := x.req.parse(x.body, ep); e != nil {
		s.reject(ctx, ep, e)
		return
	}
	if ep == logsink.Chat && !preprocess(&x.req, &x.arena, &x.st.cfg.Preprocess) {
		s.reject(ctx, ep, badRequest("No message is left to send after preprocessing (empty messages)."))
		return
	}

	rec := logsink.AcquireRecord()
	s.unfinished.Add(1)
	x.rec = rec
	rec.RequestID = append(rec.RequestID[:0], id...)
	rec.TsMs = x.out.start.UnixMilli()
	rec.ClientIP = x.st.appendClientIP(rec.ClientIP[:0], ctx)
	if len(x.key) > 0 {
		rec.HasKey = true
		rec.KeyHash = logsink.HashKey(x.key)
	}
	rec.Endpoint = ep
	rec.Model = append(rec.Model[:0], x.req.model...)
	rec.Stream = x.req.stream
	if ep == logsink.Chat {
		rec.RequestScanned = true
		rec.RequestTools, rec.RequestMultimodal = x.req.tools, logsink.MessagesMultimodal(x.req.messages)
	}

	x.dispatch(ctx)
	if !x.relayed {
		x.finish(ctx)
	}
}

// readBody sets x.body to the request's JSON within server.max_body_bytes
// (fasthttp holds the limit the server started with; a reload that lowered
// it is enforced here). A body the caller compressed (Content-Encoding
// gzip or deflate) is decoded, its decoded bytes within the same limit; one
// in another coding is refused with 415, as RFC 9110 §8.4 asks, rather
// than read as broken JSON.
func (x *exchange) readBody(ctx *fasthttp.RequestCtx) *apiError {
	body, max := ctx.PostBody(), x.st.cfg.Server.MaxBodyBytes
	if len(body) > max {
		return errTooLarge
	}
	ce := ctx.Request.Header.ContentEncoding()
	if !compressed(ce) {
		x.body = body
		return nil
	}
	r, err := decoder(ce, bytes.NewReader(body))
	if err == errBadEncoding {
		return errUnsupportedEncoding
	}
	if err == nil {
		x.inBody, err = appendLimited(x.inBody[:0], r, max)
	}
	switch {
	case err == errAnswerTooLarge:
		return errTooLarge
	case err != nil:
		return badRequest("Request body is not valid " + strings.ToLower(string(ce)) + " (Content-Encoding): " + err.Error() + ".")
	}
	x.body = x.inBody
	return nil
}

// finish ends an exchange whose answer is complete in ctx: it adds the
// bodies to the record and hands it to Server.finish.
func (x *exchange) finish(ctx *fasthttp.RequestCtx) {
	end := time.Now()
	rec := x.rec
	x.rec = nil
	body := x.upBody
	if len(body) == 0 {
		body = x.body
	}
	rec.RequestBody = x.appendLoggedBody(rec.RequestBody[:0], body)
	rec.ResponseBody = append(rec.ResponseBody[:0], ctx.Response.Body()...)
	if x.out.up != nil {
		x.scr = appendServerTiming(x.scr[:0], x.upWait, end.Sub(x.out.start))
		ctx.Response.Header.SetBytesV("Server-Timing", x.scr)
	}
	x.out.status = ctx.Response.StatusCode()
	x.s.finish(rec, &x.out, end, len(rec.ResponseBody), &x.attrs)
}

// appendLoggedBody appends what the record needs of a request body: the
// writer stores at most logsink.max_body_log_bytes of it, so a queued record
// holds no more than that (a few bytes over, so the writer still sees it
// was cut and cuts it at a rune boundary), and nothing when bodies are
// not stored. The proxy already told the record what the request offers.
func (x *exchange) appendLoggedBody(dst, body []byte) []byte {
	ls := &x.st.cfg.Logsink
	if !ls.StoreBodies {
		return dst
	}
	if limit := ls.MaxBodyLogBytes + utf8.UTFMax; len(body) > limit {
		body = body[:limit]
	}
	return append(dst, body...)
}

// appendClientIP appends the caller's address: the connection's, or from
// X-Forwarded-For when the connection comes from a trusted proxy (the
// rightmost address that is not itself a trusted proxy).
func (st *state) appendClientIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	remote, _ := netip.AddrFromSlice(ctx.RemoteIP())
	remote = remote.Unmap()
	nets := st.cfg.Server.TrustedNets
	if len(nets) == 0 || !inNets(nets, remote) {
		return remote.AppendTo(dst)
	}
	xff := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedFor)
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		part := bytes.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		a, err := netip.ParseAddr(string(part))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !inNets(nets, a) || i < 0 {
			return a.AppendTo(dst)
		}
	}
	return remote.AppendTo(dst)
}

func inNets(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
