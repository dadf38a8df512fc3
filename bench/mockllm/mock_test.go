package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const chatMsgs = `"messages":[{"role":"user","content":"hi"}]`

func TestChatJSON(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(body string, wantChoices, wantWords int, wantFinish string) {
		t.Helper()
		var c completion
		resp := tm.postJSON(t, "/v1/chat/completions", body, &c)
		if got := resp.Header.Get("X-Mock-Name"); got != tm.m.name {
			t.Fatalf("X-Mock-Name %q, want %q", got, tm.m.name)
		}
		if c.Object != "chat.completion" || c.Model != "qwen-7b" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Created == 0 {
			t.Fatalf("bad head: %+v", c)
		}
		if len(c.Choices) != wantChoices {
			t.Fatalf("%d choices, want %d", len(c.Choices), wantChoices)
		}
		for i, ch := range c.Choices {
			if ch.Index != i || ch.Message.Role != "assistant" || ch.Message.Content == nil || ch.FinishReason != wantFinish {
				t.Fatalf("choice %d: %+v", i, ch)
			}
			words := strings.Fields(*ch.Message.Content)
			if len(words) != wantWords || words[0] != tm.m.name {
				t.Fatalf("choice %d has %d words %q, want %d starting with %s", i, len(words), *ch.Message.Content, wantWords, tm.m.name)
			}
		}
		u := c.Usage
		if u == nil || u.CompletionTokens != wantWords*wantChoices || u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Fatalf("usage %+v, want completion tokens %d", u, wantWords*wantChoices)
		}
	}
	f(`{"model":"qwen-7b",`+chatMsgs+`}`, 1, 20, "stop")
	f(`{"model":"qwen-7b",`+chatMsgs+`,"n":3}`, 3, 20, "stop")
	f(`{"model":"qwen-7b",`+chatMsgs+`,"n":9}`, 4, 20, "stop")
	f(`{"model":"qwen-7b",`+chatMsgs+`,"stream":false,"max_tokens":5}`, 1, 5, "length")
	f(`{"model":"qwen-7b",`+chatMsgs+`,"max_completion_tokens":7,"n":2}`, 2, 7, "length")
	f(`{"model":"qwen-7b",`+chatMsgs+`,"mock":{"chunks":2,"words":3}}`, 1, 6, "stop")

	// Choices of one answer differ after the name.
	var c completion
	tm.postJSON(t, "/v1/chat/completions", `{"model":"qwen-7b",`+chatMsgs+`,"n":2}`, &c)
	if *c.Choices[0].Message.Content == *c.Choices[1].Message.Content {
		t.Fatalf("choices are equal: %q", *c.Choices[0].Message.Content)
	}
}

func TestChatStream(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(body string, wantChoices, wantChunks int, wantFinish string, headers ...string) {
		t.Helper()
		resp, s := tm.stream(t, "/v1/chat/completions", strings.Replace(body, "{", `{"stream":true,`, 1), headers...)
		if resp.Header.Get("X-Mock-Name") != tm.m.name {
			t.Fatalf("X-Mock-Name %q", resp.Header.Get("X-Mock-Name"))
		}
		if s.err != nil || !s.done {
			t.Fatalf("stream ended with %v, [DONE] %v", s.err, s.done)
		}
		// Content chunks, then one finish chunk per choice, then [DONE].
		if len(s.chunks) != wantChoices*(wantChunks+1) {
			t.Fatalf("%d chunks, want %d", len(s.chunks), wantChoices*(wantChunks+1))
		}
		var want completion
		tm.postJSON(t, "/v1/chat/completions", body, &want, headers...)
		for c := range wantChoices {
			text, n := s.content(c)
			if n != wantChunks {
				t.Fatalf("choice %d: %d content chunks, want %d", c, n, wantChunks)
			}
			if text != *want.Choices[c].Message.Content {
				t.Fatalf("choice %d streams %q, JSON answer says %q", c, text, *want.Choices[c].Message.Content)
			}
			if got := s.finish(c); got != wantFinish {
				t.Fatalf("choice %d finish_reason %q, want %q", c, got, wantFinish)
			}
		}
		for i, ch := range s.chunks {
			if ch.Object != "chat.completion.chunk" || ch.Model != "m1" || ch.ID != s.chunks[0].ID || len(ch.Choices) != 1 || ch.Usage != nil {
				t.Fatalf("chunk %d: %+v", i, ch)
			}
			if (i < wantChoices) != (ch.Choices[0].Delta.Role == "assistant") && wantChunks > 0 {
				t.Fatalf("chunk %d: role %q", i, ch.Choices[0].Delta.Role)
			}
		}
	}
	f(`{"model":"m1",`+chatMsgs+`}`, 1, 20, "stop")
	f(`{"model":"m1",`+chatMsgs+`,"n":2}`, 2, 20, "stop")
	f(`{"model":"m1",`+chatMsgs+`}`, 1, 5, "stop", "X-Mock-Chunks", "5")
	f(`{"model":"m1",`+chatMsgs+`,"max_tokens":4}`, 1, 2, "length", "X-Mock-Words", "3")
	f(`{"model":"m1",`+chatMsgs+`,"mock":{"chunks":3,"words":2}}`, 1, 3, "stop")
	f(`{"model":"m1",`+chatMsgs+`,"mock":{"chunks":0}}`, 1, 0, "stop")
}

