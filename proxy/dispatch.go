package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/sse"
)

// attemptError is one failed try of one upstream: the dispatch loop moves
// on to the next candidate.
type attemptError struct {
	msg     string // for the caller: names the client, never its address
	timeout bool
	// local: the failure was gptapi's, not the upstream's: no pooled
	// connection was free within max_conn_wait, or the process or machine
	// was out of file descriptors, ports or socket memory to connect. The
	// next candidate is tried, but it says nothing of the upstream's
	// health: no cooldown.
	local bool
	cause error // the transport error, for the log only; may be nil
	// cancelled: the watcher cancelled the request (the caller left, or
	// shutdown cut it). No failover, and nothing said of the upstream.
	cancelled error
}

func (e *attemptError) Error() string { return e.msg }

// failureLogEvery is how often one upstream's failures are logged.
const failureLogEvery = 10 * time.Second

// dispatch tries the candidates for the model in order, then the fallback
// chain (SPEC §4.1), and writes the answer or the all-failed error to ctx.
func (x *exchange) dispatch(ctx *fasthttp.RequestCtx) {
	st := x.st
	chk := &st.cfg.Check
	model := x.req.model
	// Until an answer starts, the watcher looks after the caller: a plain
	// request waits for its whole answer, a stream for its first event,
	// which a loaded server may take seconds of prefill to send.
	x.beginWait(ctx)
	defer x.endWait()
	var last *attemptError
	for hop := 0; ; hop++ {
		x.cands = st.table.Match(x.cands[:0], b2s(model))
		if len(x.cands) == 0 {
			if hop == 0 {
				x.fail(ctx, modelNotFound(model))
				return
			}
			break
		}
		// The fallback is named by the first candidate in config order.
		fallback := ""
		for _, i := range x.cands {
			if fb := st.upstreams[i].cfg.Fallback; fb != "" {
				fallback = fb
				break
			}
		}
		x.seen = append(x.seen, b2s(model))
		x.order(hop)
		for _, i := range x.cands {
			up := st.upstreams[i]
			x.out.tried.add(up.cfg.Name, model)
			var err *attemptError
			up.hists.load.Begin()
			if x.req.stream {
				err = x.tryStream(ctx, up, model)
			} else {
				err = x.tryPlain(ctx, up, model)
			}
			if err != nil || !x.relayed {
				up.hists.load.End() // else the stream ends it
			}
			if err != nil && err.cancelled != nil {
				x.abandon(ctx, err.cancelled)
				return
			}
			h := st.table.Health(i)
			if err == nil {
				h.Succeed()
				x.learn(ctx, i)
				return
			}
			now := time.Now()
			cooling := false
			if !err.local {
				cooling = h.Fail(now, chk.FailureThreshold, chk.Cooldown)
			}
			if ok, held := up.hists.failures.Allow(now, failureLogEvery); ok {
				x.s.log.Warn("upstream failing", "upstream", up.cfg.Name, "err", err.msg, "cause", err.cause,
					"cooldown", cooling, "more_since_last_line", held)
			}
			last = err
		}
		if fallback == "" || hop >= chk.MaxFallbackDepth || x.seenModel(fallback) {
			break
		}
		model = s2b(fallback)
	}
	x.fail(ctx, allFailed(x.req.model, last, last != nil && last.timeout, &x.out.tried))
}

func (x *exchange) seenModel(m string) bool {
	for _, s := range x.seen {
		if s == m {
			return true
		}
	}
	return false
}

// fail answers with e; its text is the record's error.
func (x *exchange) fail(ctx *fasthttp.RequestCtx, e *apiError) {
	writeError(ctx, e)
	x.out.err = e.Message
}

var (
	errCutAtShutdown = &apiError{Status: fasthttp.StatusBadGateway, Type: typeUpstream, Code: "shutting_down",
		Message: "The request was cut: gptapi is shutting down."}
	errLeft = &apiError{Status: 499, Type: "invalid_request_error", Code: "client_closed_request",
		Message: "The caller closed the connection before its answer was complete."}
)

// abandon ends a request the watcher cancelled for why: 502 when
// shutdown cut it, 499 when its caller left (SPEC §1, §4.4). The caller's
// connection is closed after the answer.
func (x *exchange) abandon(ctx *fasthttp.RequestCtx, why error) {
	ctx.SetConnectionClose()
	if errors.Is(why, errShutdown) {
		x.fail(ctx, errCutAtShutdown)
		return
	}
	x.fail(ctx, errLeft)
}

