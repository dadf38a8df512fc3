//go:build !race

package sse

import (
	"bytes"
	"io"
	"testing"
)

func TestAllocsScanner(t *testing.T) {
	// A recording with a named event, plus an event of several data: lines.
	in := readTestdata(t, "groq-event-error.sse")
	in = append(in, "data: {\ndata: \"a\":1\ndata: }\n\n"...)
	var rd bytes.Reader
	var sc Scanner
	events := 0
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(in)
		sc.Reset(&rd)
		events = 0
		for {
			if _, err := sc.Next(); err != nil {
				break
			}
			events++
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per stream of %d events, want 0", allocs, events)
	}
}

func TestAllocsRewriter(t *testing.T) {
	var evs []Event
	var sc Scanner
	for _, name := range recordings {
		sc.Reset(bytes.NewReader(readTestdata(t, name)))
		for {
			e, err := sc.Next()
			if err != nil {
				break
			}
			evs = append(evs, Event{Raw: bytes.Clone(e.Raw), Data: bytes.Clone(e.Data), Name: bytes.Clone(e.Name)})
		}
	}
	var rw Rewriter
	var dst []byte
	for _, c := range []struct {
		prefix, model string
		hide          bool
	}{{"", "", false}, {"[bot] ", "my-model", true}} {
		allocs := testing.AllocsPerRun(50, func() {
			rw.Reset(c.prefix, c.model, c.hide)
			for _, e := range evs {
				dst, _ = rw.Append(dst[:0], e)
				dst = rw.AppendData(dst)
			}
		})
		if allocs != 0 {
			t.Fatalf("%+v: %.1f allocations per %d events, want 0", c, allocs, len(evs))
		}
	}
}

func TestAllocsRelay(t *testing.T) {
	for _, name := range recordings {
		in := readTestdata(t, name)
		var rd bytes.Reader
		r := &Relay{ErrorEvent: errorEvent}
		allocs := testing.AllocsPerRun(50, func() {
			r.Reset()
			r.Rewriter.Reset("[bot] ", "my-model", true)
			rd.Reset(in)
			if err := r.Start(&rd); err != nil {
				t.Fatal(err)
			}
			if _, err := r.WriteTo(io.Discard); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: %.1f allocations per stream, want 0", name, allocs)
		}
	}
}
