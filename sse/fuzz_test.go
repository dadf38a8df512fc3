package sse

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"
)

// addStreamSeeds adds the start and the end of each recording (whole ones
// make minimizing a failure very slow) and a few hand-made edge cases.
func addStreamSeeds(f *testing.F, add func(data []byte)) {
	for _, name := range recordings {
		evs := scanAll(f, bytes.NewReader(readTestdata(f, name)))
		var b []byte
		for i, e := range evs {
			if i < 3 || i >= len(evs)-2 {
				b = append(b, e.Raw...)
			}
		}
		add(b)
	}
	for _, s := range []string{
		"", "\n", "\r", "\r\n", "data: a\r\n\r", "data: a\n\r\ndata: b\n\n", ": c\n\n",
		"event: e\ndata: 1\ndata: 2\nid: 3\n\n", "data\n\ndata:\n\n", "data: a",
		"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"model\":\"x\"}\r\n\r\n",
		"data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\n\n",
		"data: {\"choices\":[{\"index\":1,\"text\":\"a\"},{\"text\":\"b\"}]}\n\n",
	} {
		add([]byte(s))
	}
}

func FuzzScanner(f *testing.F) {
	addStreamSeeds(f, func(b []byte) { f.Add(b, uint16(len(b)/2)) })
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		whole := scanAll(t, bytes.NewReader(in))
		var raw []byte
		for i, e := range whole {
			raw = append(raw, e.Raw...)
			if e.Raw == "" {
				t.Fatalf("event %d is empty", i)
			}
			if bytes.ContainsAny([]byte(e.Data+e.Name), "\r") {
				t.Fatalf("event %d: CR in Data or Name", i)
			}
		}
		if !bytes.Equal(raw, in) {
			t.Fatalf("events do not add up to the input")
		}
		// Event boundaries do not depend on how reads split the input.
		k := 0
		if len(in) > 0 {
			k = int(split) % len(in)
		}
		if got := scanAll(t, &splitReader{pieces: [][]byte{in[:k], in[k:]}}); !reflect.DeepEqual(got, whole) {
			t.Fatalf("split at %d gives other events than one read:\n%+v\n%+v", k, got, whole)
		}
		if got := scanAll(t, &chunkReader{b: in, n: 1}); !reflect.DeepEqual(got, whole) {
			t.Fatalf("1-byte reads give other events than one read")
		}
	})
}

// FuzzRelay relays streams cut anywhere (read as a plain EOF, as fasthttp
// reports a connection dropped inside a chunked body). The caller gets the
// input's whole events, up to [DONE], each as it came, then the error
// event when the stream broke: never part of an event, whatever the cut.
func FuzzRelay(f *testing.F) {
	addStreamSeeds(f, func(b []byte) { f.Add(b, uint16(len(b))) })
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		in = in[:int(cut)%(len(in)+1)]
		r := &Relay{ErrorEvent: errorEvent}
		r.Reset()
		if err := r.Start(bytes.NewReader(in)); err != nil {
			return // failed before anything reached the caller
		}
		w := &writeRecorder{}
		if _, err := r.WriteTo(w); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		var want []byte
		for _, e := range scanAll(t, bytes.NewReader(in)) {
			switch {
			case e.HasData && e.Data == "[DONE]" && e.Cut:
				want = append(want, "data: [DONE]\n\n"...)
			case !e.Cut:
				want = append(want, e.Raw...)
			}
			if e.HasData && e.Data == "[DONE]" {
				break
			}
		}
		if r.ReadErr == io.ErrUnexpectedEOF {
			want = errorEvent(want, r.ReadErr)
		}
		if got := w.all(); !bytes.Equal(got, want) {
			t.Fatalf("relayed %q\nwant    %q", got, want)
		}
		for _, e := range scanAll(t, bytes.NewReader(w.all())) {
			if e.Cut {
				t.Fatalf("the caller got part of an event: %q", e.Raw)
			}
		}
	})
}

func FuzzRewriter(f *testing.F) {
	addStreamSeeds(f, func(b []byte) { f.Add(b, "> ", "m", true) })
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"), "\"\\\n\xff", "\x00", false)
	f.Fuzz(checkRewriter)
}

// checkRewriter rewrites the events of in and checks the output.
func checkRewriter(t *testing.T, in []byte, prefix, model string, hide bool) {
	{
		var rw Rewriter
		rw.Reset(prefix, model, hide)
		evs := scanAll(t, bytes.NewReader(in))
		var out []byte
		kept := 0
		for _, e := range evs {
			ev := Event{Raw: []byte(e.Raw)}
			if e.HasData {
				ev.Data = []byte(e.Data)
			}
			if e.HasName {
				ev.Name = []byte(e.Name)
			}
			before := len(out)
			var k bool
			out, k = rw.Append(out, ev)
			if !k {
				if len(out) != before {
					t.Fatalf("a hidden event wrote bytes")
				}
				continue
			}
			kept++
			// A valid JSON object stays a valid JSON object.
			if obj, ok := decodeObject(ev.Data); ok && obj != nil {
				got := scanAll(t, bytes.NewReader(out[before:]))
				if len(got) != 1 || !json.Valid([]byte(got[0].Data)) {
					t.Fatalf("valid chunk %q became %q", ev.Data, out[before:])
				}
			}
		}
		outEvs := scanAll(t, bytes.NewReader(out))
		if len(outEvs) != kept {
			t.Fatalf("%d events kept, the output scans as %d", kept, len(outEvs))
		}
		// The prefix went at most once to each choice index.
		seen := map[int64]bool{}
		for _, idx := range rw.done {
			if seen[idx] {
				t.Fatalf("choice %d got the prefix twice", idx)
			}
			seen[idx] = true
		}
		checkRewritten(t, newOracle(t, prefix, model, hide), evs, outEvs, false)
	}
}