// prepare writes the request for up into x.upReq: up's head for the
// endpoint, the caller's key where up sends no key of its own (SPEC §3:
// with auth.keys set the caller's key is gptapi's own and never sent),
// Content-Length and the body as rewritten for up, which x.upBody keeps
// for the record. A body past oneWrite stays in x.upBody alone and goes in
// a write of its own.
func (x *exchange) prepare(up *upstream, model []byte) {
	x.upBody = x.req.appendUpstreamBody(x.upBody[:0], up.cfg, model)
	r := append(x.upReq[:0], up.heads[x.req.endpoint]...)
	if !up.ownAuth && len(x.key) > 0 && len(x.st.authKeys) == 0 {
		r = append(append(append(r, "Authorization: "...), bearerPrefix...), x.key...)
		r = append(r, "\r\n"...)
	}
	r = append(fasthttp.AppendUint(append(r, "Content-Length: "...), len(x.upBody)), "\r\n\r\n"...)
	if len(x.upBody) <= oneWrite {
		r = append(r, x.upBody...)
	}
	x.upReq = r
}

// oneWrite is the largest body copied behind its head so that a request
// leaves in one write: an upstream woken by the head alone would wake again
// for the body.
const oneWrite = 64 << 10

// upRequest is the request prepare wrote: the head (with the body when it
// fits) and the body when it goes on its own.
func (x *exchange) upRequest() (head, body []byte) {
	if len(x.upBody) <= oneWrite {
		return x.upReq, nil
	}
	return x.upReq, x.upBody
}

// tryPlain is one non-streaming attempt. On success the answer is in ctx.
func (x *exchange) tryPlain(ctx *fasthttp.RequestCtx, up *upstream, model []byte) *attemptError {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	x.prepare(up, model)

	t0 := time.Now()
	err := x.roundTrip(up, resp, t0.Add(x.st.cfg.Check.RequestTimeout))
	wait := time.Since(t0)
	x.upWait += wait
	if err != nil || x.cancelledWith() != nil {
		return x.attemptFailure(up, err)
	}
	status := resp.StatusCode()
	if retryable(status) {
		return &attemptError{msg: up.cfg.Name + ": upstream answered " + strconv.Itoa(status)}
	}
	if err := decodeAnswer(resp, x.st.cfg.Check.MaxResponseBytes); err != nil {
		return upstreamFailure(up, err)
	}
	x.out.ttft = time.Since(x.out.start)
	x.out.up, x.out.upWait = up, wait
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
	ctx.Response.Header.Set("X-Gptapi-Upstream", up.cfg.Name)
	if out, ok := x.rewriteAnswer(answerDst(ctx, len(resp.Body())), up, status, resp.Body()); ok {
		ctx.Response.SetBodyRaw(out)
		return nil
	}
	body := resp.SwapBody(nil)
	if cap(body) > maxKeptText {
		ctx.Response.SetBodyRaw(body) // see answerDst
		return nil
	}
	// Hand the upstream's body buffer to the caller's response, no copy;
	// the caller's (pooled) buffer goes to resp so the next upstream read
	// has capacity: the buffers circulate through fasthttp's pool.
	resp.SwapBody(ctx.Response.SwapBody(body)[:0])
	return nil
}

// answerDst is where an answer of n bytes is written for the caller. A
// small one goes into the response's body buffer; a large one into a
// buffer of its own, set as the raw body, which the connection drops once
// it is written: fasthttp keeps a response's body buffer with its
// connection, for as long as it stays open, whatever it grew to.
func answerDst(ctx *fasthttp.RequestCtx, n int) []byte {
	if n > maxKeptText {
		return nil
	}
	return ctx.Response.Body()[:0]
}

// rewriteAnswer writes to dst a successful JSON answer of up with the
// client's special_prefix and, where the client renames the model, the
// caller's model name put in (SPEC §4.4). ok is false when there is
// nothing to rewrite or body is not such an answer: it is relayed as is.
func (x *exchange) rewriteAnswer(dst []byte, up *upstream, status int, body []byte) (out []byte, ok bool) {
	if status/100 != 2 || (up.cfg.SpecialPrefix == "" && up.cfg.Model == "") || !apis[x.req.endpoint].generates {
		return dst, false
	}
	restore := x.req.model
	if up.cfg.Model == "" {
		restore = nil
	}
	out, ok = rewriteAnswer(dst, &x.parser, &x.arena, &x.req.strs, body, up.cfg.SpecialPrefix, restore)
	if len(body) > maxKeptAnswer {
		x.parser = fastjson.Parser{} // a pooled parser would keep the values of a huge answer
	}
	return out, ok
}

