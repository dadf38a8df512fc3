package logsink

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// refStream is an independent, slow assembly of a stream with encoding/json,
// the oracle for the parsers.
type refStream struct {
	choices map[int]*refChoice
	usage   map[string]any
	err     any
}

type refChoice struct {
	content, reasoningContent, reasoning, text string
	hasContent                                 bool
	finish                                     *string
	calls                                      map[int]*refCall
}

type refCall struct{ id, name, args string }

func refAssemble(t testing.TB, ndjson []byte) refStream {
	t.Helper()
	ref := refStream{choices: map[int]*refChoice{}}
	for _, line := range bytes.Split(ndjson, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if u, ok := m["usage"].(map[string]any); ok {
			ref.usage = u
		}
		if e, ok := m["error"]; ok && e != nil {
			ref.err = e
		}
		chs, _ := m["choices"].([]any)
		for _, c := range chs {
			cm := c.(map[string]any)
			idx := 0
			if f, ok := cm["index"].(float64); ok {
				idx = int(f)
			}
			rc := ref.choices[idx]
			if rc == nil {
				rc = &refChoice{calls: map[int]*refCall{}}
				ref.choices[idx] = rc
			}
			if s, ok := cm["text"].(string); ok {
				rc.text += s
			}
			if s, ok := cm["finish_reason"].(string); ok {
				rc.finish = &s
			}
			d, _ := cm["delta"].(map[string]any)
			if s, ok := d["content"].(string); ok {
				rc.content += s
				rc.hasContent = true
			}
			if s, ok := d["reasoning_content"].(string); ok {
				rc.reasoningContent += s
			}
			if s, ok := d["reasoning"].(string); ok {
				rc.reasoning += s
			}
			tcs, _ := d["tool_calls"].([]any)
			for _, tc := range tcs {
				tm := tc.(map[string]any)
				ti := int(tm["index"].(float64))
				call := rc.calls[ti]
				if call == nil {
					call = &refCall{}
					rc.calls[ti] = call
				}
				if s, _ := tm["id"].(string); s != "" && call.id == "" {
					call.id = s
				}
				fn, _ := tm["function"].(map[string]any)
				if s, _ := fn["name"].(string); s != "" && call.name == "" {
					call.name = s
				}
				if s, ok := fn["arguments"].(string); ok {
					call.args += s
				}
			}
		}
	}
	return ref
}

// answer is the assembled object as a caller would decode it.
type answer struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Message      *struct {
			Role             string  `json:"role"`
			Content          *string `json:"content"`
			ReasoningContent string  `json:"reasoning_content"`
			ToolCalls        []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
	} `json:"choices"`
	Usage map[string]any `json:"usage"`
	Error any            `json:"error"`
}

