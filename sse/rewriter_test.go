package sse

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// rewrite runs the events of in through a Rewriter and returns the output
// and, per input event, whether it was kept and carried content.
func rewrite(rw *Rewriter, in []byte) (out []byte, kept, content []bool) {
	var sc Scanner
	sc.Reset(bytes.NewReader(in))
	for {
		e, err := sc.Next()
		if err != nil {
			return out, kept, content
		}
		var k bool
		out, k = rw.Append(out, e)
		kept = append(kept, k)
		content = append(content, rw.HasContent())
	}
}

func TestRewriterChunks(t *testing.T) {
	f := func(prefix, model string, hide bool, in, want string) {
		t.Helper()
		var rw Rewriter
		rw.Reset(prefix, model, hide)
		got, _, _ := rewrite(&rw, []byte(in))
		if string(got) != want {
			t.Fatalf("prefix %q model %q hide %v\nin:   %q\ngot:  %q\nwant: %q", prefix, model, hide, in, got, want)
		}
	}
	chat := func(idx, content string) string {
		return `data: {"model":"up","choices":[{"index":` + idx + `,"delta":{"content":` + content + `}}]}` + "\n\n"
	}
	// Nothing to do: bytes pass untouched.
	f("", "", false, chat("0", `"a"`), chat("0", `"a"`))
	// The prefix goes into the first non-empty content of each choice,
	// once; null and "" do not count.
	f(">", "", false, chat("0", `null`)+chat("0", `""`)+chat("0", `"a"`)+chat("0", `"b"`),
		chat("0", `null`)+chat("0", `""`)+chat("0", `">a"`)+chat("0", `"b"`))
	f(">", "", false, chat("0", `"a"`)+chat("1", `"b"`)+chat("0", `"c"`)+chat("1", `"d"`),
		chat("0", `">a"`)+chat("1", `">b"`)+chat("0", `"c"`)+chat("1", `"d"`))
	// Two choices in one chunk; without "index" the position counts.
	f(">", "", false, `data: {"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}`+"\n\n"+
		`data: {"choices":[{"index":1,"delta":{"content":"c"}},{"index":2,"delta":{"content":"d"}}]}`+"\n\n",
		`data: {"choices":[{"delta":{"content":">a"}},{"delta":{"content":">b"}}]}`+"\n\n"+
			`data: {"choices":[{"index":1,"delta":{"content":"c"}},{"index":2,"delta":{"content":">d"}}]}`+"\n\n")
	// Completions put the text in the choice.
	f(">", "", false, `data: {"choices":[{"text":"a","index":0}]}`+"\n\n",
		`data: {"choices":[{"text":">a","index":0}]}`+"\n\n")
	// The prefix is escaped.
	f("\"\\\n\t\x01é", "", false, chat("0", `"a"`), chat("0", `"\"\\\n\t\u0001éa"`))
	// Model: the top-level one only.
	f("", "asked", false, chat("0", `"a"`), `data: {"model":"asked","choices":[{"index":0,"delta":{"content":"a"}}]}`+"\n\n")
	f("", "asked", false, `data: {"id":"x","meta":{"model":"inner"}}`+"\n\n", `data: {"id":"x","meta":{"model":"inner"}}`+"\n\n")
	f("", "up", false, chat("0", `"a"`), chat("0", `"a"`))
	f("", `q"x`, false, `data: {"model" : null}`+"\n\n", `data: {"model" : "q\"x"}`+"\n\n")
	// A changed CRLF event is framed with LF; its event: line stays.
	f("", "m", false, "event: x\r\ndata: {\"model\":\"a\"}\r\n\r\n", "event: x\ndata: {\"model\":\"m\"}\n\n")
	// A payload of several data: lines keeps them.
	f("", "m", false, "data: {\ndata: \"model\":\"a\"\ndata: }\n\n", "data: {\ndata: \"model\":\"m\"\ndata: }\n\n")
	// Usage-only chunks are hidden only when asked, and only when choices
	// is empty and usage is not null.
	usage := `data: {"choices":[],"usage":{"total_tokens":3}}` + "\n\n"
	f("", "", true, usage, "")
	f("", "", false, usage, usage)
	f("", "", true, `data: {"choices":[],"usage":null}`+"\n\n", `data: {"choices":[],"usage":null}`+"\n\n")
	f("", "", true, `data: {"choices":[{"delta":{}}],"usage":{"total_tokens":3}}`+"\n\n",
		`data: {"choices":[{"delta":{}}],"usage":{"total_tokens":3}}`+"\n\n")
	f("", "", true, `data: {"choices":[]}`+"\n\n", `data: {"choices":[]}`+"\n\n")
	// Not a JSON object, [DONE], comments: untouched.
	for _, in := range []string{
		"data: [DONE]\n\n", ": ping\n\n", "data: \n\n", "data: nope\n\n", "data: [1]\n\n",
		`data: {"model":"a"` + "\n\n", `data: {"model":"a"}x` + "\n\n", `data: {"model":tru}` + "\n\n",
		`data: {"model":"a",}` + "\n\n", `data: {"model":01}` + "\n\n", `data: {"model":1.}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"a"}}],"model":"a"]` + "\n\n",
	} {
		f(">", "m", true, in, in)
	}
	// The last of duplicate keys counts, as for encoding/json.
	f(">", "", false, `data: {"choices":[{"delta":{"content":"a","content":null}}]}`+"\n\n",
		`data: {"choices":[{"delta":{"content":"a","content":null}}]}`+"\n\n")
	f(">", "", false, `data: {"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}`+"\n\n",
		`data: {"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":">b"}}]}`+"\n\n")
	// Escaped keys are keys too.
	f(">", "m", false, `data: {"mod\u0065l":"a","choices":[{"delta":{"c\u006fntent":"a"}}]}`+"\n\n",
		`data: {"mod\u0065l":"m","choices":[{"delta":{"c\u006fntent":">a"}}]}`+"\n\n")
}

