package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/sse"
)

// streamBody is the body of a relayed stream. fasthttp drives it after the
// handler returned: WriteTo (the embedded Relay) on the server's goroutine,
// then CloseWithError, which completes the record and frees the upstream
// connection. It holds no RequestCtx.
type streamBody struct {
	sse.Relay
	s    *Server
	conn heldConn                // the upstream connection the stream is read from
	hdr  fasthttp.ResponseHeader // the upstream's response header
	body bodyReader              // the upstream's body as the relay reads it
	// rec and out are the exchange's record and how it went, taken
	// along; CloseWithError finishes them.
	rec      *logsink.Record
	out      outcome
	upStart  time.Time // when the upstream was sent the request
	firstEvt time.Time
	cutting  atomic.Bool
	attrs    []slog.Attr // access log scratch
}

var streamBodyPool = sync.Pool{New: func() any {
	sb := new(streamBody)
	sb.ErrorEvent = sb.errorEvent // bound once per pooled body
	return sb
}}

// putStreamBody returns an unused or finished body to the pool.
func putStreamBody(sb *streamBody) {
	sb.s, sb.rec = nil, nil
	sb.out.reset()
	sb.body = bodyReader{}
	sb.cutting.Store(false)
	streamBodyPool.Put(sb)
}

var (
	errCallerGone     = errors.New("the caller closed the connection")
	errCallerStalled  = errors.New("the caller took no bytes of its answer for server.send_timeout")
	errShutdown       = errors.New("gptapi is shutting down")
	errAnswerTooLarge = errors.New("proxy: answer larger than check_config.max_response_bytes")
)

// appendLimited appends what r gives, up to its end, to dst; more than max
// bytes is errAnswerTooLarge, with at most max+1 of them read.
func appendLimited(dst []byte, r io.Reader, max int) ([]byte, error) {
	if r == nil {
		return dst, nil
	}
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		room := min(cap(dst)-len(dst), max+1-(len(dst)-start))
		n, err := r.Read(dst[len(dst) : len(dst)+room])
		dst = dst[:len(dst)+n]
		if len(dst)-start > max {
			return dst[:start], errAnswerTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:start], err
		}
	}
}

// tryStream is one streaming attempt. It returns nil once the upstream's
// first event is in hand and the stream is handed to fasthttp, or when the
// upstream's own 4xx answer was relayed.
func (x *exchange) tryStream(ctx *fasthttp.RequestCtx, up *upstream, model []byte) *attemptError {
	x.prepare(up, model)
	sb := streamBodyPool.Get().(*streamBody)
	t0 := time.Now()
	head, body := x.upRequest()
	err := sb.conn.start(up.streamPool, head, body, &sb.hdr, time.Time{})
	x.upWait += time.Since(t0)
	if err != nil {
		putStreamBody(sb)
		return x.attemptFailure(up, err)
	}
	sb.body.reset(sb.conn.br, bodyLength(&sb.hdr))
	status := sb.hdr.StatusCode()
	if retryable(status) {
		sb.conn.finish(false)
		putStreamBody(sb)
		return &attemptError{msg: up.cfg.Name + ": upstream answered " + strconv.Itoa(status)}
	}
	if status != fasthttp.StatusOK || isJSON(sb.hdr.ContentType()) {
		err := x.relayWhole(ctx, up, sb, t0)
		putStreamBody(sb)
		return err
	}

	sb.Relay.Reset()
	restore := ""
	if up.cfg.Model != "" {
		restore = b2s(x.req.model) // Reset copies what it keeps
	}
	sb.Rewriter.Reset(up.cfg.SpecialPrefix, restore, x.req.hidesUsage(up.cfg))
	sb.CollectLimit = x.st.cfg.Logsink.MaxBodyLogBytes
	sb.Collect = x.rec.Chunks[:0]
	x.rec.Chunks = nil
	var src io.Reader = &sb.body
	if ce := sb.hdr.ContentEncoding(); compressed(ce) {
		src, err = decoder(ce, src)
	}
	if err == nil {
		// The wait for the first event is the watcher's to cut short.
		if err = x.hold(&sb.conn); err == nil {
			err = sb.Start(src)
			if why := x.unhold(); why != nil && err == nil {
				err = why
			}
		}
	}
	if err != nil {
		sb.conn.finish(false)
		x.rec.Chunks = sb.Collect[:0]
		sb.Collect = nil
		putStreamBody(sb)
		return x.attemptFailure(up, err)
	}
	if sb.conn.dc != nil {
		sb.conn.dc.answerStarted() // first_byte_timeout no longer applies
	}

	sb.s, sb.upStart, sb.firstEvt = x.s, t0, time.Now()
	x.out.up = up
	x.rec.RequestBody = x.appendLoggedBody(x.rec.RequestBody[:0], x.upBody)
	sb.rec, x.rec = x.rec, nil
	sb.out, x.out = x.out, sb.out
	x.relayed = true

	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("text/event-stream")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	ctx.Response.Header.Set("X-Gptapi-Upstream", up.cfg.Name)
	x.s.streams.add(sb)
	x.s.metrics.active.Add(1)
	ctx.SetBodyStream(sb, -1)
	return nil
}