func TestStreamUsage(t *testing.T) {
	f := func(usageFlag, include, want bool) {
		t.Helper()
		o := quietOptions()
		o.usage = usageFlag
		tm := startMock(t, o)
		body := `{"model":"m",` + chatMsgs + `,"stream":true,"n":2,"mock":{"chunks":3}`
		if include {
			body += `,"stream_options":{"include_usage":true}`
		}
		_, s := tm.stream(t, "/v1/chat/completions", body+"}")
		if !s.done {
			t.Fatalf("no [DONE]")
		}
		var usageChunks int
		for i, ch := range s.chunks {
			if ch.Usage == nil {
				continue
			}
			usageChunks++
			if i != len(s.chunks)-1 || len(ch.Choices) != 0 {
				t.Fatalf("usage in chunk %d of %d with %d choices", i, len(s.chunks), len(ch.Choices))
			}
			if ch.Usage.CompletionTokens != 6 || ch.Usage.TotalTokens != ch.Usage.PromptTokens+6 || ch.Usage.PromptTokens <= 0 {
				t.Fatalf("usage %+v", ch.Usage)
			}
		}
		if got := usageChunks == 1; got != want || usageChunks > 1 {
			t.Fatalf("%d usage chunks, want one: %v", usageChunks, want)
		}
		// Like OpenAI, "usage":null rides on the other chunks only when asked.
		hasNull := strings.Contains(s.events[0].data, `"usage":null`)
		if hasNull != want {
			t.Fatalf("first chunk has usage:null %v, want %v: %s", hasNull, want, s.events[0].data)
		}
		var c completion
		tm.postJSON(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"chunks":3}}`, &c)
		if (c.Usage != nil) != usageFlag {
			t.Fatalf("JSON usage %+v with -usage=%v", c.Usage, usageFlag)
		}
	}
	f(true, true, true)
	f(true, false, false)
	f(false, true, false)
	f(false, false, false)
}

func TestChunkDelay(t *testing.T) {
	tm := startMock(t, quietOptions())
	const delay = 150 * time.Millisecond
	start := time.Now()
	_, s := tm.stream(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"stream":true,"mock":{"chunks":4,"chunk_delay":"150ms"}}`)
	if !s.done || len(s.chunks) != 5 {
		t.Fatalf("%d chunks, [DONE] %v", len(s.chunks), s.done)
	}
	first, last := s.events[0].at, s.events[len(s.events)-1].at
	if first.Sub(start) > delay {
		t.Fatalf("first chunk after %s: it waited for a delay", first.Sub(start))
	}
	// Three pauses separate the four content chunks; the first was read
	// while the mock still held the last.
	if gap := last.Sub(first); gap < 3*delay-30*time.Millisecond {
		t.Fatalf("first to last chunk %s, want about %s", gap, 3*delay)
	}
	for i := 1; i < 4; i++ {
		if gap := s.events[i].at.Sub(s.events[i-1].at); gap < delay-30*time.Millisecond {
			t.Fatalf("chunk %d came %s after the one before, want about %s", i, gap, delay)
		}
	}

	// A number in the body is milliseconds; the header is a Go duration.
	f := func(body string, want time.Duration, headers ...string) {
		t.Helper()
		start := time.Now()
		_, s := tm.stream(t, "/v1/chat/completions", body, headers...)
		if !s.done {
			t.Fatalf("no [DONE]")
		}
		if got := time.Since(start); got < want || got > want+2*time.Second {
			t.Fatalf("stream took %s, want about %s", got, want)
		}
	}
	f(`{"model":"m",`+chatMsgs+`,"stream":true,"mock":{"chunks":3,"chunk_delay":100}}`, 200*time.Millisecond)
	f(`{"model":"m",`+chatMsgs+`,"stream":true}`, 200*time.Millisecond, "X-Mock-Chunks", "3", "X-Mock-Chunk-Delay", "100ms")
}

