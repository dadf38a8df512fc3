package sse

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
)

// Sink keeps benchmark results alive.
var Sink atomic.Int64

// benchEvents returns the events of a recording, copied.
func benchEvents(b *testing.B, name string) ([]byte, []Event) {
	in := readTestdata(b, name)
	var evs []Event
	var sc Scanner
	sc.Reset(bytes.NewReader(in))
	for {
		e, err := sc.Next()
		if err != nil {
			return in, evs
		}
		evs = append(evs, Event{Raw: bytes.Clone(e.Raw), Data: bytes.Clone(e.Data), Name: bytes.Clone(e.Name)})
	}
}

// BenchmarkScanner measures one event per op.
func BenchmarkScanner(b *testing.B) {
	in, evs := benchEvents(b, "vllm-chat.sse")
	var rd bytes.Reader
	var sc Scanner
	rd.Reset(in)
	sc.Reset(&rd)
	b.SetBytes(int64(len(in) / len(evs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e, err := sc.Next()
		if err != nil {
			rd.Reset(in)
			sc.Reset(&rd)
			continue
		}
		Sink.Add(int64(len(e.Data)))
	}
}

// BenchmarkRewriter measures Append (and AppendData, as the relay calls
// both) for one event per op, over the recording's events in turn with one
// Reset per pass.
func BenchmarkRewriter(b *testing.B) {
	_, evs := benchEvents(b, "openai-chat-usage.sse")
	for _, c := range []struct {
		name          string
		prefix, model string
		hide          bool
	}{
		{"none", "", "", false},
		{"prefix", "[bot] ", "", false},
		{"prefix+model+hide", "[bot] ", "my-model", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var rw Rewriter
			var dst []byte
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				k := i % len(evs)
				if k == 0 {
					rw.Reset(c.prefix, c.model, c.hide)
				}
				dst, _ = rw.Append(dst[:0], evs[k])
				dst = rw.AppendData(dst)
			}
			Sink.Add(int64(len(dst)))
		})
	}
}

// BenchmarkRelay relays a whole recorded stream per op (vLLM, 17 data
// events), from a reader that gives all of it at once and from one that
// gives one event per read, as a live upstream does.
func BenchmarkRelay(b *testing.B) {
	in, evs := benchEvents(b, "vllm-chat.sse")
	pieces := make([][]byte, len(evs))
	for i, e := range evs {
		pieces[i] = e.Raw
	}
	for _, c := range []struct {
		name          string
		prefix, model string
		perEvent      bool
	}{
		{"whole", "", "", false},
		{"per-event", "", "", true},
		{"per-event+prefix+model", "[bot] ", "my-model", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var rd bytes.Reader
			var sr splitReader
			var r Relay
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var src io.Reader = &rd
				if c.perEvent {
					sr.reset(pieces)
					src = &sr
				} else {
					rd.Reset(in)
				}
				r.Reset()
				r.Rewriter.Reset(c.prefix, c.model, true)
				if err := r.Start(src); err != nil {
					b.Fatal(err)
				}
				if _, err := r.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
				Sink.Add(int64(r.Events))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
		})
	}
}

func BenchmarkRelayParallel(b *testing.B) {
	in := readTestdata(b, "vllm-chat.sse")
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var rd bytes.Reader
		var r Relay
		n := 0
		for pb.Next() {
			rd.Reset(in)
			r.Reset()
			r.Rewriter.Reset("[bot] ", "my-model", true)
			if err := r.Start(&rd); err != nil {
				b.Error(err)
				return
			}
			if _, err := r.WriteTo(io.Discard); err != nil {
				b.Error(err)
				return
			}
			n += r.Events
		}
		Sink.Add(int64(n))
	})
}
