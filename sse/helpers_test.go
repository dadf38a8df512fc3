package sse

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// recordings are the real upstream streams in testdata/.
var recordings = []string{
	"vllm-chat.sse",
	"openai-chat-usage.sse",
	"openai-tool-call-usage.sse",
	"openai-tool-calls-parallel.sse",
	"openai-completions.sse",
	"deepseek-reasoning-tool-call.sse",
	"openrouter-comments-error.sse",
	"groq-event-error.sse",
	"azure-chat-filters.sse",
	"azure-chat-filters-2024.sse",
	"zai-glm-reasoning-content.sse",
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatalf("cannot read %s: %s", name, err)
	}
	return b
}

// stream is one input for the table tests: a recording or a variant made
// from one.
type stream struct {
	name string
	data []byte
}

// testStreams returns every recording plus the crafted variants: CRLF and CR
// line ends, and a stream with two choices (n=2).
func testStreams(tb testing.TB) []stream {
	tb.Helper()
	var ss []stream
	for _, name := range recordings {
		ss = append(ss, stream{name, readTestdata(tb, name)})
	}
	vllm := readTestdata(tb, "vllm-chat.sse")
	ss = append(ss,
		stream{"vllm-chat-crlf", bytes.ReplaceAll(vllm, []byte("\n"), []byte("\r\n"))},
		stream{"vllm-chat-cr", bytes.ReplaceAll(vllm, []byte("\n"), []byte("\r"))},
		stream{"openrouter-crlf", bytes.ReplaceAll(readTestdata(tb, "openrouter-comments-error.sse"), []byte("\n"), []byte("\r\n"))},
		stream{"vllm-chat-n2", multiChoice(tb, vllm)},
		stream{"completions-n2", multiChoice(tb, readTestdata(tb, "openai-completions.sse"))},
	)
	return ss
}

// multiChoice turns a one-choice stream into an n=2 stream: each chunk with
// a choice gets a second choice with index 1, whose first three contents are
// empty so that choice 1 starts later than choice 0. Even chunks carry both
// choices in one array (index 1 first, so position and index differ); odd
// chunks are split in two chunks, as OpenAI sends them.
func multiChoice(tb testing.TB, in []byte) []byte {
	tb.Helper()
	var out []byte
	var sc Scanner
	sc.Reset(bytes.NewReader(in))
	k := 0
	for {
		ev, err := sc.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		m, ok := decodeObject(ev.Data)
		choices, _ := m["choices"].([]any)
		if !ok || len(choices) == 0 {
			out = append(out, ev.Raw...)
			continue
		}
		c0 := choices[0].(map[string]any)
		c1 := deepCopy(tb, c0)
		c1["index"] = 1
		if k < 3 {
			if d, ok := c1["delta"].(map[string]any); ok {
				if _, ok := d["content"].(string); ok {
					d["content"] = ""
				}
			}
			if _, ok := c1["text"].(string); ok {
				c1["text"] = ""
			}
		}
		if k%2 == 0 {
			m["choices"] = []any{c1, c0}
			out = appendChunk(tb, out, m)
		} else {
			m["choices"] = []any{c0}
			out = appendChunk(tb, out, m)
			m["choices"] = []any{c1}
			out = appendChunk(tb, out, m)
		}
		k++
	}
}

func deepCopy(tb testing.TB, m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	c, ok := decodeObject(b)
	if !ok {
		tb.Fatalf("cannot copy %s", b)
	}
	return c
}

func appendChunk(tb testing.TB, dst []byte, m map[string]any) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	dst = append(dst, "data: "...)
	dst = append(dst, b...)
	return append(dst, "\n\n"...)
}

// decodeObject decodes a JSON object with numbers kept as written.
func decodeObject(b []byte) (map[string]any, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// event is a copy of an Event that outlives the scanner's buffer.
type event struct {
	Raw, Data, Name       string
	HasData, HasName, Cut bool
}

func copyEvent(ev Event) event {
	return event{
		Raw: string(ev.Raw), Data: string(ev.Data), Name: string(ev.Name),
		HasData: ev.Data != nil, HasName: ev.Name != nil, Cut: ev.Cut,
	}
}

func scanAll(tb testing.TB, r io.Reader) []event {
	tb.Helper()
	var sc Scanner
	sc.Reset(r)
	var evs []event
	for {
		ev, err := sc.Next()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			tb.Fatalf("unexpected error: %s", err)
		}
		evs = append(evs, copyEvent(ev))
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b     []byte
	n     int
	reads int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.reads++
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.b))
	copy(p, r.b[:k])
	r.b = r.b[k:]
	return k, nil
}

// splitReader returns its pieces one per Read (a piece longer than the
// buffer takes several). It does not change the pieces, so they can be
// reused.
type splitReader struct {
	pieces [][]byte
	i, off int
}

