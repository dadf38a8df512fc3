package sse

import (
	"bytes"
	"errors"
	"io"
	"time"
)

// ErrUpstreamError is ReadErr when the upstream ended its stream with its
// own error event (relayed to the caller as it came) and no [DONE].
var ErrUpstreamError = errors.New("sse: the upstream ended the stream with an error event")

// errNotStarted is returned by WriteTo and Read when Start was not called.
var errNotStarted = errors.New("sse: relay used before Start")

// MaxPreambleBytes bounds what an upstream may send before its first data
// event (comments, keep-alives, unknown fields). A server sends a few
// keep-alive comments while it prefills; more than this is a broken or
// hostile one, and the bytes would otherwise pile up in memory waiting for
// the first event.
const MaxPreambleBytes = 64 << 10

// ErrPreambleTooLarge is Start's error when more than MaxPreambleBytes
// arrived before the first data event.
var ErrPreambleTooLarge = errors.New("sse: more than 64 KiB before the first data event")

// maxUsageSlack is how far past CollectLimit usage-carrying chunks may
// still grow Collect, so the record keeps its token counts without an
// upstream being able to grow it without bound with usage chunks.
const maxUsageSlack = 64 << 10

// Relay copies one upstream SSE body to the caller event by event, through
// the Rewriter, and keeps what the caller got for the request record.
//
// fasthttp's server drives it from its own goroutine after the handler has
// returned (ctx.SetBodyStream(relay, -1)), and with chunked framing flushes
// each Write as one HTTP chunk. So each Write holds one or more complete
// events; events that arrived together are coalesced into one Write, but the
// relay never waits for more data before writing what it has. A source that
// can tell that its next Read will not wait (a Buffered() int method, see
// BufferedReader) lets the relay coalesce across its reads too.
//
// The record gets its chunks through Collect, which the relay fills without
// ever waiting on the logger: the record pipeline takes the buffer once the
// stream is over.
//
// A Relay is meant to be pooled: Reset keeps every buffer's capacity, and in
// steady state relaying an event does not allocate.
type Relay struct {
	// Rewriter changes the chunks; set it with Rewriter.Reset after
	// Relay.Reset and before Start.
	Rewriter Rewriter

	// ErrorEvent appends the SSE event ("data: {...}\n\n") sent when the
	// upstream fails mid-stream. The proxy sets it, so that one place builds
	// error bodies; by default (nil) the stream ends without one. Reset
	// keeps it.
	ErrorEvent func(dst []byte, err error) []byte

	// CollectLimit caps Collect in bytes (0 = no limit). Past it only chunks
	// that carry usage are still kept, so the record keeps its token counts,
	// and CollectCut is set. Reset keeps it.
	CollectLimit int

	// Collect holds each data payload as the caller got it (rewritten), one
	// per line, without [DONE]. Hidden usage chunks are included: the
	// record needs them. Reset and Start reuse its capacity, so to take the
	// buffer for the record, set Collect to nil afterwards.
	Collect    []byte
	CollectCut bool

	// FirstContent is when the first content-carrying chunk was written to
	// the caller; zero if none was.
	FirstContent time.Time
	// End is when the stream ended, whichever way.
	End time.Time

	// ReadErr is the upstream's error after Start (a break, or silence as a
	// net timeout error, kept as is so its Timeout() still tells 504 from
	// 502; or ErrEventTooLarge). nil when the stream ended cleanly.
	ReadErr error
	// WriteErr is the error writing to the caller: the caller went away.
	WriteErr error
	// Done reports that data: [DONE] was relayed. Nothing after it is
	// relayed, but the body is read to its end, so the upstream connection
	// can go back to its pool.
	Done bool
	// DrainErr is a read error after [DONE]: the caller got the whole
	// stream, but the upstream connection must not be reused.
	DrainErr error
	// Events counts the events written to the caller (hidden ones excluded).
	Events int

	sc          Scanner
	src         BufferedReader // the source, if it can tell; else nil
	started     bool
	upstreamErr bool // the last data event was the upstream's own error
	ended       bool
	out         []byte // rendered events not yet handed to the caller
	off         int    // bytes of out already handed over by Read
	content     bool   // out holds a content-carrying chunk
}

