package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServer serves one simulated server on 127.0.0.1 at speed 100 until
// the test ends, and returns its base URL.
func startServer(t *testing.T, cfg Config) (string, *server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine("s0", cfg, newSimClock(100))
	ctx, cancel := context.WithCancel(context.Background())
	go e.run(ctx, testGran)
	s := newServer("s0", e, time.Millisecond)
	s.addr, s.fleet = ln.Addr().String(), []*server{s}
	go s.serve(ln)
	t.Cleanup(func() {
		cancel()
		_ = s.http.Shutdown()
	})
	return "http://" + ln.Addr().String(), s
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

const chatBody = `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"` +
	`You are a careful assistant who answers every question about the sea in full sentences and with sources where you have them."},` +
	`{"role":"user","content":"How deep is the Mariana Trench, and who first reached its bottom? Please answer in detail."}],"max_tokens":30`

type usage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Details    struct {
		Cached int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// A streamed answer carries every token, the role first, a finish reason,
// the usage when asked and [DONE]; the same prompt again, not streamed,
// reports its full blocks as cached, and the probe finds them.
func TestServerAnswersAndCaches(t *testing.T) {
	url, s := startServer(t, defaultConfig())
	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(chatBody+`,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || resp.Header.Get("X-Sim-Server") != "s0" {
		t.Fatalf("content type %q, server %q", ct, resp.Header.Get("X-Sim-Server"))
	}
	sc := bufio.NewScanner(resp.Body)
	var words int
	var u *usage
	var role, finish, done bool
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"delta"`
				Finish *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
			Sim   *struct {
				TTFT float64 `json:"ttft_ms"`
				E2E  float64 `json:"e2e_ms"`
			} `json:"sim"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %q: %s", line, err)
		}
		if ev.Usage != nil {
			u = ev.Usage
			if ev.Sim == nil || ev.Sim.TTFT <= 0 || ev.Sim.E2E < ev.Sim.TTFT+29*13 {
				t.Errorf("usage event without the simulated times: %s", line)
			}
		}
		for _, c := range ev.Choices {
			role = role || (words == 0 && c.Delta.Role == "assistant")
			words += len(strings.Fields(c.Delta.Content))
			finish = finish || (c.Finish != nil && *c.Finish == "length")
		}
	}
	resp.Body.Close()
	if words != 30 || !role || !finish || !done || u == nil {
		t.Fatalf("stream: %d words (want 30), role %v, finish %v, [DONE] %v, usage %v", words, role, finish, done, u)
	}
	if u.Completion != 30 || u.Details.Cached != 0 {
		t.Errorf("first usage %+v: want 30 completion tokens, none cached", *u)
	}

	a, _, _ := s.parse([]byte(chatBody+"}"), true)
	full := min(len(a.chain), (a.prompt-1)/blockTokens) * blockTokens // the last token is always computed
	resp2, body := post(t, url+"/v1/chat/completions", chatBody+"}")
	var whole struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &whole); err != nil || resp2.StatusCode != 200 {
		t.Fatalf("%d %s (%v)", resp2.StatusCode, body, err)
	}
	if whole.Usage.Prompt != u.Prompt || whole.Usage.Details.Cached != full || full == 0 {
		t.Errorf("second usage %+v: want prompt %d and %d tokens of its full blocks cached", whole.Usage, u.Prompt, full)
	}
	if n := len(strings.Fields(whole.Choices[0].Message.Content)); n != 30 {
		t.Errorf("non-stream answer has %d words, want 30", n)
	}

	_, pb := post(t, url+"/sim/probe", chatBody+"}")
	var pa probeAnswer
	if err := json.Unmarshal([]byte(pb), &pa); err != nil || pa.CachedBlocks != len(a.chain) {
		t.Errorf("probe %s: want %d cached blocks", pb, len(a.chain))
	}
	_, fb := post(t, url+"/sim/probe-fleet", chatBody+"}")
	var pas []probeAnswer
	if err := json.Unmarshal([]byte(fb), &pas); err != nil || len(pas) != 1 || pas[0].CachedBlocks != len(a.chain) || pas[0].Addr != s.addr {
		t.Errorf("probe-fleet %s: want one answer from %s with %d cached blocks", fb, s.addr, len(a.chain))
	}
	_, mb := post(t, url+"/metrics", "")
	if !strings.Contains(mb, "vllm:prefix_cache_hits_total") {
		t.Errorf("metrics: %s", mb)
	}
}

// Bad requests get vLLM's OpenAI-shaped errors.
func TestServerRefusesBadRequests(t *testing.T) {
	cfg := defaultConfig()
	cfg.MaxModelLen = 100
	url, _ := startServer(t, cfg)
	const m = `"model":"meta-llama/Llama-3.1-8B-Instruct"`
	f := func(path, body string, status int, msg string) {
		t.Helper()
		resp, b := post(t, url+path, body)
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Code    int    `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(b), &e); err != nil {
			t.Errorf("%s: body %q is not an error object: %s", body, b, err)
			return
		}
		if resp.StatusCode != status || e.Error.Code != status || !strings.Contains(e.Error.Message, msg) || e.Error.Type == "" {
			t.Errorf("%s: %d %s; want %d with %q", body, resp.StatusCode, b, status, msg)
		}
	}
	f("/v1/chat/completions", `not json`, 400, "not valid JSON")
	f("/v1/chat/completions", `[1]`, 400, "JSON object")
	f("/v1/chat/completions", `{"messages":[]}`, 400, "'model'")
	f("/v1/chat/completions", `{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}`, 404, "does not exist")
	f("/v1/chat/completions", `{`+m+`}`, 400, "'messages' is required")
	f("/v1/chat/completions", `{`+m+`,"messages":[]}`, 400, "must not be empty")
	f("/v1/chat/completions", `{`+m+`,"messages":{}}`, 400, "must be an array")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"role":"user","content":7}]}`, 400, "content")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"content":"hi"}]}`, 400, "role")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, 400, "at least 1")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"role":"user","content":"hi"}],"max_tokens":"x"}`, 400, "integer")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"role":"user","content":"hi"}],"stream":1}`, 400, "boolean")
	f("/v1/chat/completions", `{`+m+`,"messages":[{"role":"user","content":"`+strings.Repeat("word ", 100)+`"}]}`, 400, "maximum context length is 100 tokens")
	f("/v1/completions", `{`+m+`}`, 400, "'prompt' is required")
	f("/v1/completions", `{`+m+`,"prompt":5}`, 400, "'prompt' must be")
	f("/nope", `{}`, 404, "Not Found")
	f("/sim/probe", `{`+m+`}`, 400, "'messages' is required")

	resp, err := http.Get(url + "/v1/chat/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET on chat: %d, want 405", resp.StatusCode)
	}
}