func TestTTFBAndStall(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(method, path, body string, want time.Duration, headers ...string) {
		t.Helper()
		start := time.Now()
		resp := tm.do(t, method, path, body, headers...)
		got := time.Since(start) // until the status line and headers
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode >= 500 && want == 0 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got < want || got > want+2*time.Second {
			t.Fatalf("%s %s: headers after %s, want about %s", method, path, got, want)
		}
	}
	const d = 200 * time.Millisecond
	chat := `{"model":"m",` + chatMsgs + `,"stream":true,"mock":{"chunks":2}}`
	f("POST", "/v1/chat/completions", chat, d, "X-Mock-TTFB", "200ms")
	f("POST", "/v1/chat/completions", chat, d, "X-Mock-Stall", "200ms")
	f("POST", "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"ttfb":"100ms","stall":"100ms"}}`, d)
	f("POST", "/v1/embeddings", `{"input":"x","mock":{"stall":"200ms"}}`, d)
	f("GET", "/v1/models", "", d, "X-Mock-Stall", "200ms")
	f("POST", "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"stall":"200ms","status":503}}`, d)
	f("GET", "/health", "", 0, "X-Mock-Stall", "5s")
}

func TestToolCalls(t *testing.T) {
	tm := startMock(t, quietOptions())
	const tools = `,"tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}]`
	f := func(body string, wantChoices int, wantName string, headers ...string) {
		t.Helper()
		_, s := tm.stream(t, "/v1/chat/completions", strings.Replace(body, "{", `{"stream":true,`, 1), headers...)
		if !s.done {
			t.Fatalf("no [DONE]")
		}
		var want completion
		tm.postJSON(t, "/v1/chat/completions", body, &want, headers...)
		if len(want.Choices) != wantChoices {
			t.Fatalf("%d JSON choices, want %d", len(want.Choices), wantChoices)
		}
		for c := range wantChoices {
			// Merge the deltas by tool index, as a client does.
			var id, name, args string
			var pieces int
			for _, ch := range s.chunks {
				for _, cc := range ch.Choices {
					if cc.Index != c {
						continue
					}
					if cc.Delta.Content != nil && *cc.Delta.Content != "" {
						t.Fatalf("text content in a tool-call stream: %q", *cc.Delta.Content)
					}
					for _, tc := range cc.Delta.ToolCalls {
						if tc.Index != 0 {
							t.Fatalf("tool index %d", tc.Index)
						}
						id += tc.ID
						name += tc.Function.Name
						if tc.Function.Arguments != "" {
							pieces++
						}
						args += tc.Function.Arguments
					}
				}
			}
			if pieces < 2 {
				t.Fatalf("choice %d: arguments came in %d pieces, want several", c, pieces)
			}
			var parsed map[string]any
			if err := json.Unmarshal([]byte(args), &parsed); err != nil {
				t.Fatalf("choice %d: merged arguments %q are not JSON: %s", c, args, err)
			}
			if parsed["location"] != tm.m.name {
				t.Fatalf("choice %d: arguments %v do not name the mock", c, parsed)
			}
			if name != wantName || !strings.HasPrefix(id, "call_") {
				t.Fatalf("choice %d: tool %q id %q, want %q", c, name, id, wantName)
			}
			if got := s.finish(c); got != "tool_calls" {
				t.Fatalf("choice %d: finish_reason %q", c, got)
			}
			wc := want.Choices[c]
			if wc.Message.Content != nil || len(wc.Message.ToolCalls) != 1 || wc.FinishReason != "tool_calls" {
				t.Fatalf("JSON choice %d: %+v", c, wc)
			}
			tc := wc.Message.ToolCalls[0]
			if tc.Type != "function" || tc.Function.Name != wantName || tc.Function.Arguments != args || !strings.HasPrefix(tc.ID, "call_") {
				t.Fatalf("JSON tool call %+v, stream merged to %q", tc, args)
			}
		}
	}
	f(`{"model":"m",`+chatMsgs+tools+`}`, 1, "lookup", "X-Mock-Tool-Calls", "1")
	f(`{"model":"m",`+chatMsgs+`,"n":2,"mock":{"tool_calls":true,"chunks":7}}`, 2, "get_weather")
	f(`{"model":"m",`+chatMsgs+tools+`,"mock":{"tool_calls":true,"chunks":3}}`, 1, "lookup", "X-Mock-Chunks", "40")

	// -tool-calls makes every chat answer a tool call; completions stay text.
	o := quietOptions()
	o.toolCalls = true
	tm2 := startMock(t, o)
	var c completion
	tm2.postJSON(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`}`, &c)
	if len(c.Choices[0].Message.ToolCalls) != 1 {
		t.Fatalf("-tool-calls answered %+v", c.Choices[0])
	}
	tm2.postJSON(t, "/v1/completions", `{"model":"m","prompt":"x"}`, &c)
	if !strings.HasPrefix(c.Choices[0].Text, tm2.m.name) {
		t.Fatalf("completion text %q", c.Choices[0].Text)
	}
}

func TestBreakAfter(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(breakAfter string, wantEvents int) {
		t.Helper()
		body := `{"model":"m",` + chatMsgs + `,"stream":true,"stream_options":{"include_usage":true},"mock":{"chunks":5}}`
		resp, s := tm.stream(t, "/v1/chat/completions", body, "X-Mock-Break-After", breakAfter)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if s.err == nil {
			t.Fatalf("break-after %s: the stream ended cleanly", breakAfter)
		}
		if s.done || len(s.events) != wantEvents {
			t.Fatalf("break-after %s: %d events, [DONE] %v; want %d events", breakAfter, len(s.events), s.done, wantEvents)
		}
	}
	f("0", 0)
	f("2", 2)
	f("6", 6)
	f("100", 7) // five content chunks, finish, usage: no [DONE] ever

	// -1 turns a flag's break off for one request.
	o := quietOptions()
	o.breakAfter = 1
	tm2 := startMock(t, o)
	_, s := tm2.stream(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"stream":true,"mock":{"break_after":-1}}`)
	if !s.done || s.err != nil {
		t.Fatalf("break_after -1: [DONE] %v, err %v", s.done, s.err)
	}
	_, s = tm2.stream(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"stream":true}`)
	if s.done || s.err == nil || len(s.events) != 1 {
		t.Fatalf("-break-after 1: %d events, [DONE] %v, err %v", len(s.events), s.done, s.err)
	}

	// A JSON answer is cut in half, short of its Content-Length.
	resp := tm.do(t, "POST", "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"break_after":3}}`)
	b, err := io.ReadAll(resp.Body)
	if err == nil || resp.ContentLength <= 0 || len(b) != int(resp.ContentLength)/2 {
		t.Fatalf("read %d of %d bytes, err %v", len(b), resp.ContentLength, err)
	}
}

func TestStatusKnobs(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(body string, wantStatus int, wantType string, headers ...string) {
		t.Helper()
		resp := tm.do(t, "POST", "/v1/chat/completions", body, headers...)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("status %d, want %d: %s", resp.StatusCode, wantStatus, b)
		}
		if wantType == "" {
			return
		}
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
				Param   any     `json:"param"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("error body is not JSON: %s\n%s", err, b)
		}
		if e.Error.Type != wantType || !strings.Contains(e.Error.Message, tm.m.name) {
			t.Fatalf("error %+v, want type %q naming %s", e.Error, wantType, tm.m.name)
		}
	}
	stream := `{"model":"m",` + chatMsgs + `,"stream":true}`
	f(stream, 503, "server_error", "X-Mock-Status", "503")
	f(stream, 429, "rate_limit_error", "X-Mock-Status", "429")
	f(`{"model":"m",`+chatMsgs+`,"mock":{"status":500}}`, 500, "server_error")
	f(`{"model":"m",`+chatMsgs+`,"mock":{"status":401}}`, 401, "authentication_error")
	f(`{"model":"m",`+chatMsgs+`,"mock":{"status":0}}`, 200, "", "X-Mock-Status", "500") // the body wins
	f(`{"model":"m",`+chatMsgs+`,"mock":{"status":400}}`, 400, "invalid_request_error", "X-Mock-Status", "500")
	f(`{"model":"m",`+chatMsgs+`}`, 200, "", "X-Mock-Status", "200")
}

func TestFailRatio(t *testing.T) {
	f := func(ratio float64, lo, hi int) {
		t.Helper()
		o := quietOptions()
		o.failStatus = 502
		o.failRatio = ratio
		tm := startMock(t, o)
		const n = 200
		failed := 0
		for range n {
			resp := tm.do(t, "POST", "/v1/embeddings", `{"input":"x"}`)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 502:
				failed++
			case 200:
			default:
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		if failed < lo || failed > hi {
			t.Fatalf("ratio %g: %d of %d failed, want %d..%d", ratio, failed, n, lo, hi)
		}
		// A request's own status knob wins over the ratio.
		resp := tm.do(t, "POST", "/v1/embeddings", `{"input":"x","mock":{"status":200}}`)
		if resp.StatusCode != 200 {
			t.Fatalf("status knob 200 answered %d", resp.StatusCode)
		}
	}
	f(1, 200, 200)
	f(0, 0, 0)
	f(0.5, 50, 150) // about 7 standard deviations either side
}

func TestBadRequests(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(path, body, wantInMessage string, headers ...string) {
		t.Helper()
		resp := tm.do(t, "POST", path, body, headers...)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400: %s", resp.StatusCode, b)
		}
		var e struct {
			Error struct{ Message, Type string }
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, wantInMessage) {
			t.Fatalf("error %s (%v), want a message with %q", b, err, wantInMessage)
		}
	}
	ok := `{"model":"m",` + chatMsgs + `}`
	f("/v1/chat/completions", ok, "X-Mock-Chunks", "X-Mock-Chunks", "many")
	f("/v1/chat/completions", ok, "X-Mock-Chunk-Delay", "X-Mock-Chunk-Delay", "10")
	f("/v1/chat/completions", ok, "X-Mock-TTFB", "X-Mock-TTFB", "-1s")
	f("/v1/chat/completions", ok, "X-Mock-Status", "X-Mock-Status", "99")
	f("/v1/chat/completions", ok, "X-Mock-Tool-Calls", "X-Mock-Tool-Calls", "maybe")
	f("/v1/chat/completions", ok, "X-Mock-Break-After", "X-Mock-Break-After", "-2")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"chunks":"x"}}`, "mock.chunks")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"stall":true}}`, "mock.stall")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":{"status":42}}`, "mock.status")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"mock":[]}`, "mock")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"stream":"yes"}`, "stream")
	f("/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"n":0}`, "n:")
	f("/v1/chat/completions", `{"model":7,`+chatMsgs+`}`, "model")
	f("/v1/chat/completions", `{"model":"m"}`, "messages")
	f("/v1/chat/completions", `{"model":"m","messages":[]}`, "messages")
	f("/v1/chat/completions", `{"model":`, "not valid JSON")
	f("/v1/chat/completions", `[1]`, "object")
	f("/v1/completions", `{"model":"m"}`, "prompt")
	f("/v1/embeddings", `{"model":"m"}`, "input")
	f("/v1/embeddings", `{"input":[]}`, "input")
	f("/v1/embeddings", `{"input":[{}]}`, "input[0]")
	f("/v1/embeddings", `{"input":"x","dimensions":0}`, "dimensions")
	f("/v1/rerank", `{"documents":["a"]}`, "query")
	f("/rerank", `{"query":"a","documents":"a"}`, "documents")
	f("/rerank", `{"query":"a","documents":[1]}`, "documents[0]")
}

