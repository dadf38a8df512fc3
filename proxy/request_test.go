package proxy

import (
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// upstreamBody parses body as the caller's request and returns what client
// c would be sent routing on model.
func upstreamBody(t testing.TB, ep logsink.Endpoint, body string, c configs.Client, model string) string {
	t.Helper()
	var r request
	if e := r.parse([]byte(body), ep); e != nil {
		t.Fatalf("parse %s: %s", body, e.Message)
	}
	if model == "" {
		model = string(r.model)
	}
	return string(r.appendUpstreamBody(nil, &c, []byte(model)))
}

func TestUpstreamBody(t *testing.T) {
	f := func(c configs.Client, in, want string) {
		t.Helper()
		if got := upstreamBody(t, logsink.Chat, in, c, ""); got != want {
			t.Errorf("body for %s\n got: %s\nwant: %s", in, got, want)
		}
	}
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	plain := configs.Client{StreamUsage: true}
	// Unknown fields and their bytes pass untouched.
	f(plain, `{"model":"m",`+msgs+`,"x":{"y":[1,2.50,"\u00e9"]},"temperature":0.70}`,
		`{"model":"m",`+msgs+`,"x":{"y":[1,2.50,"\u00e9"]},"temperature":0.70}`)
	// Messages gptapi did not rewrite (no preprocessing here) keep their
	// bytes, escapes included.
	f(plain, `{"model":"m","messages":[{"role":"user","content":"\u00e9 \/ \"q\""}]}`,
		`{"model":"m","messages":[{"role":"user","content":"\u00e9 \/ \"q\""}]}`)
	// Model rewrite.
	f(configs.Client{Model: "Qwen/Qwen2-72B"}, `{"model":"qwen",`+msgs+`}`, `{"model":"Qwen/Qwen2-72B",`+msgs+`}`)
	// Clamp both token fields above the limit; keep them below it.
	f(configs.Client{MaxTokens: 100}, `{"model":"m",`+msgs+`,"max_tokens":4096,"max_completion_tokens":500}`,
		`{"model":"m",`+msgs+`,"max_tokens":100,"max_completion_tokens":100}`)
	f(configs.Client{MaxTokens: 100}, `{"model":"m",`+msgs+`,"max_tokens":50}`, `{"model":"m",`+msgs+`,"max_tokens":50}`)
	// No clamp configured: untouched.
	f(plain, `{"model":"m",`+msgs+`,"max_tokens":999999}`, `{"model":"m",`+msgs+`,"max_tokens":999999}`)
	// Stop merge: caller's first, then client's, duplicates removed.
	f(configs.Client{Stop: []string{"<|im_end|>", "END"}}, `{"model":"m",`+msgs+`,"stop":["END","x"]}`,
		`{"model":"m",`+msgs+`,"stop":["END","x","<|im_end|>"]}`)
	f(configs.Client{Stop: []string{"b"}}, `{"model":"m",`+msgs+`,"stop":"a"}`, `{"model":"m",`+msgs+`,"stop":["a","b"]}`)
	f(configs.Client{Stop: []string{"b"}}, `{"model":"m",`+msgs+`}`, `{"model":"m",`+msgs+`,"stop":["b"]}`)
	// A merged stop list is JSON whatever its stops hold (Go's quoting
	// would write \a and \x01).
	f(configs.Client{Stop: []string{"\x01\""}}, `{"model":"m",`+msgs+`,"stop":"\u0007\"\\"}`,
		`{"model":"m",`+msgs+`,"stop":["\u0007\"\\","\u0001\""]}`)
	// Neither side has stops: left as sent.
	f(plain, `{"model":"m",`+msgs+`,"stop":null}`, `{"model":"m",`+msgs+`,"stop":null}`)
	f(plain, `{"model":"m",`+msgs+`}`, `{"model":"m",`+msgs+`}`)
	// Streams: usage asked for when the caller did not; caller's options kept.
	f(configs.Client{StreamUsage: true}, `{"model":"m",`+msgs+`,"stream":true}`,
		`{"model":"m",`+msgs+`,"stream":true,"stream_options":{"include_usage":true}}`)
	f(configs.Client{StreamUsage: true}, `{"model":"m",`+msgs+`,"stream":true,"stream_options":{"continuous_usage_stats":true}}`,
		`{"model":"m",`+msgs+`,"stream":true,"stream_options":{"continuous_usage_stats":true,"include_usage":true}}`)
	f(configs.Client{StreamUsage: false}, `{"model":"m",`+msgs+`,"stream":true}`, `{"model":"m",`+msgs+`,"stream":true}`)
	f(configs.Client{StreamUsage: true}, `{"model":"m",`+msgs+`,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m",`+msgs+`,"stream":true,"stream_options":{"include_usage":true}}`)
	// A name written with escapes is the name: clamped, merged, streamed,
	// routed, as the upstream's parser will read it.
	f(configs.Client{MaxTokens: 100}, `{"model":"m",`+msgs+`,"max\u005ftokens":4096}`, `{"model":"m",`+msgs+`,"max\u005ftokens":100}`)
	f(configs.Client{Stop: []string{"b"}}, `{"model":"m",`+msgs+`,"st\u006fp":"a"}`, `{"model":"m",`+msgs+`,"st\u006fp":["a","b"]}`)
	f(configs.Client{StreamUsage: true}, `{"model":"m",`+msgs+`,"str\u0065am":true,"stream_options":{"include\u005fusage":false}}`,
		`{"model":"m",`+msgs+`,"str\u0065am":true,"stream_options":{"include_usage":true}}`)
	f(configs.Client{Model: "served"}, `{"mod\u0065l":"m",`+msgs+`}`, `{"mod\u0065l":"served",`+msgs+`}`)
}

// Embeddings and rerank generate no text: the client's stops and token
// limit are not applied, and the fields pass as any unknown one.
func TestUpstreamBodyNotGenerating(t *testing.T) {
	c := configs.Client{Model: "served", MaxTokens: 10, Stop: []string{"<|im_end|>"}, StreamUsage: true}
	for _, tc := range []struct {
		ep       logsink.Endpoint
		in, want string
	}{
		{logsink.Embeddings, `{"model":"m","input":["a"]}`, `{"model":"served","input":["a"]}`},
		{logsink.Embeddings, `{"model":"m","input":"a","max_tokens":4096,"stop":7}`, `{"model":"served","input":"a","max_tokens":4096,"stop":7}`},
		{logsink.Rerank, `{"model":"m","query":"q","documents":["a"],"max_tokens":"x"}`, `{"model":"served","query":"q","documents":["a"],"max_tokens":"x"}`},
		// The same client on a generating endpoint.
		{logsink.Completions, `{"model":"m","prompt":"p","max_tokens":4096}`, `{"model":"served","prompt":"p","max_tokens":10,"stop":["<|im_end|>"]}`},
	} {
		if got := upstreamBody(t, tc.ep, tc.in, c, ""); got != tc.want {
			t.Errorf("%v body for %s\n got: %s\nwant: %s", tc.ep, tc.in, got, tc.want)
		}
	}
}

// Each attempt starts from the caller's request: a rewrite for one client
// must not leak into the next.
func TestUpstreamBodyAttemptsIndependent(t *testing.T) {
	var r request
	body := `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1000,"stream":true}`
	if e := r.parse([]byte(body), logsink.Chat); e != nil {
		t.Fatal(e.Message)
	}
	first := configs.Client{Model: "other", MaxTokens: 10, Stop: []string{"s"}, StreamUsage: true}
	got1 := string(r.appendUpstreamBody(nil, &first, []byte("m")))
	want1 := `{"model":"other","messages":[{"role":"user","content":"x"}],"max_tokens":10,"stream":true,"stop":["s"],"stream_options":{"include_usage":true}}`
	if got1 != want1 {
		t.Fatalf("first attempt\n got: %s\nwant: %s", got1, want1)
	}
	second := configs.Client{}
	got2 := string(r.appendUpstreamBody(nil, &second, []byte("fallback-model")))
	want2 := `{"model":"fallback-model","messages":[{"role":"user","content":"x"}],"max_tokens":1000,"stream":true}`
	if got2 != want2 {
		t.Fatalf("second attempt\n got: %s\nwant: %s", got2, want2)
	}
}

func TestParseErrors(t *testing.T) {
	f := func(ep logsink.Endpoint, body, wantSubstr string) {
		t.Helper()
		var r request
		e := r.parse([]byte(body), ep)
		if wantSubstr == "" {
			if e != nil {
				t.Errorf("parse %.200s: unexpected error %q", body, e.Message)
			}
			return
		}
		if e == nil {
			t.Errorf("parse %.200s: no error, want one containing %q", body, wantSubstr)
			return
		}
		if e.Status != 400 || e.Type != "invalid_request_error" || !strings.Contains(e.Message, wantSubstr) {
			t.Errorf("parse %.200s: got %d %s %q, want 400 containing %q", body, e.Status, e.Type, e.Message, wantSubstr)
		}
	}
	chat := logsink.Chat
	f(chat, ``, "empty")
	f(chat, `not json`, "not valid JSON")
	f(chat, `[1,2]`, "must be a JSON object")
	f(chat, `{"messages":[{"role":"user","content":"x"}]}`, "'model'")
	f(chat, `{"model":5,"messages":[{"role":"user","content":"x"}]}`, "'model' must be a string")
	f(chat, `{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}`, "'stream' must be a boolean")
	f(chat, `{"model":"m","messages":{}}`, "'messages' must be an array")
	f(chat, `{"model":"m","messages":[]}`, "must not be empty")
	f(chat, `{"model":"m"}`, "'messages'")
	f(chat, `{"model":"m","messages":["x"]}`, "messages[0] must be an object")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}`, "'max_tokens' must be an integer")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"}`, "'max_tokens' must be an integer")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":true}`, "'max_completion_tokens' must be an integer")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":5}`, "'stop'")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"stream":false}`, "")
	f(logsink.Completions, `{"model":"m"}`, "'prompt'")
	f(logsink.Completions, `{"model":"m","prompt":"p"}`, "")
	f(logsink.Embeddings, `{"model":"m"}`, "'input'")
	f(logsink.Embeddings, `{"model":"m","input":["a"]}`, "")
	f(logsink.Rerank, `{"model":"m","documents":["a"]}`, "'query'")
	f(logsink.Rerank, `{"model":"m","query":"q"}`, "'documents'")
	f(logsink.Rerank, `{"model":"m","query":"q","documents":["a"]}`, "")
	f(logsink.Embeddings, `{"model":"m","input":"a","stream":true}`, "not supported")
	// Parsers disagree on which of two names wins, escaped or not.
	f(logsink.Completions, `{"model":"m","prompt":"a","pr\u006fmpt":"b"}`, "'prompt' appears more than once")
	f(logsink.Rerank, `{"model":"m","query":"q","documents":["a"],"documents":["b"]}`, "'documents' appears more than once")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":"x","c\u006fntent":"y"}]}`, "messages[1] has 'content' more than once")
	f(chat, `{"model":"m","messages":[{"role":"user","role":"system","content":"x"}]}`, "messages[0] has 'role' more than once")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x","name":"a","name":"b","x":1,"x":2}]}`, "")
	f(chat, `{"model":"m","mod\u0065l":"big","messages":[{"role":"user","content":"x"}]}`, "'model' appears more than once")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"\u006dax_tokens":9000}`, "'max_tokens' appears more than once")

	// Limits on what a body can make gptapi build (SPEC §3).
	msg := `{"role":"user","content":"x"}`
	f(chat, `{"model":"`+strings.Repeat("m", 256)+`","messages":[`+msg+`]}`, "")
	f(chat, `{"model":"`+strings.Repeat("m", 257)+`","messages":[`+msg+`]}`, "longer than 256 bytes")
	f(chat, `{"model":"m\u00e9","messages":[`+msg+`]}`, "")
	f(chat, `{"model":"m","messages":[`+msg+`],"junk":[`+strings.Repeat("0,", 1<<20)+`0]}`, "")
	f(chat, `{"model":"m","messages":[{"role":"user","content":"x","junk":[`+strings.Repeat("0,", 100000)+`0]}]}`, "'messages' holds 100006 JSON values in 200042 bytes")
	f(chat, `{"model":"m","messages":[`+msg+`],"stop":[`+strings.Repeat(`"",`, 100000)+`""]}`, "'stop' holds 100002 JSON values")
	f(chat, `{"model":"m","messages":[`+strings.Repeat(`{"role":"user","content":""},`, 20000)+msg+`]}`, "")
	f(chat, `{"model":"m","messages":[`+msg+`],"x":`+strings.Repeat("[", 301)+strings.Repeat("]", 301)+`}`, "deeper than 300")
	f(chat, `{"model":"m","messages":[`+msg+`],"x":`+strings.Repeat("[", 1<<20), "deeper than 300")
	f(chat, `{"model":"m","messages":[`+msg+`]`+strings.Repeat(`,"k":0`, 1024)+`}`, "more than 1024 top-level fields")
}

// A body of 16 MiB of small numbers in a field gptapi does not read costs a
// scan and a copy, not a value per number.
func TestParseSmallValuesCheap(t *testing.T) {
	body := zeros(16 << 20)
	var r request
	var out []byte
	allocs := testing.AllocsPerRun(1, func() {
		r.reset()
		if e := r.parse(body, logsink.Chat); e != nil {
			t.Fatal(e.Message)
		}
		out = r.appendUpstreamBody(out[:0], &configs.Client{}, r.model)
	})
	if len(out) != len(body) || r.built > 10 {
		t.Fatalf("upstream body %d bytes of %d, %d values built", len(out), len(body), r.built)
	}
	// The count is process-wide: goroutines other tests left running may
	// add a few. A value per number would be millions.
	if allocs > 1000 {
		t.Fatalf("%v allocations", allocs)
	}
}

func TestErrorBody(t *testing.T) {
	tried := new(triedPath)
	tried.add("fleet-a", []byte("qwen-72b"))
	tried.add("fleet-b", []byte("qwen-72b"))
	tried.add("backup", []byte("gpt-4o-mini"))
	e := allFailed([]byte("qwen-72b"), &attemptError{msg: "backup: timeout", timeout: true}, true, tried)
	if e.Status != 504 {
		t.Errorf("status %d, want 504 after a timeout", e.Status)
	}
	wantTail := `Tried: ["fleet-a/qwen-72b", "fleet-b/qwen-72b", "backup/gpt-4o-mini"]`
	if !strings.HasSuffix(e.Message, wantTail) {
		t.Errorf("message %q does not end with %q", e.Message, wantTail)
	}
	var got struct {
		Error struct {
			Message, Type, Code string
			Param               *string
			Tried               []string
		}
	}
	if err := json.Unmarshal(appendErrorJSON(nil, e), &got); err != nil {
		t.Fatal(err)
	}
	if got.Error.Message != e.Message || got.Error.Type != "upstream_error" || got.Error.Code != "all_upstreams_failed" ||
		got.Error.Param != nil || len(got.Error.Tried) != 3 || got.Error.Tried[2] != "backup/gpt-4o-mini" {
		t.Errorf("error body %+v", got.Error)
	}
	if e := allFailed([]byte("m"), nil, false, tried); e.Status != 502 {
		t.Errorf("status %d, want 502", e.Status)
	}
	// Messages carrying caller text are escaped into valid JSON.
	nf := modelNotFound([]byte("we\"ird\n\x01model\xff"))
	if !json.Valid(appendErrorJSON(nil, nf)) {
		t.Errorf("invalid JSON: %s", appendErrorJSON(nil, nf))
	}
}

func TestRewriteAnswer(t *testing.T) {
	f := func(body, prefix, model, want string) {
		t.Helper()
		var p fastjson.Parser
		var a fastjson.Arena
		var m []byte
		if model != "" {
			m = []byte(model)
		}
		var strs jsonStrings
		got, ok := rewriteAnswer(nil, &p, &a, &strs, []byte(body), prefix, m)
		if !ok {
			got = []byte(body)
		}
		if string(got) != want {
			t.Errorf("rewriteAnswer(%s)\n got: %s\nwant: %s", body, got, want)
		}
	}
	f(`{"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"a"}},{"index":1,"message":{"content":"b"}}]}`, "P: ", "",
		`{"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"P: a"}},{"index":1,"message":{"content":"P: b"}}]}`)
	f(`{"object":"text_completion","choices":[{"text":" t","index":0}]}`, `"q"\`, "",
		`{"object":"text_completion","choices":[{"text":"\"q\"\\ t","index":0}]}`)
	f(`{"model":"up","choices":[{"message":{"content":null,"tool_calls":[]}}]}`, "P", "asked",
		`{"model":"asked","choices":[{"message":{"content":null,"tool_calls":[]}}]}`)
	f(`{"model":"up","choices":[{"message":{"content":"","tool_calls":[]}},{"message":{"content":"t"}}]}`, "P", "",
		`{"model":"up","choices":[{"message":{"content":"","tool_calls":[]}},{"message":{"content":"Pt"}}]}`)
	f(`not json`, "P", "", `not json`)
	// Text with characters Go's quoting writes in its own syntax (\x01,
	// \U000e0067) stays JSON, prefixed and renamed.
	f(`{"model":"up","choices":[{"message":{"content":"\"x\" \u0001 \udb40\udc67"}}]}`, "P\u001b", "a\"\u0007",
		`{"model":"a\"\u0007","choices":[{"message":{"content":"P\u001b\"x\" \u0001 `+"\U000e0067"+`"}}]}`)
}

func FuzzUpstreamBody(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":" hi "},{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":"s","max_tokens":9,"zz":{"a":[1]}}`)
	f.Add(`{"model":"m","messages":[{"role":"assistant","content":"a</think>b<think>c"}],"stream":true,"stream_options":{}}`)
	f.Add(`{"model":"m","messages":[{"role":"user"}],"stop":["a","a"]}`)
	f.Add(`{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":[{"type":"image_url"}]},{"role":"user","content":"c"}],"junk":[0,0,0,0]}`)
	f.Add(`{"model":"m\u0041","messages":[{"role":"user","content":"a"}],"stream_options":{"include_usage":false,"x":1},"stream":true}`)
	// Names written with escapes are the names every parser reads.
	f.Add(`{"model":"m","messages":[{"role":"user","content":"a"}],"max\u005ftokens":9000,"st\u006fp":"q"}`)
	f.Add(`{"model":"m","mod\u0065l":"big","messages":[{"role":"user","content":"a"}]}`)
	c := configs.Client{Model: "mm", MaxTokens: 5, Stop: []string{"a", "z"}, StreamUsage: true}
	f.Fuzz(func(t *testing.T, body string) {
		var r request
		var a fastjson.Arena
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		allocBefore := ms.TotalAlloc
		if e := r.parse([]byte(body), logsink.Chat); e != nil {
			return
		}
		if !preprocess(&r, &a, &allOn) {
			return
		}
		out := r.appendUpstreamBody(nil, &c, []byte("mm"))
		runtime.ReadMemStats(&ms)
		// Memory is linear in the body's size whatever its shape: at most
		// the value budget's floor plus a small multiple of the bytes.
		if got, limit := ms.TotalAlloc-allocBefore, uint64(64*len(body)+1<<20); got > limit {
			t.Fatalf("%d bytes allocated for a %d-byte body (limit %d)", got, len(body), limit)
		}
		// Keys the caller sent that gptapi never rewrites must survive.
		var before map[string]json.RawMessage
		wasValid := json.Unmarshal([]byte(body), &before) == nil
		if !wasValid {
			return
		}
		var after map[string]json.RawMessage
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output is not valid JSON: %v\nin:  %s\nout: %s", err, body, out)
		}
		for k, v := range before {
			switch k {
			case "model", "messages", "max_tokens", "max_completion_tokens", "stop", "stream_options":
				continue
			}
			if !jsonEqual(v, after[k]) {
				t.Fatalf("field %q changed: %s -> %s", k, v, after[k])
			}
		}
		if string(after["model"]) != `"mm"` {
			t.Fatalf("model not rewritten: %s\nin:  %s\nout: %s", after["model"], body, out)
		}
		// What the upstream reads keeps the client's limit and stops.
		for _, k := range []string{"max_tokens", "max_completion_tokens"} {
			var n float64
			if json.Unmarshal(after[k], &n) == nil && n > 5 {
				t.Fatalf("%s %v past the client's 5\nin:  %s\nout: %s", k, n, body, out)
			}
		}
		var stops []string
		if json.Unmarshal(after["stop"], &stops) != nil || !slices.Contains(stops, "a") || !slices.Contains(stops, "z") {
			t.Fatalf("stop %s lacks the client's\nin:  %s\nout: %s", after["stop"], body, out)
		}
	})
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// The proxy hands the record what the request offers (has_tools,
// multimodal), read from its own parse, so the writer need not parse the
// body again; embeddings have neither.
func TestRecordCarriesRequestOffers(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(cannedAnswer)
	})
	sink := newCaptureSink()
	_, addr := startProxy(t, testConfig(up), sink)
	for _, tc := range []struct {
		path, body     string
		scanned, tools bool
		multimodal     bool
	}{
		{"/v1/chat/completions", chatBody, true, false, false},
		{"/v1/chat/completions", `{"model":"qwen-7b","tools":[{"type":"function","function":{"name":"f"}}],` +
			`"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"data:,"}}]}]}`, true, true, true},
		{"/v1/embeddings", `{"model":"qwen-emb","input":"x"}`, false, false, false},
	} {
		if status, _, body := post(t, addr, tc.path, tc.body); status != 200 {
			t.Fatalf("%s: status %d %s", tc.path, status, body)
		}
		rec := sink.wait(t)
		if rec.RequestScanned != tc.scanned || rec.RequestTools != tc.tools || rec.RequestMultimodal != tc.multimodal {
			t.Errorf("%s %s: scanned %v tools %v multimodal %v", tc.path, tc.body, rec.RequestScanned, rec.RequestTools, rec.RequestMultimodal)
		}
	}
}