// BufferedReader is a source that knows when its next Read returns at once:
// Buffered reports a positive count only then. An HTTP client's body reader
// that holds the next chunks in memory is one.
type BufferedReader interface {
	io.Reader
	Buffered() int
}

// maxKeptBuf is the largest buffer Reset keeps: a pooled relay that once
// carried a huge event should not hold its memory for good.
const maxKeptBuf = 1 << 20

// Reset clears the relay for another stream. It keeps the buffers'
// capacity (up to 1 MiB each), ErrorEvent and CollectLimit, and sets the
// Rewriter to change nothing.
func (r *Relay) Reset() {
	r.Rewriter.Reset("", "", false)
	r.resetStream()
	r.sc.Reset(nil)
	r.src = nil
	r.started = false
	if cap(r.out) > maxKeptBuf {
		r.out = nil
	}
	if cap(r.Collect) > maxKeptBuf {
		r.Collect = nil
	}
	if cap(r.Rewriter.tmp) > maxKeptBuf {
		r.Rewriter.tmp = nil
	}
	if cap(r.sc.buf) > maxKeptBuf {
		r.sc.buf = nil
	}
	if cap(r.sc.data) > maxKeptBuf {
		r.sc.data = nil
	}
}

func (r *Relay) resetStream() {
	r.Rewriter.resetStream()
	r.Collect = r.Collect[:0]
	r.CollectCut = false
	r.FirstContent, r.End = time.Time{}, time.Time{}
	r.ReadErr, r.WriteErr = nil, nil
	r.Done = false
	r.DrainErr = nil
	r.upstreamErr = false
	r.Events = 0
	r.ended = false
	r.out = r.out[:0]
	r.off = 0
	r.content = false
}

// Start begins relaying src. It reads until the first event that carries
// data has arrived; comment-only events before it are kept and relayed
// later. It returns the read error, io.ErrUnexpectedEOF if src ends first,
// or ErrPreambleTooLarge, so the proxy can still fail over: nothing has
// reached the caller.
// Calling Start again (for the next upstream) starts over, keeping the
// Rewriter's settings.
func (r *Relay) Start(src io.Reader) error {
	r.resetStream()
	r.sc.Reset(src)
	r.src, _ = src.(BufferedReader)
	r.started = true
	preamble := 0
	for {
		ev, err := r.sc.Next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if ev.Cut && !bytes.Equal(ev.Data, doneData) {
			return io.ErrUnexpectedEOF // inside the first event: nothing relayed yet
		}
		if ev.Data == nil {
			if preamble += len(ev.Raw); preamble > MaxPreambleBytes {
				return ErrPreambleTooLarge
			}
		}
		r.relay(ev)
		if ev.Data != nil {
			return nil
		}
	}
}

// WriteTo relays the rest of the stream to w. When the upstream fails it
// writes ErrorEvent(err) as the last event (no [DONE] after it), sets
// ReadErr and returns nil: the caller's response itself ended properly.
// When w fails it sets WriteErr and returns that error at once, without
// reading from the upstream again.
func (r *Relay) WriteTo(w io.Writer) (int64, error) {
	if !r.started {
		return 0, errNotStarted
	}
	var n int64
	for {
		r.fill()
		if r.off < len(r.out) {
			m, err := w.Write(r.out[r.off:])
			n += int64(m)
			if err == nil && m < len(r.out)-r.off {
				err = io.ErrShortWrite
			}
			if err != nil {
				r.WriteErr = err
				r.End = time.Now()
				return n, err
			}
			r.delivered()
		}
		if r.ended {
			r.End = time.Now()
			return n, nil
		}
	}
}

// SupportsBodyWriteTo lets fasthttp call WriteTo instead of Read (its
// BodyWriterTo opt-in): WriteTo writes whole events and Read gives the same
// bytes.
func (r *Relay) SupportsBodyWriteTo() bool { return true }