func TestKnobPrecedence(t *testing.T) {
	o := quietOptions()
	o.chunks = 7
	tm := startMock(t, o)
	f := func(body string, want int, headers ...string) {
		t.Helper()
		_, s := tm.stream(t, "/v1/chat/completions", body, headers...)
		if _, n := s.content(0); n != want {
			t.Fatalf("%d content chunks, want %d", n, want)
		}
	}
	plain := `{"model":"m",` + chatMsgs + `,"stream":true}`
	withBody := `{"model":"m",` + chatMsgs + `,"stream":true,"mock":{"chunks":3}}`
	f(plain, 7)
	f(plain, 5, "X-Mock-Chunks", "5")
	f(withBody, 3)
	f(withBody, 3, "X-Mock-Chunks", "5")
}

func TestCompletions(t *testing.T) {
	tm := startMock(t, quietOptions())
	var c completion
	tm.postJSON(t, "/v1/completions", `{"model":"davinci","prompt":"say","n":2,"mock":{"chunks":4,"words":2}}`, &c)
	if c.Object != "text_completion" || c.Model != "davinci" || !strings.HasPrefix(c.ID, "cmpl-") || len(c.Choices) != 2 {
		t.Fatalf("answer %+v", c)
	}
	for i, ch := range c.Choices {
		if words := strings.Fields(ch.Text); len(words) != 8 || words[0] != tm.m.name || ch.FinishReason != "stop" || ch.Index != i {
			t.Fatalf("choice %d: %+v", i, ch)
		}
	}
	if c.Usage == nil || c.Usage.CompletionTokens != 16 {
		t.Fatalf("usage %+v", c.Usage)
	}

	_, s := tm.stream(t, "/completions", `{"model":"davinci","prompt":"say","n":2,"stream":true,"stream_options":{"include_usage":true},"mock":{"chunks":4,"words":2}}`)
	if !s.done || len(s.chunks) != 2*5+1 {
		t.Fatalf("%d chunks, [DONE] %v", len(s.chunks), s.done)
	}
	for i, ch := range s.chunks {
		if ch.Object != "text_completion" || ch.Model != "davinci" {
			t.Fatalf("chunk %d: %+v", i, ch)
		}
	}
	for i := range 2 {
		text, n := s.content(i)
		if text != c.Choices[i].Text || n != 4 || s.finish(i) != "stop" {
			t.Fatalf("choice %d streams %q in %d chunks, JSON says %q", i, text, n, c.Choices[i].Text)
		}
	}
	if u := s.chunks[len(s.chunks)-1].Usage; u == nil || u.CompletionTokens != 16 {
		t.Fatalf("usage chunk %+v", u)
	}
}