func (r *splitReader) reset(pieces [][]byte) {
	r.pieces, r.i, r.off = pieces, 0, 0
}

func (r *splitReader) Read(p []byte) (int, error) {
	for r.i < len(r.pieces) && r.off == len(r.pieces[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	if r.i == len(r.pieces) {
		return 0, io.EOF
	}
	n := copy(p, r.pieces[r.i][r.off:])
	r.off += n
	return n, nil
}

// failReader gives b and then fails with err.
type failReader struct {
	b   []byte
	n   int // bytes per read, 0 = all
	err error
}

func (r *failReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	k := len(r.b)
	if r.n > 0 {
		k = min(k, r.n)
	}
	n := copy(p, r.b[:k])
	r.b = r.b[n:]
	return n, nil
}

// oracle computes with encoding/json what the rewriter must do to a chunk:
// it is the specification the byte-level rewriter is checked against.
type oracle struct {
	prefix string // as the caller decodes it
	model  string
	hide   bool
	done   map[int64]bool
}

func newOracle(tb testing.TB, prefix, model string, hide bool) *oracle {
	// The prefix as a JSON decoder gives it back (invalid UTF-8 becomes
	// U+FFFD).
	b, err := json.Marshal(prefix)
	if err != nil {
		tb.Fatal(err)
	}
	var p string
	if err := json.Unmarshal(b, &p); err != nil {
		tb.Fatal(err)
	}
	b, _ = json.Marshal(model)
	var m string
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return &oracle{prefix: p, model: m, hide: hide, done: map[int64]bool{}}
}

// apply returns the chunk the caller must see (decoded), whether it is
// hidden, and whether the payload is a JSON object at all.
func (o *oracle) apply(payload []byte) (want map[string]any, hidden, isObject bool) {
	m, ok := decodeObject(payload)
	if !ok {
		return nil, false, false
	}
	if _, has := m["model"]; has && o.model != "" {
		m["model"] = o.model
	}
	choices, isArray := m["choices"].([]any)
	if u, has := m["usage"]; o.hide && isArray && len(choices) == 0 && has && u != nil {
		return m, true, true
	}
	for pos, c := range choices {
		cm, ok := c.(map[string]any)
		if !ok {
			continue
		}
		idx := int64(pos)
		if n, ok := cm["index"].(json.Number); ok {
			if v, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				idx = v
			}
		}
		var target map[string]any
		var key string
		if d, ok := cm["delta"].(map[string]any); ok {
			if s, ok := d["content"].(string); ok && s != "" {
				target, key = d, "content"
			}
		}
		if target == nil {
			if s, ok := cm["text"].(string); ok && s != "" {
				target, key = cm, "text"
			}
		}
		if target != nil && o.prefix != "" && !o.done[idx] {
			target[key] = o.prefix + target[key].(string)
			o.done[idx] = true
		}
	}
	return m, false, true
}

// checkRewritten compares the rewriter's output for a stream (as events)
// with the oracle's view of the input events. strict: an event the oracle
// leaves unchanged must keep its exact bytes (false for fuzzed input, where
// a model name may equal the upstream's only once decoded).
func checkRewritten(tb testing.TB, o *oracle, in, out []event, strict bool) {
	tb.Helper()
	j := 0
	for _, ev := range in {
		var want map[string]any
		hidden, isObject := false, false
		if ev.HasData && ev.Data != "[DONE]" {
			want, hidden, isObject = o.apply([]byte(ev.Data))
		}
		if hidden {
			continue
		}
		if j >= len(out) {
			tb.Fatalf("output ends before input event %q", ev.Raw)
		}
		got := out[j]
		j++
		orig, _ := decodeObject([]byte(ev.Data))
		if !isObject || (strict && reflect.DeepEqual(want, orig)) {
			if got.Raw != ev.Raw {
				tb.Fatalf("unchanged event was altered\nin:  %q\nout: %q", ev.Raw, got.Raw)
			}
			continue
		}
		gm, ok := decodeObject([]byte(got.Data))
		if !ok {
			tb.Fatalf("rewritten chunk is not a JSON object: %q", got.Data)
		}
		if !reflect.DeepEqual(gm, want) {
			wb, _ := json.Marshal(want)
			tb.Fatalf("rewritten chunk differs\nin:   %s\ngot:  %s\nwant: %s", ev.Data, got.Data, wb)
		}
		if got.Name != ev.Name || got.HasName != ev.HasName {
			tb.Fatalf("event name changed from %q to %q", ev.Name, got.Name)
		}
	}
	if j != len(out) {
		tb.Fatalf("output has %d extra events, first %q", len(out)-j, out[j].Raw)
	}
}
