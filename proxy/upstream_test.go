package proxy

import (
	"testing"

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