func TestEcho(t *testing.T) {
	tm := startMock(t, quietOptions())
	f := func(body string) {
		t.Helper()
		var c completion
		tm.postJSON(t, "/v1/chat/completions", body, &c)
		if got := *c.Choices[0].Message.Content; got != body {
			t.Fatalf("JSON echo %q, want %q", got, body)
		}
		sbody := strings.Replace(body, "{", `{"stream":true,`, 1)
		_, s := tm.stream(t, "/v1/chat/completions", sbody)
		if text, _ := s.content(0); text != sbody || !s.done {
			t.Fatalf("stream echo %q, want %q", text, sbody)
		}
	}
	f(`{"model":"m",` + chatMsgs + `,"mock":{"echo":true}}`)
	f(`{"model":"m","messages":[{"role":"user","content":"héllo 世界 \"q\" \\ \n\t 🙂"}],"mock":{"echo":true,"chunks":37}}`)
	f(`{"model":"m",` + chatMsgs + `,"mock":{"echo":1,"chunks":1000}}`)
}

func TestEmbeddings(t *testing.T) {
	tm := startMock(t, quietOptions())
	type embeddings struct {
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	vectors := func(body string, wantN, wantDims int) [][]float64 {
		t.Helper()
		var e embeddings
		tm.postJSON(t, "/v1/embeddings", body, &e)
		if e.Object != "list" || e.Model != "emb" || len(e.Data) != wantN || e.Usage.PromptTokens <= 0 || e.Usage.TotalTokens != e.Usage.PromptTokens {
			t.Fatalf("answer %+v, want %d vectors", e, wantN)
		}
		var out [][]float64
		for i, d := range e.Data {
			var v []float64
			if err := json.Unmarshal(d.Embedding, &v); err != nil {
				var s string
				if json.Unmarshal(d.Embedding, &s) != nil {
					t.Fatalf("vector %d: %s", i, d.Embedding)
				}
				v = decodeBase64Floats(t, s)
			}
			if d.Object != "embedding" || d.Index != i || len(v) != wantDims {
				t.Fatalf("vector %d: %+v has %d values", i, d, len(v))
			}
			var sum float64
			for _, x := range v {
				sum += x * x
			}
			if math.Abs(sum-1) > 1e-4 {
				t.Fatalf("vector %d has norm² %g, want 1", i, sum)
			}
			out = append(out, v)
		}
		return out
	}
	one := vectors(`{"model":"emb","input":"alpha"}`, 1, 8)
	three := vectors(`{"model":"emb","input":["beta","alpha","gamma"]}`, 3, 8)
	vectors(`{"model":"emb","input":[1,2,3]}`, 1, 8)
	vectors(`{"model":"emb","input":[[1,2],[3]]}`, 2, 8)
	vectors(`{"model":"emb","input":"alpha","dimensions":16}`, 1, 16)
	b64 := vectors(`{"model":"emb","input":"alpha","encoding_format":"base64"}`, 1, 8)
	same := func(a, b []float64) bool {
		for i := range a {
			if math.Abs(a[i]-b[i]) > 1e-6 {
				return false
			}
		}
		return len(a) == len(b)
	}
	if !same(one[0], three[1]) || !same(one[0], b64[0]) {
		t.Fatalf("one input gave different vectors: %v %v %v", one[0], three[1], b64[0])
	}
	if same(three[0], three[1]) {
		t.Fatalf("different inputs gave the same vector")
	}
}

func TestRerank(t *testing.T) {
	tm := startMock(t, quietOptions())
	type results struct {
		Model   string `json:"model"`
		Results []struct {
			Index    int     `json:"index"`
			Score    float64 `json:"relevance_score"`
			Document *struct {
				Text string `json:"text"`
			} `json:"document"`
		} `json:"results"`
	}
	docs := []string{"a cat sat", "the red fox", "a fox and a dog", "nothing"}
	f := func(path, body string, wantN int, withDocs bool) {
		t.Helper()
		var r results
		tm.postJSON(t, path, body, &r)
		if r.Model != "rr" || len(r.Results) != wantN {
			t.Fatalf("answer %+v, want %d results", r, wantN)
		}
		seen := map[int]bool{}
		for i, res := range r.Results {
			if res.Index < 0 || res.Index >= len(docs) || seen[res.Index] || res.Score < 0 || res.Score >= 1 {
				t.Fatalf("result %d: %+v", i, res)
			}
			seen[res.Index] = true
			if i > 0 && res.Score > r.Results[i-1].Score {
				t.Fatalf("results not sorted by score: %+v", r.Results)
			}
			if (res.Document != nil) != withDocs || (withDocs && res.Document.Text != docs[res.Index]) {
				t.Fatalf("result %d document %+v", i, res.Document)
			}
		}
		if r.Results[0].Index != 2 {
			t.Fatalf("best result %d, want the document with every query word", r.Results[0].Index)
		}
	}
	f("/v1/rerank", `{"model":"rr","query":"fox dog","documents":["a cat sat","the red fox","a fox and a dog","nothing"]}`, 4, false)
	f("/rerank", `{"model":"rr","query":"fox dog","documents":[{"text":"a cat sat"},{"text":"the red fox"},{"text":"a fox and a dog"},{"text":"nothing"}],"top_n":2,"return_documents":true}`, 2, true)
}

func TestRoutes(t *testing.T) {
	tm := startMock(t, quietOptions())
	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
		} `json:"data"`
	}
	resp := tm.do(t, "GET", "/v1/models", "")
	if err := json.NewDecoder(resp.Body).Decode(&models); err != nil || resp.StatusCode != 200 {
		t.Fatalf("models: status %d, %v", resp.StatusCode, err)
	}
	ids := map[string]bool{}
	for _, d := range models.Data {
		if d.Object != "model" {
			t.Fatalf("model %+v", d)
		}
		ids[d.ID] = true
	}
	if models.Object != "list" || !ids[tm.m.name] || !ids["mock-model"] || len(ids) != len(models.Data) {
		t.Fatalf("models %+v", models)
	}

	f := func(method, path string, wantStatus int, wantBody string, headers ...string) {
		t.Helper()
		resp := tm.do(t, method, path, "", headers...)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus || !strings.Contains(string(b), wantBody) || resp.Header.Get("X-Mock-Name") != tm.m.name {
			t.Fatalf("%s %s: %d %s, want %d with %s", method, path, resp.StatusCode, b, wantStatus, wantBody)
		}
	}
	f("GET", "/health", 200, `{"status":"ok"}`)
	f("GET", "/nope", 404, `"code":"not_found"`)
	f("GET", "/v1/chat/completions", 405, `"type":"invalid_request_error"`)
	f("POST", "/v1/models", 405, `"code":"method_not_allowed"`)
	f("GET", "/v1/models", 503, `"type":"server_error"`, "X-Mock-Status", "503")
}