// Read gives the same bytes as WriteTo, for readers that do not use it.
// It returns io.EOF at the end.
func (r *Relay) Read(p []byte) (int, error) {
	if !r.started {
		return 0, errNotStarted
	}
	for r.off >= len(r.out) {
		if r.ended {
			if r.End.IsZero() {
				r.End = time.Now()
			}
			return 0, io.EOF
		}
		r.fill()
	}
	n := copy(p, r.out[r.off:])
	r.off += n
	if r.off == len(r.out) {
		r.delivered()
	}
	return n, nil
}

// delivered marks r.out as handed to the caller.
func (r *Relay) delivered() {
	if r.content && r.FirstContent.IsZero() {
		r.FirstContent = time.Now()
	}
	r.content = false
	r.out = r.out[:0]
	r.off = 0
}

// fill renders into r.out at least one event, unless the stream has ended,
// and then every event already buffered, here or in the source, without
// waiting for more.
func (r *Relay) fill() {
	for !r.ended {
		if r.off < len(r.out) && !r.sc.Buffered() {
			if r.src == nil || r.src.Buffered() == 0 {
				return
			}
			r.sc.fill() // one Read, which the source says will not wait
			continue
		}
		ev, err := r.sc.Next()
		if err != nil {
			r.ended = true
			switch {
			case r.Done:
				// After [DONE] the caller has everything; a failed read
				// only means the upstream connection is not reusable.
				if err != io.EOF {
					r.DrainErr = err
				}
			case err == io.EOF && r.upstreamErr:
				// The upstream ended with its own error event, which the
				// caller already has: no second one.
				r.ReadErr = ErrUpstreamError
			case err == io.EOF:
				// fasthttp reports a connection dropped inside a chunked
				// body as a plain EOF: a stream that ends without [DONE]
				// is a break.
				r.ReadErr = io.ErrUnexpectedEOF
				r.out = r.appendError(r.out, r.ReadErr)
			default:
				r.ReadErr = err
				r.out = r.appendError(r.out, err)
			}
			return
		}
		r.relay(ev)
	}
}

// relay renders one event into r.out and records it.
func (r *Relay) relay(ev Event) {
	if r.Done {
		return // read only to reach the end of the upstream body
	}
	if ev.Cut {
		// The stream ended inside this event. Relayed, its bytes would
		// run into the error event that follows, and the caller would
		// get half a JSON object; SSE drops it, and so does the relay.
		// Only a [DONE] that lacks its blank line is taken, made whole.
		if !bytes.Equal(ev.Data, doneData) {
			return
		}
		ev.Raw = doneEvent
	}
	var kept bool
	r.out, kept = r.Rewriter.Append(r.out, ev)
	if ev.Data != nil {
		r.upstreamErr = r.Rewriter.IsError()
	}
	if kept {
		r.Events++
		if r.Rewriter.HasContent() {
			r.content = true
		}
	}
	if ev.Data == nil {
		return
	}
	if string(ev.Data) == "[DONE]" {
		// Keep reading to the end of the body (normally the chunked
		// terminator right behind it) so the upstream connection goes
		// back to its pool instead of being closed.
		r.Done = true
		return
	}
	r.collect()
}

// collect appends the last event's payload to Collect, within CollectLimit;
// usage-carrying chunks may go maxUsageSlack past it.
func (r *Relay) collect() {
	usage := r.Rewriter.usage
	if r.CollectCut && !usage {
		return
	}
	limit := r.CollectLimit
	if usage {
		limit += maxUsageSlack
	}
	n := len(r.Collect)
	r.Collect = r.Rewriter.AppendData(r.Collect)
	r.Collect = append(r.Collect, '\n')
	if r.CollectLimit > 0 && len(r.Collect) > limit {
		r.Collect = r.Collect[:n]
		r.CollectCut = true
	}
}

func (r *Relay) appendError(dst []byte, err error) []byte {
	if r.ErrorEvent == nil {
		return dst
	}
	return r.ErrorEvent(dst, err)
}