// checkAgainstRef compares an assembled body with the oracle.
func checkAgainstRef(t *testing.T, body []byte, ref refStream, chat bool) answer {
	t.Helper()
	var got answer
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("assembled body is not the expected object: %v\n%s", err, body)
	}
	wantObject := "text_completion"
	if chat {
		wantObject = "chat.completion"
	}
	if got.Object != wantObject {
		t.Fatalf("object %q, want %q", got.Object, wantObject)
	}
	idxs := make([]int, 0, len(ref.choices))
	for i := range ref.choices {
		idxs = append(idxs, i)
	}
	sort.Ints(idxs)
	if len(got.Choices) != len(idxs) {
		t.Fatalf("%d choices, want %d", len(got.Choices), len(idxs))
	}
	for k, idx := range idxs {
		rc, gc := ref.choices[idx], got.Choices[k]
		if gc.Index != idx {
			t.Fatalf("choice %d has index %d, want %d", k, gc.Index, idx)
		}
		if !reflect.DeepEqual(gc.FinishReason, rc.finish) {
			t.Fatalf("choice %d finish_reason %v, want %v", idx, deref(gc.FinishReason), deref(rc.finish))
		}
		if !chat {
			if gc.Text == nil || *gc.Text != rc.text {
				t.Fatalf("choice %d text %q, want %q", idx, deref(gc.Text), rc.text)
			}
			continue
		}
		m := gc.Message
		if m == nil || m.Role != "assistant" {
			t.Fatalf("choice %d has no assistant message", idx)
		}
		if rc.hasContent != (m.Content != nil) || (m.Content != nil && *m.Content != rc.content) {
			t.Fatalf("choice %d content %q, want %q", idx, deref(m.Content), rc.content)
		}
		wantReasoning := rc.reasoningContent
		if wantReasoning == "" {
			wantReasoning = rc.reasoning
		}
		if m.ReasoningContent != wantReasoning {
			t.Fatalf("choice %d reasoning_content %q, want %q", idx, m.ReasoningContent, wantReasoning)
		}
		cidx := make([]int, 0, len(rc.calls))
		for i := range rc.calls {
			cidx = append(cidx, i)
		}
		sort.Ints(cidx)
		if len(m.ToolCalls) != len(cidx) {
			t.Fatalf("choice %d has %d tool calls, want %d", idx, len(m.ToolCalls), len(cidx))
		}
		for j, ci := range cidx {
			rcall, gcall := rc.calls[ci], m.ToolCalls[j]
			if gcall.ID != rcall.id || gcall.Function.Name != rcall.name ||
				gcall.Function.Arguments != rcall.args || gcall.Type != "function" {
				t.Fatalf("tool call %d = %+v, want %+v", ci, gcall, *rcall)
			}
		}
	}
	if !reflect.DeepEqual(got.Usage, ref.usage) {
		t.Fatalf("usage %v, want %v", got.Usage, ref.usage)
	}
	if !reflect.DeepEqual(got.Error, ref.err) {
		t.Fatalf("error %v, want %v", got.Error, ref.err)
	}
	return got
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func usageOf(rw *row) [3]int64 {
	u := [3]int64{-1, -1, -1}
	if rw.d.set&usagePrompt != 0 {
		u[0] = rw.d.prompt
	}
	if rw.d.set&usageCompletion != 0 {
		u[1] = rw.d.completion
	}
	if rw.d.set&usageTotal != 0 {
		u[2] = rw.d.total
	}
	return u
}

var noUsage = [3]int64{-1, -1, -1}

func TestStreamAssembly(t *testing.T) {
	for _, pn := range parserNames() {
		t.Run(pn, func(t *testing.T) {
			f := func(file string, ep Endpoint, wantTools string, wantUsage [3]int64, wantErr string) {
				t.Helper()
				chunks := ndjsonFromSSE(t, file)
				r := &Record{Endpoint: ep, Stream: true, Chunks: chunks}
				rw := deriveWith(pn, r, 0)
				got := checkAgainstRef(t, rw.respBody, refAssemble(t, chunks), ep != Completions)
				if string(rw.tools) != wantTools {
					t.Fatalf("%s: tool_calls %s, want %s", file, rw.tools, wantTools)
				}
				if rw.d.hasTools != (wantTools != "[]") {
					t.Fatalf("%s: has_tools %v", file, rw.d.hasTools)
				}
				if u := usageOf(rw); u != wantUsage {
					t.Fatalf("%s: usage %v, want %v", file, u, wantUsage)
				}
				if wantErr == "" && got.Error != nil || wantErr != "" && !strings.Contains(string(rw.respBody), wantErr) {
					t.Fatalf("%s: error %v, want %q", file, got.Error, wantErr)
				}
				if got.ID == "" || got.Model == "" || got.Created == 0 {
					t.Fatalf("%s: id %q model %q created %d", file, got.ID, got.Model, got.Created)
				}
				if rw.truncated {
					t.Fatalf("%s: marked truncated", file)
				}
			}
			// tool calls merged by index, usage from the usage-only chunk
			f("openai-tool-calls-parallel.sse", Chat, `["get_weather","get_product_name"]`, [3]int64{417, 44, 461}, "")
			f("openai-tool-call-usage.sse", Chat, `["get_capital"]`, [3]int64{53, 15, 68}, "")
			// reasoning_content, a tool call, usage on the finish chunk
			f("deepseek-reasoning-tool-call.sse", Chat, `["weather"]`, [3]int64{339, 83, 422}, "")
			f("openai-chat-usage.sse", Chat, "[]", [3]int64{78, 9, 87}, "")
			f("vllm-chat.sse", Chat, "[]", [3]int64{46, 14, 60}, "")
			f("zai-glm-reasoning-content.sse", Chat, "[]", [3]int64{13, 564, 577}, "")
			// Azure's first chunk has "id":"" and "created":0
			f("azure-chat-filters.sse", Chat, "[]", noUsage, "")
			f("azure-chat-filters-2024.sse", Chat, "[]", noUsage, "")
			// mid-stream errors are kept as "error"
			f("groq-event-error.sse", Chat, "[]", noUsage, `"code":"tool_use_failed"`)
			f("openrouter-comments-error.sse", Chat, "[]", [3]int64{43, 10, 53}, `"error":{"code":400,"message":"Token limit reached"}`)
			f("openai-completions.sse", Completions, "[]", noUsage, "")
		})
	}
}

