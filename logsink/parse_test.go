package logsink

import (
	"bytes"
	"encoding/json"
	"testing"
)

// agreeRecords are the records both parsers must derive identically: every
// recorded stream read as chat and as completions, the same chunks as a
// non-stream answer line by line, and request bodies.
func agreeRecords(t testing.TB) []*Record {
	var recs []*Record
	for _, name := range streamFiles(t) {
		chunks := ndjsonFromSSE(t, name)
		recs = append(recs,
			&Record{Endpoint: Chat, Stream: true, Chunks: chunks},
			&Record{Endpoint: Completions, Stream: true, Chunks: chunks},
			&Record{Endpoint: Chat, Stream: true, Chunks: twoChoices(t, chunks)},
			&Record{Endpoint: Chat, Stream: true, Chunks: chunks[:len(chunks)*2/3], ChunksCut: true},
		)
		for _, line := range bytes.Split(chunks, []byte("\n")) {
			recs = append(recs, &Record{Endpoint: Chat, ResponseBody: line})
		}
	}
	for _, body := range []string{smallRequest, smallAnswer, string(answer6KB(t)),
		`{"tools":[{"type":"function"}],"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url"}]}]}`,
		`{"messages":[{"content":[{"type":"text"}]}],"functions":[]}`,
	} {
		recs = append(recs, &Record{Endpoint: Chat, RequestBody: []byte(body), ResponseBody: []byte(body)})
	}
	return recs
}

// derivedEqual compares what two parsers derived from one record.
func derivedEqual(a, b *row) bool {
	return a.d.usage == b.d.usage && a.d.hasTools == b.d.hasTools && a.d.multimodal == b.d.multimodal &&
		bytes.Equal(a.tools, b.tools) && bytes.Equal(a.respBody, b.respBody) && a.truncated == b.truncated
}

// TestParsersAgree holds every parser that runs here to the others and to
// the encoding/json reference assembly (refAssemble): on arm64, where only
// the portable parser exists, the reference is what it is held to.
func TestParsersAgree(t *testing.T) {
	names := parserNames()
	recs := agreeRecords(t)
	// One deriver per parser, reused over all records, as the writer does.
	dvs := make([]deriver, len(names))
	for i, n := range names {
		dvs[i] = deriver{p: parsers[n]()}
	}
	for i, r := range recs {
		var first row
		dvs[0].derive(&first, r)
		if r.Stream && !json.Valid(first.respBody) {
			t.Fatalf("record %d: assembled body is not JSON: %s", i, first.respBody)
		}
		if r.Stream && !r.ChunksCut {
			checkAgainstRef(t, first.respBody, refAssemble(t, r.Chunks), r.Endpoint != Completions)
		}
		for k := 1; k < len(names); k++ {
			var other row
			dvs[k].derive(&other, r)
			if !derivedEqual(&first, &other) {
				t.Fatalf("record %d: %s and %s differ:\n%s: usage %+v tools %s has_tools %v multimodal %v\n%s\n%s: usage %+v tools %s has_tools %v multimodal %v\n%s",
					i, names[0], names[k],
					names[0], first.d.usage, first.tools, first.d.hasTools, first.d.multimodal, first.respBody,
					names[k], other.d.usage, other.tools, other.d.hasTools, other.d.multimodal, other.respBody)
			}
		}
	}
}

func TestParserName(t *testing.T) {
	n := ParserName()
	if _, ok := parsers[n]; !ok {
		t.Fatalf("ParserName() = %q, not a parser compiled in", n)
	}
}

// FuzzParsersAgree feeds arbitrary chunk lines and bodies to both parsers:
// neither may panic, a stream always assembles into valid JSON, and on valid
// JSON input they agree.
func FuzzParsersAgree(f *testing.F) {
	// Seeds are a few lines each: the fuzzing engine crawls on inputs of
	// several kilobytes.
	for _, name := range []string{"openai-tool-calls-parallel.sse", "deepseek-reasoning-tool-call.sse",
		"openrouter-comments-error.sse", "openai-completions.sse"} {
		lines := bytes.SplitAfter(ndjsonFromSSE(f, name), []byte("\n"))
		f.Add(bytes.Join(lines[:3], nil))
		f.Add(bytes.Join(lines[len(lines)-3:], nil))
	}
	f.Add([]byte(smallRequest))
	f.Add([]byte(`{"choices":[{"index":1,"delta":{"content":"\u00e9\ud83d\ude00\t","tool_calls":[{"index":3,"function":{"arguments":"x"}}]}}],"usage":{"a":1e400,"b":-0,"c":1.5e-7,"d":123456789012345678901}}`))
	names := parserNames()
	f.Fuzz(func(t *testing.T, data []byte) {
		var rows []*row
		for _, n := range names {
			for _, ep := range []Endpoint{Chat, Completions} {
				rw := deriveWith(n, &Record{Endpoint: ep, Stream: true, Chunks: data}, 0)
				if len(trimDone(data)) > 0 && !json.Valid(rw.respBody) {
					t.Fatalf("%s: assembled body is not JSON: %s", n, rw.respBody)
				}
			}
			rows = append(rows, deriveWith(n, &Record{Endpoint: Chat, Stream: true, Chunks: data, RequestBody: data}, 0),
				deriveWith(n, &Record{Endpoint: Chat, ResponseBody: data}, 0))
		}
		if len(names) < 2 || !allLinesValid(data) {
			return
		}
		for i := 0; i < 2; i++ {
			if !derivedEqual(rows[i], rows[2+i]) {
				t.Fatalf("parsers differ on %q:\n%s\n%s", data, rows[i].respBody, rows[2+i].respBody)
			}
		}
	})
}

// allLinesValid reports whether every non-blank line is a JSON object the
// parsers must agree on: valid JSON, no \u escapes (a lone surrogate decodes
// differently), every number within float64 (simdjson-go rejects 1e400,
// fastjson reads it as +Inf).
func allLinesValid(data []byte) bool {
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) || line[0] != '{' || bytes.Contains(line, []byte(`\u`)) {
			return false
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil || !numbersFinite(v) {
			return false
		}
	}
	return true
}

func numbersFinite(v any) bool {
	switch v := v.(type) {
	case json.Number:
		_, err := v.Float64()
		return err == nil
	case map[string]any:
		for _, e := range v {
			if !numbersFinite(e) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !numbersFinite(e) {
				return false
			}
		}
	}
	return true
}