func TestMultipleMocks(t *testing.T) {
	a, b := startMock(t, quietOptions()), startMock(t, quietOptions())
	for _, tm := range []*testMock{a, b} {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tm.base, "http://"))
		var c completion
		resp := tm.postJSON(t, "/v1/chat/completions", `{"model":"m",`+chatMsgs+`}`, &c)
		if want := "mock-" + port; resp.Header.Get("X-Mock-Name") != want || !strings.HasPrefix(*c.Choices[0].Message.Content, want+" ") {
			t.Fatalf("answer from %s: header %q, text %q", want, resp.Header.Get("X-Mock-Name"), *c.Choices[0].Message.Content)
		}
	}
	if a.m.name == b.m.name {
		t.Fatalf("two mocks named %s", a.m.name)
	}
}

func TestServeFunc(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln, quietOptions()) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("serve did not return after its listener closed")
	}
}

// TestShutdown checks that shutdown cuts delays short: a stream in flight
// finishes at once, with [DONE].
func TestShutdown(t *testing.T) {
	tm := startMock(t, quietOptions())
	resp := tm.do(t, "POST", "/v1/chat/completions", `{"model":"m",`+chatMsgs+`,"stream":true,"mock":{"chunks":3,"chunk_delay":"1h"}}`)
	got := make(chan stream, 1)
	go func() {
		var s stream
		s.events, s.err = readSSE(resp.Body)
		s.done = len(s.events) > 0 && s.events[len(s.events)-1].data == "[DONE]"
		got <- s
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := tm.m.shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %s", err)
	}
	s := <-got
	if s.err != nil || !s.done || len(s.events) != 5 || time.Since(start) > 2*time.Second {
		t.Fatalf("after shutdown: %d events, [DONE] %v, err %v, in %s", len(s.events), s.done, s.err, time.Since(start))
	}
}