func TestRewriterHasContent(t *testing.T) {
	f := func(payload string, want bool) {
		t.Helper()
		var rw Rewriter
		rw.Reset("", "", false)
		rw.Append(nil, Event{Raw: []byte("data: " + payload + "\n\n"), Data: []byte(payload)})
		if rw.HasContent() != want {
			t.Fatalf("HasContent(%s) = %v, want %v", payload, !want, want)
		}
	}
	f(`{"choices":[{"delta":{"content":"a"}}]}`, true)
	f(`{"choices":[{"text":"a"}]}`, true)
	f(`{"choices":[{"delta":{"reasoning_content":"a"}}]}`, true)
	f(`{"choices":[{"delta":{"reasoning":"a"}}]}`, true)
	f(`{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}`, true)
	f(`{"choices":[{"delta":{"role":"assistant"}},{"delta":{"content":"a"}}]}`, true)
	f(`{"choices":[{"delta":{"content":""}}]}`, false)
	f(`{"choices":[{"delta":{"content":null,"reasoning_content":""}}]}`, false)
	f(`{"choices":[{"delta":{"tool_calls":null}}]}`, false)
	f(`{"choices":[{"delta":{"tool_calls":[]}}]}`, false)
	f(`{"choices":[],"usage":{"total_tokens":1}}`, false)
	f(`[DONE]`, false)
	f(`{"choices":[{"delta":{"content":"a"}}]`, false)
}

func TestRewriterRecordings(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			var rw Rewriter
			rw.Reset("", "", false)
			out, _, _ := rewrite(&rw, s.data)
			if !bytes.Equal(out, s.data) {
				t.Fatalf("with nothing to change the stream was altered")
			}
			for _, c := range []struct {
				prefix, model string
				hide          bool
			}{
				{"[bot] ", "", false},
				{"", "my-model", false},
				{"", "", true},
				{"「前缀」\"q\"\\\n", "my/\"model\"", true},
			} {
				rw.Reset(c.prefix, c.model, c.hide)
				out, _, _ := rewrite(&rw, s.data)
				in := scanAll(t, bytes.NewReader(s.data))
				checkRewritten(t, newOracle(t, c.prefix, c.model, c.hide), in, scanAll(t, bytes.NewReader(out)), true)
			}
		})
	}
}

func TestRewriterPrefixRoundTrip(t *testing.T) {
	for _, prefix := range []string{
		`"quoted"`, `back\slash`, "new\nline\r\n", "tab\t", "ctl\x00\x1f\x7f", "ünïcödé 中文 🙂", "</script>&", "bad\xffutf8",
	} {
		var rw Rewriter
		rw.Reset(prefix, "", false)
		out, _, _ := rewrite(&rw, readTestdata(t, "vllm-chat.sse"))
		evs := scanAll(t, bytes.NewReader(out))
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string }
			}
		}
		// The first chunk has content "", the second "1".
		if err := json.Unmarshal([]byte(evs[1].Data), &chunk); err != nil {
			t.Fatalf("prefix %q: %s in %s", prefix, err, evs[1].Data)
		}
		want := strings.ToValidUTF8(prefix, "\ufffd") + "1"
		if got := chunk.Choices[0].Delta.Content; got != want {
			t.Fatalf("content %q, want %q", got, want)
		}
	}
}

func TestRewriterUsageChunks(t *testing.T) {
	// The usage-only chunk of each recording is hidden when asked and kept
	// otherwise; chunks that carry usage next to choices stay.
	f := func(name string, wantHidden int) {
		t.Helper()
		in := readTestdata(t, name)
		for _, hide := range []bool{false, true} {
			var rw Rewriter
			rw.Reset("", "", hide)
			out, kept, _ := rewrite(&rw, in)
			hidden := 0
			for _, k := range kept {
				if !k {
					hidden++
				}
			}
			want := 0
			if hide {
				want = wantHidden
			}
			if hidden != want {
				t.Fatalf("%s hide=%v: %d hidden, want %d", name, hide, hidden, want)
			}
			if got := bytes.Count(out, []byte(`"choices":[],"usage":{`)); got != wantHidden-want {
				t.Fatalf("%s hide=%v: %d usage-only chunks in the output", name, hide, got)
			}
		}
	}
	f("openai-chat-usage.sse", 1)
	f("openai-tool-call-usage.sse", 1)
	f("openai-tool-calls-parallel.sse", 1)
	f("vllm-chat.sse", 1)
	f("deepseek-reasoning-tool-call.sse", 0)
	f("openrouter-comments-error.sse", 0)
	f("azure-chat-filters.sse", 0)
}
