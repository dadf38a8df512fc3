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

// testMock is a mock serving on a fresh 127.0.0.1 port for one test.
type testMock struct {
	m      *mock
	base   string // http://127.0.0.1:port
	client *http.Client
}

// startMock serves a mock with options o until the test ends.
func startMock(t *testing.T, o options) *testMock {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	m := newMock(ln.Addr(), o)
	done := make(chan error, 1)
	go func() { done <- m.serve(ln) }()
	tm := &testMock{
		m:      m,
		base:   "http://" + ln.Addr().String(),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		tm.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := m.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %s", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %s", err)
		}
	})
	return tm
}

// quietOptions are the defaults without start-up lines or connection logs.
func quietOptions() options {
	o := defaultOptions()
	o.quiet = true
	return o
}

// do sends a request; headers come in name, value pairs.
func (tm *testMock) do(t *testing.T, method, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, tm.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("cannot make request: %s", err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := tm.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// postJSON posts body and decodes a 200 JSON answer into out.
func (tm *testMock) postJSON(t *testing.T, path, body string, out any, headers ...string) *http.Response {
	t.Helper()
	resp := tm.do(t, "POST", path, body, headers...)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("cannot read answer: %s", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, body %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("answer is not the JSON expected: %s\n%s", err, b)
	}
	return resp
}

// sseEvent is one "data:" payload and when it arrived.
type sseEvent struct {
	data string
	at   time.Time
}

// readSSE reads events until the body ends; err is the error that ended it
// (nil for a clean end).
func readSSE(r io.Reader) (events []sseEvent, err error) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return events, nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return events, err
		}
		line = strings.TrimRight(line, "\n")
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			events = append(events, sseEvent{data: data, at: time.Now()})
		} else if line != "" {
			return events, &badLineError{line}
		}
	}
}

type badLineError struct{ line string }

func (e *badLineError) Error() string { return "not an SSE line: " + e.line }

// chunk is the part of a streamed chunk the tests look at.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int    `json:"index"`
		Text  string `json:"text"`
		Delta struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// completion is the part of a JSON chat or text answer the tests look at.
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int    `json:"index"`
		Text    string `json:"text"`
		Message struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

// stream is a stream read whole and checked for framing: every event but a
// final [DONE] is a JSON chunk.
type stream struct {
	chunks []chunk
	events []sseEvent
	done   bool  // ended with data: [DONE]
	err    error // what ended the body, nil for a clean end
}

func (tm *testMock) stream(t *testing.T, path, body string, headers ...string) (*http.Response, stream) {
	t.Helper()
	resp := tm.do(t, "POST", path, body, headers...)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, body %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	var s stream
	s.events, s.err = readSSE(resp.Body)
	for i, ev := range s.events {
		if ev.data == "[DONE]" {
			if i != len(s.events)-1 {
				t.Fatalf("[DONE] is event %d of %d", i, len(s.events))
			}
			s.done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatalf("event %d is not a JSON chunk: %s\n%s", i, err, ev.data)
		}
		s.chunks = append(s.chunks, c)
	}
	return resp, s
}

// content joins the streamed text of choice c, counting the chunks that
// carried some.
func (s stream) content(c int) (text string, chunks int) {
	var sb strings.Builder
	for _, ch := range s.chunks {
		for _, cc := range ch.Choices {
			if cc.Index != c {
				continue
			}
			piece := cc.Text
			if cc.Delta.Content != nil {
				piece = *cc.Delta.Content
			}
			if piece != "" {
				chunks++
				sb.WriteString(piece)
			}
		}
	}
	return sb.String(), chunks
}

// finish returns the finish_reason of choice c, "" if none came.
func (s stream) finish(c int) string {
	for _, ch := range s.chunks {
		for _, cc := range ch.Choices {
			if cc.Index == c && cc.FinishReason != nil {
				return *cc.FinishReason
			}
		}
	}
	return ""
}