// FuzzRewriteAnswer: whatever an upstream answers, a rewritten answer is
// JSON; and an answer whose text is any string gets the prefix before it
// and the model renamed.
func FuzzRewriteAnswer(f *testing.F) {
	f.Add(`{"model":"up","choices":[{"index":0,"message":{"content":"a \"q\" \u0001"}}]}`, "a \"q\" \x01", "P\x1b: ")
	f.Add(`{"object":"text_completion","choices":[{"text":"\udb40\udc67","index":0}]}`, "\U000e0067", "\x7f")
	f.Add(`{"model":1,"choices":[{"message":{"content":null}},{"text":"x"},[]]}`, "\xff", "p")
	f.Fuzz(func(t *testing.T, body, text, prefix string) {
		rewrite := func(body string) []byte {
			var p fastjson.Parser
			var a fastjson.Arena
			var strs jsonStrings
			out, ok := rewriteAnswer(nil, &p, &a, &strs, []byte(body), prefix, []byte("asked\u0001"))
			if ok && !json.Valid(out) {
				t.Fatalf("invalid JSON\nin:  %s\nout: %s", body, out)
			}
			return out
		}
		rewrite(body)
		if !utf8.ValidString(prefix) {
			return
		}
		quoted, _ := json.Marshal(text) // what encoding/json reads back from it
		var want string
		_ = json.Unmarshal(quoted, &want)
		out := rewrite(`{"model":"up","choices":[{"index":0,"message":{"content":` + string(quoted) + `}},{"text":` + string(quoted) + `}]}`)
		var got struct {
			Model   string
			Choices []struct {
				Text    string
				Message struct{ Content string }
			}
		}
		if err := json.Unmarshal(out, &got); err != nil || len(got.Choices) != 2 {
			t.Fatalf("%v: %s", err, out)
		}
		if want != "" {
			want = prefix + want // an empty text gets no prefix
		}
		if got.Model != "asked\u0001" || got.Choices[0].Message.Content != want || got.Choices[1].Text != want {
			t.Fatalf("text %q, prefix %q: %s", text, prefix, out)
		}
	})
}