// relayWhole relays an answer to a stream request that is not a stream:
// the upstream's own refusal (4xx), or one JSON answer from an upstream
// that does not stream this model or ignored "stream". Either is the
// upstream's answer (SPEC §4.1), relayed as a non-stream one is: read
// within max_response_bytes, decoded, the client's prefix and the
// caller's model name put into a JSON answer.
func (x *exchange) relayWhole(ctx *fasthttp.RequestCtx, up *upstream, sb *streamBody, t0 time.Time) *attemptError {
	var src io.Reader = &sb.body
	var err error
	if ce := sb.hdr.ContentEncoding(); compressed(ce) {
		src, err = decoder(ce, src)
	}
	if err == nil {
		x.scr, err = appendLimited(x.scr[:0], src, x.st.cfg.Check.MaxResponseBytes)
	}
	sb.conn.finish(err == nil && reusable(&sb.hdr, &sb.body))
	if err != nil {
		return upstreamFailure(up, err)
	}
	status := sb.hdr.StatusCode()
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(sb.hdr.ContentType())
	ctx.Response.Header.Set("X-Gptapi-Upstream", up.cfg.Name)
	switch out, ok := x.rewriteAnswer(answerDst(ctx, len(x.scr)), up, status, x.scr); {
	case ok:
		ctx.Response.SetBodyRaw(out)
	case len(x.scr) > maxKeptText:
		ctx.Response.SetBodyRaw(x.scr) // handed over (answerDst says why)
		x.scr = nil
	default:
		ctx.Response.SetBody(x.scr)
	}
	x.out.ttft = time.Since(x.out.start)
	x.out.up, x.out.upWait = up, time.Since(t0)
	return nil
}

// isJSON reports whether the media type of a Content-Type is JSON's.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte("application/json"))
}

// bodyLength is the body framing of a response header as bodyReader.reset
// takes it: answers to a POST without a body (1xx, 204, 304) are empty.
func bodyLength(hdr *fasthttp.ResponseHeader) int {
	if s := hdr.StatusCode(); s < 200 || s == fasthttp.StatusNoContent || s == fasthttp.StatusNotModified {
		return 0
	}
	return hdr.ContentLength()
}

// CloseWithError is called once by fasthttp when the body is done (err is
// the write error, if any). It frees the upstream and sends the record.
func (sb *streamBody) CloseWithError(err error) error {
	s, rec, o := sb.s, sb.rec, &sb.out
	s.streams.remove(sb)
	s.metrics.active.Add(-1)
	o.up.hists.load.End()
	if sb.End.IsZero() {
		sb.End = time.Now()
	}
	reuse := false
	switch {
	case sb.cutting.Load():
		o.status, o.err = fasthttp.StatusBadGateway, streamError(errShutdown).Message
	case sb.WriteErr != nil || (err != nil && sb.ReadErr == nil):
		gone := errCallerGone
		if isTimeout(sb.WriteErr) || isTimeout(err) {
			gone = errCallerStalled
		}
		o.status, o.err = 499, gone.Error()
	case sb.ReadErr != nil:
		e := streamError(sb.ReadErr)
		o.status, o.err = e.Status, e.Message
	default:
		o.status = fasthttp.StatusOK
		reuse = sb.DrainErr == nil && reusable(&sb.hdr, &sb.body)
	}
	// Pooled only when read to its end; else closed, not drained, so the
	// upstream stops generating at once.
	sb.conn.finish(reuse)
	first := sb.FirstContent
	if first.IsZero() {
		first = sb.firstEvt
	}
	o.ttft, o.upWait = first.Sub(o.start), sb.End.Sub(sb.upStart)
	rec.Chunks, sb.Collect = sb.Collect, nil
	rec.ChunksCut = sb.CollectCut
	s.finish(rec, o, sb.End, len(rec.Chunks), &sb.attrs)
	putStreamBody(sb)
	return nil
}

// cut ends the stream from another goroutine (shutdown): closing the
// upstream connection interrupts the relay's read, which then ends the
// stream with an error event. streamSet calls it under its lock, which
// CloseWithError takes before it lets the connection go.
func (sb *streamBody) cut() {
	sb.cutting.Store(true)
	sb.conn.interrupt()
}

// streamError is the error a stream ends with when its upstream fails after
// the first byte: the event text and the record's error are the same.
func streamError(err error) *apiError {
	if errors.Is(err, errShutdown) {
		return &apiError{Status: fasthttp.StatusBadGateway, Type: typeUpstream, Code: "stream_interrupted",
			Message: "The stream was cut: gptapi is shutting down."}
	}
	if isTimeout(err) {
		return &apiError{Status: fasthttp.StatusGatewayTimeout, Type: typeUpstream, Code: "stream_idle_timeout",
			Message: "The upstream went silent mid-stream for longer than check_config.stream_idle_timeout."}
	}
	if errors.Is(err, sse.ErrUpstreamError) {
		return &apiError{Status: fasthttp.StatusBadGateway, Type: typeUpstream, Code: "upstream_stream_error",
			Message: "The upstream ended the stream with its own error event."}
	}
	msg := "The upstream stream broke before it finished"
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		// In words, never the transport error itself: it names addresses.
		msg += ": " + failureKind(err)
	}
	return &apiError{Status: fasthttp.StatusBadGateway, Type: typeUpstream, Code: "stream_broken", Message: msg + "."}
}

// errorEvent is the relay's last event when the upstream read fails; a read
// failing because shutdown cut the stream says so.
func (sb *streamBody) errorEvent(dst []byte, err error) []byte {
	if sb.cutting.Load() {
		err = errShutdown
	}
	return appendSSEError(dst, streamError(err))
}

// fasthttp finds WriteTo through BodyWriterTo at run time; without it,
// it would copy the stream through Read instead of letting the relay write
// whole events.
var _ fasthttp.BodyWriterTo = (*streamBody)(nil)