// roundTrip sends the prepared request on a connection of up's pool it
// holds, where the watcher can close it, and reads the whole answer into
// resp, within max_response_bytes (readAnswer). A pooled connection the
// upstream closed while idle fails before any byte of an answer: that
// request never ran, so it is sent once more on a fresh connection
// (neverRan).
func (x *exchange) roundTrip(up *upstream, resp *fasthttp.Response, deadline time.Time) error {
	c := &x.conn
	head, body := x.upRequest()
	for attempt := 0; ; attempt++ {
		err := c.send(up.plainPool, head, body, deadline)
		writing := err != nil
		if err == nil {
			if err = x.hold(c); err == nil {
				err = readAnswer(resp, c, x.st.cfg.Check.MaxResponseBytes)
				if why := x.unhold(); why != nil {
					err = why
				}
			}
		}
		if err == nil {
			c.finish(!resp.ConnectionClose() && resp.Header.ContentLength() != -2)
			return nil
		}
		retry := attempt == 0 && c.pc.reused && neverRan(err, writing)
		c.finish(false)
		if !retry {
			return err
		}
	}
}

// readAnswer reads a plain answer into resp: its headers (interim ones
// skipped) within first_byte_timeout, then its body under the request's
// deadline alone, within max bytes (fasthttp refuses a body over it
// before reading it, whether its Content-Length says so or its chunks add
// up to it).
func readAnswer(resp *fasthttp.Response, c *heldConn, max int) error {
	resp.ResetBody()
	if err := readHeader(&resp.Header, c.br); err != nil {
		return err
	}
	if c.dc != nil {
		c.dc.answerStarted()
	}
	if bodyLength(&resp.Header) == 0 {
		return nil
	}
	if err := resp.ReadBody(c.br, max); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the headers came: never a stale connection's
		}
		return err
	}
	if resp.Header.ContentLength() == -1 { // chunked: a trailer ends it
		if err := resp.Header.ReadTrailer(c.br); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// maxKeptAnswer is the largest answer whose parsed values a pooled
// exchange keeps for the next one.
const maxKeptAnswer = 1 << 20

// retryable reports whether an upstream answer is a failure to fail over
// from (SPEC §4.1).
func retryable(status int) bool {
	return status >= 500 || status == fasthttp.StatusRequestTimeout || status == fasthttp.StatusTooManyRequests
}

// attemptFailure is a failed attempt's error: cancelled when the watcher
// cut the wait (the caller left, or shutdown), else up's failure.
func (x *exchange) attemptFailure(up *upstream, err error) *attemptError {
	if why := x.cancelledWith(); why != nil {
		return &attemptError{msg: up.cfg.Name + ": cancelled", cancelled: why, cause: err}
	}
	return upstreamFailure(up, err)
}

// upstreamFailure names a transport error of up. The caller's text says
// what happened in words of the client's name; the error itself, which
// carries addresses, goes only to the log.
func upstreamFailure(up *upstream, err error) *attemptError {
	return &attemptError{msg: up.cfg.Name + ": " + failureKind(err), timeout: isTimeout(err), cause: err,
		local: errors.Is(err, fasthttp.ErrNoFreeConns) || outOfResources(err)}
}

// outOfResources reports whether err says the process or the machine ran
// out of what a connection needs (a flood of callers past the file
// descriptor limit, every ephemeral port in use), which no upstream can
// be blamed for.
func outOfResources(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

// failureKind is the caller-facing words for a transport error.
func failureKind(err error) string {
	var op *net.OpError
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, fasthttp.ErrBodyTooLarge), errors.Is(err, errAnswerTooLarge):
		return "answer too large (over check_config.max_response_bytes)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no free connection (max_conns reached)"
	case outOfResources(err):
		return "cannot connect (gptapi is out of file descriptors, ports or socket memory)"
	case errors.As(err, &op) && op.Op == "dial":
		return "cannot connect"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection closed before the answer was complete"
	case errors.Is(err, errBadEncoding):
		return "answer in an unsupported Content-Encoding"
	case errors.Is(err, sse.ErrEventTooLarge), errors.Is(err, sse.ErrPreambleTooLarge):
		return "malformed stream (" + err.Error() + ")"
	}
	return "invalid answer"
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// b2s views b as a string without copying; b must not change while the
// string is in use.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// s2b views s as bytes; the bytes must not be written.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
