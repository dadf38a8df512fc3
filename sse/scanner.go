package sse

import (
	"bytes"
	"errors"
	"io"
)

// MaxEventSize caps one event (all its lines) so a peer that never sends a
// blank line cannot make the scanner buffer without bound.
const MaxEventSize = 8 << 20

// ErrEventTooLarge is returned by Scanner.Next when an event grows past
// MaxEventSize before its terminating blank line arrives.
var ErrEventTooLarge = errors.New("sse: event larger than 8 MiB")

// crlfCR ends a whole event the scanner holds until the byte after the CR
// comes (it could be an LF); an event that ends the stream so is whole.
var crlfCR = []byte("\r\n\r")

// initialBufSize fits a few typical chunks (300–600 bytes each) per read.
const initialBufSize = 4096

// maxEmptyReads guards against readers that keep returning (0, nil).
const maxEmptyReads = 100

// Event is one SSE event. Its slices point into the Scanner's buffer and are
// valid until the next Scanner.Next call; copy to keep.
type Event struct {
	// Raw is the whole event as received, including leading blank lines and
	// its terminating blank line (absent for a final event at EOF).
	Raw []byte
	// Data is the data: lines' values joined by "\n", one optional space
	// after "data:" removed; nil if the event has no data line.
	Data []byte
	// Name is the value of an "event:" line, nil if none.
	Name []byte
	// Cut is set on a final event the stream ended inside, before its
	// blank line. SSE drops such an event (the relay does).
	Cut bool
}

// Scanner splits an SSE byte stream into events. It keeps one buffer that is
// reused across Reset calls, so a pooled Scanner reads without allocating.
//
// Line ends may be LF, CRLF or CR. A blank line closes an event. A blank line
// that ends with CR closes the event at once unless the line before it ended
// with CRLF; only then does the scanner wait for the byte after the CR. This
// keeps event boundaries independent of how reads split the stream, and never
// delays an event of a CR-only stream until the next one starts. A lone LF
// left behind this way is a leading blank line of the next event (SSE ignores
// it), so no byte is ever lost or moved: the Raw of all events, concatenated,
// is exactly the input.
type Scanner struct {
	r   io.Reader
	buf []byte

	start    int // first byte of the next event in buf
	end      int // end of buffered bytes
	consumed int // length of the event returned last; dropped at the next Next

	// Incremental state of the scan of the event at buf[start:], offsets
	// relative to start, so that bytes already looked at are not looked at
	// again when more arrive.
	pos       int  // next byte to look at
	lineStart int  // start of the current line
	inEvent   bool // a non-blank line has been seen
	prevCRLF  bool // the last non-blank line ended with CRLF

	err  error  // sticky read error (io.EOF included)
	data []byte // joined data of multi-line events

	max int // MaxEventSize unless set by tests
}

// Reset prepares s to read r, keeping the buffer.
func (s *Scanner) Reset(r io.Reader) {
	s.r = r
	s.start, s.end, s.consumed = 0, 0, 0
	s.resetScan()
	s.err = nil
	s.data = s.data[:0]
}

func (s *Scanner) resetScan() {
	s.pos, s.lineStart = 0, 0
	s.inEvent, s.prevCRLF = false, false
}

// Next returns the next event. At the end of the stream a final event that
// lacks its blank line is returned with a nil error and Cut set, then
// io.EOF. A read error other than io.EOF is returned after the complete
// events before it; a partial event before such an error is dropped,
// because relaying half an event would hand the caller broken JSON.
func (s *Scanner) Next() (Event, error) {
	s.start += s.consumed
	s.consumed = 0
	empty := 0
	for {
		if n, ok := s.scan(); ok {
			return s.take(n), nil
		}
		if s.err != nil {
			if s.err == io.EOF && s.start < s.end {
				ev := s.take(s.end - s.start)
				// Whole but for the byte after its last CR, which could
				// have been an LF, or cut inside.
				ev.Cut = !bytes.HasSuffix(ev.Raw, crlfCR)
				return ev, nil
			}
			return Event{}, s.err
		}
		n := s.fill()
		if n == 0 && s.err == nil {
			empty++
			if empty >= maxEmptyReads {
				s.err = io.ErrNoProgress
			}
		}
	}
}