func TestOptionsValidate(t *testing.T) {
	f := func(edit func(o *options), wantErr string) {
		t.Helper()
		o := defaultOptions()
		edit(&o)
		err := o.validate()
		if (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("validate: %v, want %q", err, wantErr)
		}
	}
	f(func(o *options) {}, "")
	f(func(o *options) { o.chunks = -1 }, "-chunks")
	f(func(o *options) { o.words = 0 }, "-words")
	f(func(o *options) { o.ttfb = -time.Second }, "-ttfb")
	f(func(o *options) { o.failStatus = 200 }, "-fail-status")
	f(func(o *options) { o.failRatio = 1.5 }, "-fail-ratio")
	f(func(o *options) { o.breakAfter = -2 }, "-break-after")
	f(func(o *options) { o.failStatus, o.failRatio, o.breakAfter = 503, 0.2, 0 }, "")
}

func decodeBase64Floats(t *testing.T, s string) []float64 {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw)%4 != 0 {
		t.Fatalf("bad base64 vector %q: %v", s, err)
	}
	var v []float64
	for i := 0; i < len(raw); i += 4 {
		bits := uint32(raw[i]) | uint32(raw[i+1])<<8 | uint32(raw[i+2])<<16 | uint32(raw[i+3])<<24
		v = append(v, float64(math.Float32frombits(bits)))
	}
	return v
}