// twoChoices makes a 2-choice stream from a recording: every chunk is
// followed by a copy for choice 1 whose content is upper-cased, and the very
// first chunk of choice 1 comes before any of choice 0.
func twoChoices(t testing.TB, ndjson []byte) []byte {
	t.Helper()
	var out [][]byte
	for _, line := range bytes.Split(bytes.TrimSpace(ndjson), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			out = append(out, line)
			continue
		}
		chs, _ := m["choices"].([]any)
		if len(chs) == 0 {
			out = append(out, line)
			continue
		}
		c1 := map[string]any{}
		for k, v := range chs[0].(map[string]any) {
			c1[k] = v
		}
		c1["index"] = 1
		if d, ok := c1["delta"].(map[string]any); ok {
			d1 := map[string]any{}
			for k, v := range d {
				d1[k] = v
			}
			if s, ok := d1["content"].(string); ok {
				d1["content"] = strings.ToUpper(s)
			}
			c1["delta"] = d1
		}
		m1 := map[string]any{}
		for k, v := range m {
			m1[k] = v
		}
		m1["choices"] = []any{c1}
		b1, err := json.Marshal(m1)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == 0 {
			out = append(out, b1, line)
		} else {
			out = append(out, line, b1)
		}
	}
	return append(bytes.Join(out, []byte("\n")), '\n')
}

func TestStreamAssemblyTwoChoices(t *testing.T) {
	chunks := twoChoices(t, ndjsonFromSSE(t, "openai-chat-usage.sse"))
	ref := refAssemble(t, chunks)
	if len(ref.choices) != 2 || ref.choices[1].content != strings.ToUpper(ref.choices[0].content) || ref.choices[0].content == "" {
		t.Fatalf("crafted stream is not two choices: %+v", ref.choices)
	}
	for _, pn := range parserNames() {
		rw := deriveWith(pn, &Record{Endpoint: Chat, Stream: true, Chunks: chunks}, 0)
		got := checkAgainstRef(t, rw.respBody, ref, true)
		if got.Choices[0].Index != 0 || got.Choices[1].Index != 1 {
			t.Fatalf("%s: choices not in index order", pn)
		}
		if u := usageOf(rw); u != [3]int64{78, 9, 87} {
			t.Fatalf("%s: usage %v", pn, u)
		}
	}
}

// A stream cut short by the relay ends in half a line: the lines before it
// still assemble, and the record is marked truncated.
func TestStreamAssemblyCut(t *testing.T) {
	full := ndjsonFromSSE(t, "openai-tool-calls-parallel.sse")
	cut := full[:len(full)/2]
	whole := cut[:bytes.LastIndexByte(cut, '\n')+1]
	for _, pn := range parserNames() {
		rw := deriveWith(pn, &Record{Endpoint: Chat, Stream: true, Chunks: cut, ChunksCut: true}, 0)
		checkAgainstRef(t, rw.respBody, refAssemble(t, whole), true)
		if !rw.truncated {
			t.Fatalf("%s: a cut stream is not marked truncated", pn)
		}
	}
}

// Tool calls without an index (some upstreams) start a new call on a new id
// and continue the last one otherwise.
func TestStreamToolCallsWithoutIndex(t *testing.T) {
	chunks := []byte(`{"id":"x","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"q\":"}}]}}]}
{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"1}"}}]}}]}
{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}
{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}
`)
	want := `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[` +
		`{"id":"a","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}},` +
		`{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`
	for _, pn := range parserNames() {
		rw := deriveWith(pn, &Record{Endpoint: Chat, Stream: true, Chunks: chunks}, 0)
		if string(rw.respBody) != want {
			t.Fatalf("%s:\n got %s\nwant %s", pn, rw.respBody, want)
		}
		if string(rw.tools) != `["f","g"]` {
			t.Fatalf("%s: tools %s", pn, rw.tools)
		}
	}
}