// Buffered reports whether Next can return without reading from the source:
// a complete event is buffered, or the source has already ended. The relay
// uses it to coalesce events that arrived together into one write without
// ever waiting for more data.
func (s *Scanner) Buffered() bool {
	if s.err != nil {
		return true
	}
	// The previous event's bytes stay in place until Next; skip them here.
	if s.consumed > 0 {
		s.start += s.consumed
		s.consumed = 0
	}
	_, ok := s.scan()
	return ok
}

// take returns the event in the next n buffered bytes and marks them
// consumed.
func (s *Scanner) take(n int) Event {
	raw := s.buf[s.start : s.start+n : s.start+n]
	s.consumed = n
	s.resetScan()
	return s.parse(raw)
}

// fill reads more bytes, first moving the unread ones to the front and
// growing the buffer when the pending event fills it.
func (s *Scanner) fill() int {
	if s.start > 0 {
		s.end = copy(s.buf, s.buf[s.start:s.end])
		s.start = 0
	}
	if s.buf == nil {
		s.buf = make([]byte, initialBufSize)
	}
	if s.end == len(s.buf) {
		limit := s.max
		if limit <= 0 {
			limit = MaxEventSize
		}
		if len(s.buf) >= limit {
			s.err = ErrEventTooLarge
			return 0
		}
		nb := make([]byte, min(2*len(s.buf), limit))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[s.end:])
	if n < 0 || n > len(s.buf)-s.end {
		n = 0
		if err == nil {
			err = io.ErrShortBuffer
		}
	}
	s.end += n
	if err != nil {
		s.err = err
	}
	return n
}

// scan looks for the blank line that closes the event at buf[start:] and
// returns the event's length. It resumes where the previous call stopped.
func (s *Scanner) scan() (int, bool) {
	b := s.buf[s.start:s.end]
	atEnd := s.err != nil // no byte will follow the buffered ones
	for s.pos < len(b) {
		j := indexLineEnd(b[s.pos:])
		if j < 0 {
			s.pos = len(b)
			return 0, false
		}
		j += s.pos
		blank := j == s.lineStart
		crlf := false
		tl := 1
		if b[j] == '\r' {
			switch {
			case j+1 < len(b):
				if b[j+1] == '\n' && (!blank || !s.inEvent || s.prevCRLF) {
					crlf, tl = true, 2
				}
			case atEnd:
			case !blank:
				// CR or CRLF: the next byte decides where the next line starts.
				s.pos = j
				return 0, false
			case s.inEvent && s.prevCRLF:
				// The blank line may be CRLF like the lines before it.
				s.pos = j
				return 0, false
			}
		}
		next := j + tl
		if blank {
			if s.inEvent {
				return next, true
			}
		} else {
			s.inEvent = true
			s.prevCRLF = crlf
		}
		s.lineStart, s.pos = next, next
	}
	return 0, false
}

// indexLineEnd returns the index of the first CR or LF in b, or -1.
// Streams use LF almost always, so it searches for LF first and looks for a
// CR only in the bytes before it.
func indexLineEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}

// parse splits a complete event into its fields.
func (s *Scanner) parse(raw []byte) Event {
	ev := Event{Raw: raw}
	nData := 0
	for i := 0; i < len(raw); {
		j := indexLineEnd(raw[i:])
		var line []byte
		if j < 0 {
			line = raw[i:]
			i = len(raw)
		} else {
			line = raw[i : i+j]
			i += j + 1
			if raw[i-1] == '\r' && i < len(raw) && raw[i] == '\n' {
				i++
			}
		}
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value := line, line[len(line):]
		if k := bytes.IndexByte(line, ':'); k >= 0 {
			name, value = line[:k], line[k+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			switch nData {
			case 0:
				ev.Data = value
			case 1:
				s.data = append(s.data[:0], ev.Data...)
				fallthrough
			default:
				s.data = append(s.data, '\n')
				s.data = append(s.data, value...)
				ev.Data = s.data
			}
			nData++
		case "event":
			ev.Name = value
		}
	}
	return ev
}
