package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/gptapi/gptapi/configs"
)

// TestUpstreamHost: the dial address gets the scheme's port, the Host
// header stays as the user wrote it.
func TestUpstreamHost(t *testing.T) {
	f := func(baseURL, wantDial, wantHost string) {
		t.Helper()
		up, err := newUpstream(&configs.Client{Name: "a", BaseURL: baseURL}, &configs.Default().Check)
		if err != nil {
			t.Fatal(err)
		}
		if up.host != wantDial || up.hostHeader != wantHost {
			t.Errorf("%s: dial %q host %q, want %q %q", baseURL, up.host, up.hostHeader, wantDial, wantHost)
		}
	}
	f("http://localhost/v1", "localhost:80", "localhost")
	f("https://api.example.com/v1", "api.example.com:443", "api.example.com")
	f("http://10.0.0.5:8000/v1", "10.0.0.5:8000", "10.0.0.5:8000")
}

func TestAmbiguousLength(t *testing.T) {
	f := func(raw string, want bool) {
		t.Helper()
		if got := ambiguousLength([]byte(raw)); got != want {
			t.Errorf("ambiguousLength(%q) = %v, want %v", raw, got, want)
		}
	}
	f("Host: x\r\nContent-Length: 4\r\n\r\n", false)
	f("Host: x\r\nTransfer-Encoding: chunked\r\n\r\n", false)
	f("Host: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", true)
	f("transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n", true)
	f("X-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", false)
	f("", false)
}

// TestScanHead: the end of the response headers is found in the read that
// completes the blank line, however the bytes were split across reads,
// and never before.
func TestScanHead(t *testing.T) {
	heads := []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {}\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n\rb\r\n\r\r\n\r\n", // near misses first
		"HTTP/1.1 200 OK\r\nX: \r\r\n\r\r\n\n\r\n\r\n", // more of them
	}
	for _, head := range heads {
		end := strings.Index(head, "\r\n\r\n") + 4
		// every way to cut it in up to three reads
		for i := 0; i <= len(head); i++ {
			for j := i; j <= len(head); j++ {
				c := &deadlineConn{idle: time.Second}
				cuts := []int{0, i, j, len(head)}
				for k := 0; k+1 < len(cuts); k++ {
					from, to := cuts[k], cuts[k+1]
					if c.phase == phaseHead && from < to {
						c.scanHead([]byte(head[from:to]))
					}
					found := c.phase != phaseHead
					if want := to >= end; found != want {
						t.Fatalf("%q cut at %d,%d: after byte %d found %v, want %v", head, i, j, to, found, want)
					}
				}
			}
		}
		// one byte at a time
		c := &deadlineConn{idle: time.Second}
		for k := 0; k < len(head) && c.phase == phaseHead; k++ {
			c.scanHead([]byte{head[k]})
			if found, want := c.phase != phaseHead, k+1 >= end; found != want {
				t.Fatalf("%q byte by byte: after byte %d found %v, want %v", head, k+1, found, want)
			}
		}
	}
}

// BenchmarkScanHead is the first read of a plain answer: vLLM's headers
// and a small body in one piece.
func BenchmarkScanHead(b *testing.B) {
	read := []byte("HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 15:00:00 GMT\r\nserver: uvicorn\r\n" +
		"content-length: 424\r\ncontent-type: application/json\r\nx-request-id: 0123456789abcdef\r\n\r\n" +
		strings.Repeat(`{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`, 7))
	c := &deadlineConn{idle: time.Second}
	b.ReportAllocs()
	for b.Loop() {
		c.phase, c.tailN = phaseHead, 0
		c.scanHead(read)
	}
}