func TestRequestFlags(t *testing.T) {
	for _, pn := range parserNames() {
		f := func(body string, wantTools, wantMulti bool) {
			t.Helper()
			rw := deriveWith(pn, &Record{Endpoint: Chat, RequestBody: []byte(body)}, 0)
			if rw.d.hasTools != wantTools || rw.d.multimodal != wantMulti {
				t.Fatalf("%s: %s\nhas_tools %v multimodal %v, want %v %v", pn, body, rw.d.hasTools, rw.d.multimodal, wantTools, wantMulti)
			}
		}
		f(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, false, false)
		f(`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, true, false)
		f(`{"model":"m","messages":[],"tools":[]}`, false, false)
		f(`{"model":"m","messages":[],"tools":null}`, false, false)
		f(`{"model":"m","messages":[],"functions":[{"name":"f"}]}`, true, false)
		f(`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`, false, false)
		f(`{"messages":[{"role":"user","content":"x"},{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`, false, true)
		f(`{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, false, true)
		f(`{"messages":[{"role":"user","content":[{"text":"no type"}]}]}`, false, true)
		// a "text" part whose key comes twice keeps the last value, in both parsers
		f(`{"messages":[{"role":"user","content":[{"type":"image_url","type":"text"}]}]}`, false, false)
		f(`{"tools":[{"type":"function"}],"messages":[{"content":[{"type":"file"}]}]}`, true, true)
		f(`not json`, false, false)
		f(``, false, false)
		f(`[1,2]`, false, false)
	}
	// only chat requests are read
	rw := deriveWith("fastjson", &Record{Endpoint: Embeddings, RequestBody: []byte(`{"tools":[1]}`)}, 0)
	if rw.d.hasTools {
		t.Fatal("an embeddings request is read for tools")
	}
	// what the proxy found is taken as it is: the body is not read again
	for _, tc := range []struct{ tools, multi bool }{{true, true}, {false, false}, {true, false}, {false, true}} {
		body := `{"tools":[{"type":"function"}],"messages":[{"content":[{"type":"file"}]}]}`
		rw := deriveWith("fastjson", &Record{Endpoint: Chat, RequestBody: []byte(body),
			RequestScanned: true, RequestTools: tc.tools, RequestMultimodal: tc.multi}, 0)
		if rw.d.hasTools != tc.tools || rw.d.multimodal != tc.multi {
			t.Fatalf("scanned %+v: has_tools %v multimodal %v", tc, rw.d.hasTools, rw.d.multimodal)
		}
	}
}

func TestAnswerColumns(t *testing.T) {
	for _, pn := range parserNames() {
		f := func(ep Endpoint, body, wantTools string, wantUsage [3]int64) {
			t.Helper()
			rw := deriveWith(pn, &Record{Endpoint: ep, ResponseBody: []byte(body)}, 0)
			if string(rw.tools) != wantTools || usageOf(rw) != wantUsage {
				t.Fatalf("%s: %s\ntools %s usage %v, want %s %v", pn, body, rw.tools, usageOf(rw), wantTools, wantUsage)
			}
			if string(rw.respBody) != body {
				t.Fatalf("%s: response_body is not the answer as given", pn)
			}
		}
		f(Chat, smallAnswer, "[]", [3]int64{61, 52, 113})
		f(Chat, `{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"get_weather","arguments":"{}"}},{"id":"2","type":"function","function":{"name":"say \"hi\"","arguments":"{}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}`,
			`["get_weather","say \"hi\""]`, [3]int64{5, 6, 11})
		f(Chat, `{"choices":[{"message":{"function_call":{"name":"legacy","arguments":"{}"}}}]}`, `["legacy"]`, noUsage)
		// embeddings give no completion_tokens: that one stays NULL
		f(Embeddings, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"e5","usage":{"prompt_tokens":8,"total_tokens":8}}`, "[]", [3]int64{8, -1, 8})
		// a count that is not an integer is no count
		f(Chat, `{"usage":{"prompt_tokens":1.5,"completion_tokens":"2","total_tokens":null}}`, "[]", noUsage)
		f(Chat, `{"error":{"message":"bad"}}`, "[]", noUsage)
		f(Chat, `upstream said no`, "[]", noUsage)
	}
}

func TestTrimDone(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := string(trimDone([]byte(in))); got != want {
			t.Fatalf("trimDone(%q) = %q, want %q", in, got, want)
		}
	}
	f("{}\n[DONE]\n", "{}")
	f("{}\n[DONE]", "{}")
	f("[DONE]\n", "")
	f("{}\n", "{}")
	f(`{"a":"[DONE]"}`, `{"a":"[DONE]"}`)
	f("", "")
}
