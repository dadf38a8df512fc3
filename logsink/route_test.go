package logsink

import (
	"sync"
	"testing"
)

func TestOnCachedTokens(t *testing.T) {
	s, err := Open(testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]int64{}
	s.OnCachedTokens(func(up []byte, n int64) {
		mu.Lock()
		got[string(up)] += n
		mu.Unlock()
	})
	put := func(up, body string, stream bool) {
		r := AcquireRecord()
		r.Endpoint, r.Status, r.Stream = Chat, 200, stream
		r.Upstream = append(r.Upstream, up...)
		if stream {
			r.Chunks = append(r.Chunks, body...)
		} else {
			r.ResponseBody = append(r.ResponseBody, body...)
		}
		s.Put(r)
	}
	put("a", `{"choices":[],"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":6}}}`, false)
	put("a", `{"choices":[],"usage":{"prompt_tokens":10}}`, false)
	put("b", `{"choices":[{"index":0,"delta":{"content":"x"}}]}`+"\n"+
		`{"choices":[],"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":4}}}`+"\n", true)
	put("", `{"usage":{"prompt_tokens_details":{"cached_tokens":99}}}`, false) // no upstream answered
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got["a"] != 6 || got["b"] != 4 {
		t.Fatalf("hook saw %v, want a=6 b=4", got)
	}
}
