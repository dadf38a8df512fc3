package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// ev builds an expected event; data and name "-" mean absent.
func ev(raw, data, name string) event {
	e := event{Raw: raw}
	if data != "-" {
		e.Data, e.HasData = data, true
	}
	if name != "-" {
		e.Name, e.HasName = name, true
	}
	return e
}

// cut marks e as a final event the stream ended inside.
func cut(e event) event {
	e.Cut = true
	return e
}

func TestScannerEvents(t *testing.T) {
	f := func(in string, want ...event) {
		t.Helper()
		// The same events whether the input comes whole or byte by byte.
		for _, r := range []io.Reader{strings.NewReader(in), &chunkReader{b: []byte(in), n: 1}} {
			got := scanAll(t, r)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("input %q\ngot  %+v\nwant %+v", in, got, want)
			}
		}
	}
	f("")
	f("data: a\n\n", ev("data: a\n\n", "a", "-"))
	f("data: a\n\ndata: b\n\n", ev("data: a\n\n", "a", "-"), ev("data: b\n\n", "b", "-"))
	// CRLF and CR line ends.
	f("data: a\r\n\r\ndata: b\r\n\r\n", ev("data: a\r\n\r\n", "a", "-"), ev("data: b\r\n\r\n", "b", "-"))
	f("data: a\r\rdata: b\r\r", ev("data: a\r\r", "a", "-"), ev("data: b\r\r", "b", "-"))
	f("data: a\r\ndata: b\r\n\r\n", ev("data: a\r\ndata: b\r\n\r\n", "a\nb", "-"))
	// A blank CR line after an LF line closes the event at the CR; the LF
	// after it is a leading blank line of the next event.
	f("data: a\n\r\ndata: b\n\n", ev("data: a\n\r", "a", "-"), ev("\ndata: b\n\n", "b", "-"))
	// Comments are part of Raw, not of Data.
	f(": ping\n\n", ev(": ping\n\n", "-", "-"))
	f(": ping\ndata: a\n: pong\n\n", ev(": ping\ndata: a\n: pong\n\n", "a", "-"))
	// Multi-line data, event name, other fields.
	f("event: error\ndata: {\ndata:  \"x\": 1\ndata:}\nid: 7\nretry: 10\n\n",
		ev("event: error\ndata: {\ndata:  \"x\": 1\ndata:}\nid: 7\nretry: 10\n\n", "{\n \"x\": 1\n}", "error"))
	f("data\n\n", ev("data\n\n", "", "-"))
	f("data:\n\n", ev("data:\n\n", "", "-"))
	f("data:x\n\n", ev("data:x\n\n", "x", "-"))
	f("event:\n\n", ev("event:\n\n", "-", ""))
	f("data: a\ndata:\n\n", ev("data: a\ndata:\n\n", "a\n", "-"))
	// Leading blank lines belong to the next event.
	f("\n\n\ndata: a\n\n", ev("\n\n\ndata: a\n\n", "a", "-"))
	// A final event without its blank line, then blank lines alone.
	f("data: a\n\ndata: b", ev("data: a\n\n", "a", "-"), cut(ev("data: b", "b", "-")))
	f("data: a\n", cut(ev("data: a\n", "a", "-")))
	f("data: a\r", cut(ev("data: a\r", "a", "-")))
	f("data: a\r\n\r", ev("data: a\r\n\r", "a", "-")) // whole: its blank line ended with CR
	f("data: a\n\n\n", ev("data: a\n\n", "a", "-"), cut(ev("\n", "-", "-")))
}

// eventsOf scans in with the given reader and checks that the events' Raw
// add up to the input.
func eventsOf(t *testing.T, in []byte, r io.Reader) []event {
	t.Helper()
	evs := scanAll(t, r)
	var raw []byte
	for _, e := range evs {
		raw = append(raw, e.Raw...)
	}
	if !bytes.Equal(raw, in) {
		t.Fatalf("events do not add up to the input")
	}
	return evs
}

func TestScannerSplits(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			whole := eventsOf(t, s.data, bytes.NewReader(s.data))
			if len(whole) < 5 {
				t.Fatalf("only %d events", len(whole))
			}
			for _, n := range []int{1, 2, 3, 7, 64, 1000} {
				got := eventsOf(t, s.data, &chunkReader{b: s.data, n: n})
				if !reflect.DeepEqual(got, whole) {
					t.Fatalf("%d-byte reads give other events than one read", n)
				}
			}
			// Two reads split at every byte offset (of the first 4 KiB for
			// long streams, to keep the test quick; the 1-byte reads above
			// cover every offset).
			for k := 1; k < min(len(s.data), 4096); k++ {
				got := eventsOf(t, s.data, &splitReader{pieces: [][]byte{s.data[:k], s.data[k:]}})
				if !reflect.DeepEqual(got, whole) {
					t.Fatalf("split at %d gives other events than one read", k)
				}
			}
		})
	}
}

