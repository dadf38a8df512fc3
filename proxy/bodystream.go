package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// bodyReader reads an upstream response body from the bufio.Reader gptapi
// owns for the connection (upconn.go), and tells the relay whether its next
// Read returns at once (sse.BufferedReader).
//
// An upstream that sends several events back to back (a fast model, or a
// relay that fell behind) lands them in one socket read, in the bufio.Reader.
// Knowing that the next bytes are already in memory lets the relay write all
// of them to the caller in one flushed write instead of one write per event:
// on loopback a write costs 3-6 us, most of a relayed event. Because the
// reader and the chunk decoding are gptapi's own, Buffered is exact and
// needs nothing of fasthttp but its public header parser.
//
// A chunked body is decoded here (RFC 9112 §7.1). net/http/httputil's
// chunked reader does not fit: whether its next Read waits depends on its
// private state (bytes left in the chunk, a pending CRLF), which Buffered
// must know. Read never waits once it has bytes for the caller: it stops
// before a chunk header or a CRLF that is not wholly buffered.
type bodyReader struct {
	br    *bufio.Reader
	left  int64 // sized: bytes left; chunked: bytes left in the current chunk
	mode  uint8
	state uint8 // chunked: chunkHead, chunkData or chunkCRLF
	done  bool  // the body ended cleanly: the connection may be reused
	err   error // sticky
}

const (
	bodySized      = iota // Content-Length
	bodyChunked           // Transfer-Encoding: chunked
	bodyUntilClose        // neither: the body ends when the connection does
)

const (
	chunkHead = iota // a chunk header is next
	chunkData        // left bytes of chunk data are next
	chunkCRLF        // the CRLF that closes a chunk's data is next
)

var errBadChunk = errors.New("proxy: malformed chunked body")

// maxChunkLine bounds a chunk header line (size and extensions).
const maxChunkLine = 4096

// reset points b at the body behind a response header just read from br:
// contentLength as fasthttp's ResponseHeader.ContentLength gives it (-1
// chunked, -2 until close).
func (b *bodyReader) reset(br *bufio.Reader, contentLength int) {
	*b = bodyReader{br: br}
	switch {
	case contentLength == -1:
		b.mode = bodyChunked
	case contentLength < 0:
		b.mode = bodyUntilClose
	default:
		b.mode, b.left = bodySized, int64(contentLength)
		b.done = b.left == 0
	}
}

// Done reports whether the body was read to its clean end.
func (b *bodyReader) Done() bool { return b.done }

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.mode {
	case bodySized:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.done = true
			return n, nil
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return n, err
	case bodyUntilClose:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true // a clean end, but the connection is spent
			return n, err
		}
		b.err = err
		return n, err
	}
	return b.readChunked(p)
}

// readChunked fills p from as many chunks as are there, waiting on the
// network only while it has nothing to return.
func (b *bodyReader) readChunked(p []byte) (n int, err error) {
	for n < len(p) {
		switch b.state {
		case chunkCRLF:
			if n > 0 && b.br.Buffered() < 2 {
				return n, nil
			}
			crlf, err := b.br.Peek(2)
			if err != nil {
				return n, b.fail(err)
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return n, b.fail(errBadChunk)
			}
			_, _ = b.br.Discard(2)
			b.state = chunkHead
		case chunkHead:
			if n > 0 && !lineBuffered(b.br) {
				return n, nil
			}
			size, err := readChunkSize(b.br)
			if err != nil {
				return n, b.fail(err)
			}
			if size == 0 {
				if err := skipTrailers(b.br); err != nil {
					return n, b.fail(err)
				}
				b.done = true
				if n > 0 {
					return n, nil
				}
				return 0, io.EOF
			}
			b.left, b.state = size, chunkData
		case chunkData:
			if n > 0 && b.br.Buffered() == 0 {
				return n, nil
			}
			q := p[n:]
			if int64(len(q)) > b.left {
				q = q[:b.left]
			}
			m, err := b.br.Read(q)
			n += m
			b.left -= int64(m)
			if b.left == 0 {
				b.state = chunkCRLF
			}
			if err != nil {
				return n, b.fail(err)
			}
		}
	}
	return n, nil
}

func (b *bodyReader) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return err
}

// lineBuffered reports whether a whole line is in br's buffer.
func lineBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// readChunkSize reads a chunk header line and returns its size.
func readChunkSize(br *bufio.Reader) (int64, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return 0, errBadChunk
	}
	if err != nil {
		return 0, err
	}
	size, ok := parseChunkSize(line)
	if !ok {
		return 0, errBadChunk
	}
	return size, nil
}

// parseChunkSize parses "<hex>[ext]\r\n".
func parseChunkSize(line []byte) (int64, bool) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, false
	}
	line = line[:len(line)-2]
	if i := bytes.IndexAny(line, " \t;"); i >= 0 {
		line = line[:i] // whitespace or an extension follows the size
	}
	size, err := strconv.ParseInt(b2s(line), 16, 64)
	if err != nil || size < 0 || len(line) > 15 {
		return 0, false
	}
	return size, true
}

// skipTrailers reads the trailer section after the last chunk, up to its
// empty line.
func skipTrailers(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return errBadChunk
		}
		if err != nil {
			return err
		}
		if len(line) == 2 && line[0] == '\r' {
			return nil
		}
	}
}

// Buffered returns how many body bytes are already in memory when the next
// Read is sure to return some of them, or the body's end, without waiting
// for the network; 0 otherwise.
func (b *bodyReader) Buffered() int {
	if b.err != nil || b.done {
		return 0
	}
	n := b.br.Buffered()
	if n == 0 {
		return 0
	}
	switch b.mode {
	case bodySized:
		return int(min(int64(n), b.left))
	case bodyUntilClose:
		return n
	}
	buf, _ := b.br.Peek(n) // n bytes are buffered: Peek does not read
	switch b.state {
	case chunkData:
		return n
	case chunkCRLF:
		if len(buf) < 2 {
			return 0
		}
		return nextChunkReady(buf[2:])
	}
	return nextChunkReady(buf)
}

// nextChunkReady: buf starts with a chunk header. A Read parses it, then
// returns data; the last chunk (size 0) needs its empty trailer line too.
func nextChunkReady(buf []byte) int {
	nl := bytes.IndexByte(buf, '\n')
	if nl < 1 || nl >= maxChunkLine {
		return 0
	}
	size, ok := parseChunkSize(buf[:nl+1])
	if !ok {
		return 0 // malformed: Read reports it, nothing to coalesce
	}
	rest := buf[nl+1:]
	if size == 0 {
		if bytes.HasPrefix(rest, []byte("\r\n")) {
			return len(buf)
		}
		return 0
	}
	return len(rest)
}
