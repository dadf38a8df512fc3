package proxy

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"
)

// bodyStream is an upstream's streamed response body that can also tell
// the relay whether its next Read returns at once (sse's Buffered).
//
// An upstream that sends several events back to back (a fast model, or a
// relay that fell behind) lands them in one socket read, in fasthttp's
// bufio.Reader; fasthttp's chunked body reader then hands them out one HTTP
// chunk per Read. Knowing that the next chunk is already in memory lets the
// relay write all of them to the caller in one flushed write instead of one
// write per event: on loopback a write costs 3-6 us, most of a relayed event.
//
// fasthttp does not expose its reader, so Buffered looks at the fields of
// its body stream through offsets found by reflection once, for the pinned
// fasthttp version (TestBodyStreamBuffered fails if they change). When they
// cannot be found, Buffered reports 0 and the relay writes event by event.
type bodyStream struct {
	r     io.Reader      // fasthttp's body stream
	outer unsafe.Pointer // r as a *clientStreamBody, nil when unknown
	rs    unsafe.Pointer // its *requestStream
}

// streamLayout is where fasthttp keeps the state Buffered needs: in
// clientStreamBody the reader (an io.Reader holding a *requestStream) and
// the lock and flag its Read and CloseWithError share; in requestStream the
// bufio.Reader, the bytes left in the current HTTP chunk, the Content-Length
// (-1: chunked) and the end flag.
var streamLayout struct {
	once      sync.Once
	ok        bool
	outer     reflect.Type // *fasthttp.clientStreamBody
	inner     reflect.Type // *fasthttp.requestStream
	readerOff uintptr
	lockOff   uintptr
	closedOff uintptr
	bufOff    uintptr
	chunkOff  uintptr
	lengthOff uintptr
	eofOff    uintptr
}

// learnStreamLayout finds the offsets from a live body stream.
func learnStreamLayout(body io.Reader) {
	l := &streamLayout
	outer := reflect.TypeOf(body)
	if outer == nil || outer.Kind() != reflect.Pointer || outer.Elem().Name() != "clientStreamBody" {
		return
	}
	f, ok := outer.Elem().FieldByName("reader")
	if !ok || f.Type != reflect.TypeFor[io.Reader]() {
		return
	}
	lock, ok1 := outer.Elem().FieldByName("readLock")
	closed, ok2 := outer.Elem().FieldByName("closed")
	if !ok1 || lock.Type != reflect.TypeFor[sync.Mutex]() || !ok2 || closed.Type != reflect.TypeFor[atomic.Bool]() {
		return
	}
	innerVal := *(*io.Reader)(unsafe.Add(reflect.ValueOf(body).UnsafePointer(), f.Offset))
	inner := reflect.TypeOf(innerVal)
	if inner == nil || inner.Kind() != reflect.Pointer || inner.Elem().Name() != "requestStream" {
		return
	}
	field := func(name string, t reflect.Type) (uintptr, bool) {
		g, ok := inner.Elem().FieldByName(name)
		return g.Offset, ok && g.Type == t
	}
	bufOff, ok1 := field("reader", reflect.TypeFor[*bufio.Reader]())
	chunkOff, ok2 := field("chunkLeft", reflect.TypeFor[int]())
	lengthOff, ok3 := field("contentLength", reflect.TypeFor[int]())
	eofOff, ok4 := field("eof", reflect.TypeFor[bool]())
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return
	}
	l.outer, l.inner = outer, inner
	l.lockOff, l.closedOff = lock.Offset, closed.Offset
	l.readerOff, l.bufOff, l.chunkOff, l.lengthOff, l.eofOff = f.Offset, bufOff, chunkOff, lengthOff, eofOff
	l.ok = true
}

// reset points b at body, a fasthttp Response.BodyStream().
func (b *bodyStream) reset(body io.Reader) {
	b.r, b.outer, b.rs = body, nil, nil
	t := reflect.TypeOf(body)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Name() != "clientStreamBody" {
		return // not a network stream (or not fasthttp's): nothing to look at
	}
	l := &streamLayout
	l.once.Do(func() { learnStreamLayout(body) })
	if !l.ok || t != l.outer {
		return
	}
	outer := reflect.ValueOf(body).UnsafePointer()
	inner := *(*io.Reader)(unsafe.Add(outer, l.readerOff))
	if reflect.TypeOf(inner) != l.inner {
		return
	}
	b.outer, b.rs = outer, reflect.ValueOf(inner).UnsafePointer()
}

func (b *bodyStream) Read(p []byte) (int, error) { return b.r.Read(p) }

// Buffered returns how many body bytes are already in memory when the next
// Read is sure to return some of them without waiting for the network, and
// 0 otherwise. A chunk whose header or closing CRLF is still in flight
// counts as not there: fasthttp would wait for those bytes.
//
// It holds the body's read lock as fasthttp's Read does, so a close from
// another goroutine (shutdown) waits instead of freeing what it looks at.
func (b *bodyStream) Buffered() int {
	if b.outer == nil {
		return 0
	}
	l := &streamLayout
	mu := (*sync.Mutex)(unsafe.Add(b.outer, l.lockOff))
	mu.Lock()
	defer mu.Unlock()
	if (*atomic.Bool)(unsafe.Add(b.outer, l.closedOff)).Load() {
		return 0
	}
	br := *(**bufio.Reader)(unsafe.Add(b.rs, l.bufOff))
	if br == nil || *(*bool)(unsafe.Add(b.rs, l.eofOff)) {
		return 0
	}
	n := br.Buffered()
	if n == 0 {
		return 0
	}
	if *(*int)(unsafe.Add(b.rs, l.lengthOff)) != -1 {
		return n // a sized body is read straight from the buffer
	}
	buf, _ := br.Peek(n) // n bytes are buffered: Peek does not read
	if left := *(*int)(unsafe.Add(b.rs, l.chunkOff)); left > 0 {
		return chunkReady(buf, left)
	}
	return nextChunkReady(buf)
}

// chunkReady: left bytes of the current chunk remain. A Read returns the
// buffered ones; if they finish the chunk, fasthttp also reads its CRLF.
func chunkReady(buf []byte, left int) int {
	if len(buf) < left || len(buf) >= left+2 {
		return len(buf)
	}
	return 0
}

// nextChunkReady: buf starts with a chunk header. A Read parses it, then
// returns data; the last chunk (size 0) needs its empty trailer too.
func nextChunkReady(buf []byte) int {
	nl := bytes.IndexByte(buf, '\n')
	if nl < 1 || buf[nl-1] != '\r' {
		return 0
	}
	line := buf[:nl-1]
	if i := bytes.IndexAny(line, " \t;"); i >= 0 {
		line = line[:i] // whitespace or an extension follows the size
	}
	size, err := strconv.ParseUint(b2s(line), 16, 32)
	if err != nil {
		return 0 // malformed, or beyond fasthttp's limits: its business, not coalesced
	}
	rest := buf[nl+1:]
	if size == 0 {
		if bytes.HasPrefix(rest, []byte("\r\n")) {
			return len(buf)
		}
		return 0
	}
	if len(rest) == 0 {
		return 0
	}
	return chunkReady(rest, int(size))
}