func TestScannerRecordingEvents(t *testing.T) {
	// Every data: line of the LF recordings is one event, and its payload
	// is the rest of that line.
	for _, name := range recordings {
		in := readTestdata(t, name)
		var want []string
		for _, line := range strings.Split(string(in), "\n") {
			if p, ok := strings.CutPrefix(line, "data: "); ok {
				want = append(want, p)
			}
		}
		var got []string
		for _, e := range scanAll(t, bytes.NewReader(in)) {
			if e.HasData {
				got = append(got, e.Data)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: data payloads differ from the data: lines", name)
		}
	}
}

func TestScannerNames(t *testing.T) {
	evs := scanAll(t, bytes.NewReader(readTestdata(t, "groq-event-error.sse")))
	last := evs[len(evs)-1]
	if last.Name != "error" || !strings.HasPrefix(last.Data, `{"error":`) {
		t.Fatalf("last event: name %q, data %q", last.Name, last.Data)
	}
	for _, e := range evs[:len(evs)-1] {
		if e.HasName {
			t.Fatalf("unexpected name %q", e.Name)
		}
	}
}

func TestScannerTooLarge(t *testing.T) {
	f := func(in string, max int, wantEvents int, wantErr error) {
		t.Helper()
		var sc Scanner
		sc.max = max
		sc.Reset(&chunkReader{b: []byte(in), n: 100})
		n := 0
		for {
			_, err := sc.Next()
			if err != nil {
				if err != wantErr {
					t.Fatalf("error %v, want %v", err, wantErr)
				}
				break
			}
			n++
		}
		if n != wantEvents {
			t.Fatalf("%d events, want %d", n, wantEvents)
		}
	}
	long := "data: " + strings.Repeat("x", 20000) + "\n\n"
	f(long, 8192, 0, ErrEventTooLarge)
	f("data: a\n\n"+long, 8192, 1, ErrEventTooLarge)
	f(long+long, 32768, 2, io.EOF)
}

func TestScannerReadError(t *testing.T) {
	boom := errors.New("boom")
	var sc Scanner
	sc.Reset(&failReader{b: []byte("data: a\n\ndata: b\n\ndata: partial"), err: boom})
	for _, want := range []string{"a", "b"} {
		e, err := sc.Next()
		if err != nil || string(e.Data) != want {
			t.Fatalf("got %q, %v; want %q", e.Data, err, want)
		}
	}
	if _, err := sc.Next(); err != boom {
		t.Fatalf("error %v, want boom", err)
	}
	if _, err := sc.Next(); err != boom {
		t.Fatalf("error not sticky: %v", err)
	}
}

func TestScannerNoProgress(t *testing.T) {
	var sc Scanner
	sc.Reset(readerFunc(func([]byte) (int, error) { return 0, nil }))
	if _, err := sc.Next(); err != io.ErrNoProgress {
		t.Fatalf("error %v, want io.ErrNoProgress", err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestScannerBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	var sc Scanner
	sc.Reset(pr)
	go func() {
		pw.Write([]byte("data: a\n\ndata: b\n\ndata: c"))
		pw.Write([]byte("\n\n"))
		pw.Close()
	}()
	e, err := sc.Next()
	if err != nil || string(e.Data) != "a" {
		t.Fatalf("got %q, %v", e.Data, err)
	}
	if !sc.Buffered() {
		t.Fatalf("b is buffered")
	}
	if string(e.Data) != "a" {
		t.Fatalf("Buffered changed the current event")
	}
	if e, _ = sc.Next(); string(e.Data) != "b" {
		t.Fatalf("got %q", e.Data)
	}
	if sc.Buffered() {
		t.Fatalf("c is not complete yet")
	}
	if e, _ = sc.Next(); string(e.Data) != "c" {
		t.Fatalf("got %q", e.Data)
	}
	if _, err = sc.Next(); err != io.EOF {
		t.Fatalf("error %v, want EOF", err)
	}
	if !sc.Buffered() {
		t.Fatalf("after the end Next does not read, so Buffered is true")
	}
}
