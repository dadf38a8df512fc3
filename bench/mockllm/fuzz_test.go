package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// FuzzRequest feeds arbitrary bodies to every POST endpoint: the handler must
// never panic, and whatever it answers must be well formed: a JSON body, or
// SSE events that are JSON chunks followed by [DONE].
func FuzzRequest(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{}],"stream":true,"n":3,"stream_options":{"include_usage":true}}`,
		`{"model":"m\"x\u0001","messages":[1],"stream":true,"mock":{"tool_calls":true,"chunks":5}}`,
		`{"model":"m","messages":[1],"stream":true,"mock":{"echo":true,"chunks":4},"x":"\u4e16\ud83d\ude42"}`,
		`{"model":"m","messages":[1],"mock":{"break_after":2,"status":0}}`,
		`{"model":"m","prompt":"p","stream":true,"max_tokens":3}`,
		`{"input":["a",[1,2],"b"],"encoding_format":"base64","dimensions":3}`,
		`{"query":"a b","documents":["a",{"text":"b"}],"top_n":1,"return_documents":true}`,
		`{"mock":{"status":503}}`,
		`[]`, `{`, `{"messages":"x"}`,
	}
	for _, s := range seeds {
		for ep := range 4 {
			f.Add(uint8(ep), s)
		}
	}
	paths := [...]string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"}
	m := localMock(f, quietOptions())
	m.shutdown(f.Context()) // closes m.stop: every delay is skipped
	f.Fuzz(func(t *testing.T, ep uint8, body string) {
		if tooBig(body) {
			t.Skip()
		}
		ctx := localCtx(paths[int(ep)%len(paths)], body)
		var out bytes.Buffer
		err := roundTrip(m, ctx, &out)
		if err != nil && !errors.Is(err, errBreak) {
			t.Fatalf("answer failed: %s", err)
		}
		if errors.Is(err, errBreak) {
			return // a broken answer is cut on purpose
		}
		if !bytes.HasPrefix(ctx.Response.Header.ContentType(), []byte("text/event-stream")) {
			if !json.Valid(out.Bytes()) {
				t.Fatalf("status %d body is not JSON: %s", ctx.Response.StatusCode(), out.Bytes())
			}
			return
		}
		events := strings.Split(strings.TrimSuffix(out.String(), "\n\n"), "\n\n")
		if events[len(events)-1] != "data: [DONE]" {
			t.Fatalf("stream does not end with [DONE]: %q", out.String())
		}
		for _, ev := range events[:len(events)-1] {
			data, ok := strings.CutPrefix(ev, "data: ")
			if !ok || !json.Valid([]byte(data)) {
				t.Fatalf("bad event %q", ev)
			}
		}
	})
}

// tooBig skips bodies whose knobs ask for a huge answer: correct, but too
// slow for a fuzz iteration.
func tooBig(body string) bool {
	v, err := fastjson.Parse(body)
	if err != nil {
		return false
	}
	return v.GetInt("mock", "chunks") > 200 || v.GetInt("mock", "words") > 50 || v.GetInt("dimensions") > 64
}
