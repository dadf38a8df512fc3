package proxy

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
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

// TestUpstreamPathEscaped: a base_url path is sent as written, escapes
// kept: decoded, "%20" would put a space in the request line and "%2F"
// would make another path.
func TestUpstreamPathEscaped(t *testing.T) {
	for _, tc := range []struct{ base, want string }{
		{"http://h/v1", "POST /v1/chat/completions HTTP/1.1\r\n"},
		{"http://h/v1/", "POST /v1/chat/completions HTTP/1.1\r\n"},
		{"http://h/my%20api/v1", "POST /my%20api/v1/chat/completions HTTP/1.1\r\n"},
		{"http://h/a%2Fb/v1", "POST /a%2Fb/v1/chat/completions HTTP/1.1\r\n"},
		{"http://h/v1%C3%A9", "POST /v1%C3%A9/chat/completions HTTP/1.1\r\n"},
		{"http://h/v1é", "POST /v1%C3%A9/chat/completions HTTP/1.1\r\n"},
	} {
		up, err := newUpstream(&configs.Client{Name: "a", BaseURL: tc.base}, &configs.Default().Check)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(up.heads[logsink.Chat]); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: head %q, want it to start %q", tc.base, got, tc.want)
		}
		if want := strings.TrimSuffix(strings.Fields(tc.want)[1], "/chat/completions") + "/models"; up.modelsURI != want {
			t.Errorf("%s: models URI %q, want %q", tc.base, up.modelsURI, want)
		}
	}
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

// TestHTTPSHeadersEndFirstByte: over TLS too, first_byte_timeout bounds an
// answer's headers only; a body that comes later is bounded by
// request_timeout (SPEC §2). A plain answer whose headers come at once and
// whose body comes after more than first_byte_timeout is answered, and a
// stream whose headers come at once still has first_byte_timeout for its
// first event.
func TestHTTPSHeadersEndFirstByte(t *testing.T) {
	const late = 1500 * time.Millisecond
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			time.Sleep(late)
			io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(late)
		io.WriteString(w, "{}")
	}))
	defer ts.Close()
	cfg := testConfig(ts.URL + "/v1")
	cfg.Check.FirstByteTimeout = time.Second
	cfg.Check.RequestTimeout = 5 * time.Second
	srv, addr := startProxy(t, cfg, newCaptureSink())
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	for _, up := range srv.state.Load().upstreams {
		up.hc.TLSConfig.RootCAs = roots
	}
	if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("plain answer, body %v after its headers: status %d %s", late, status, body)
	}
	status, _, body := post(t, addr, "/v1/chat/completions", `{"stream":true,`+chatBody[1:])
	if status != 504 {
		t.Fatalf("stream, first event %v after its headers: status %d %s, want 504", late, status, body)
	}
}

// TestPlainAnswerFramings: a plain answer is read to its exact end however
// it is framed, so the connection serves the next request.
func TestPlainAnswerFramings(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	cases := []struct{ name, answer string }{
		{"content-length", ok + "Content-Length: 2\r\n\r\n{}"},
		{"chunked", ok + "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"},
		{"chunked with a trailer", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: 1\r\n\r\n"},
		{"after 100 Continue", "HTTP/1.1 100 Continue\r\n\r\n" + ok + "Content-Length: 2\r\n\r\n{}"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var accepted atomic.Int32
			answer := answering([]byte(c.answer))
			up := rawUpstream(t, func(conn net.Conn, br *bufio.Reader) {
				accepted.Add(1)
				answer(conn, br)
			})
			_, addr := startProxy(t, testConfig(up), newCaptureSink())
			for i := range 3 {
				if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 || string(body) != "{}" {
					t.Fatalf("request %d: status %d body %q", i, status, body)
				}
			}
			if n := accepted.Load(); n != 1 {
				t.Fatalf("%d upstream connections for 3 requests, want 1", n)
			}
		})
	}
}

// TestEndlessInterimAnswers: an upstream that sends 1xx answers without
// end fails the attempt at once (502), plain or stream, instead of
// holding it until first_byte_timeout or, for a stream, for ever.
func TestEndlessInterimAnswers(t *testing.T) {
	cfg := testConfig(rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if req.Read(br) != nil {
			return
		}
		io.WriteString(c, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 1000))
		time.Sleep(10 * time.Second)
	}))
	cfg.Check.FirstByteTimeout, cfg.Check.RequestTimeout = 8*time.Second, 9*time.Second
	_, addr := startProxy(t, cfg, newCaptureSink())
	for _, body := range []string{chatBody, `{"stream":true,` + chatBody[1:]} {
		start := time.Now()
		status, _, answer := post(t, addr, "/v1/chat/completions", body)
		if took := time.Since(start); status != 502 || took > 3*time.Second {
			t.Fatalf("%s: status %d after %v: %s", body, status, took, answer)
		}
	}
}

// readHead reads a request's head, through its blank line, as sent.
func readHead(br *bufio.Reader) (string, error) {
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		head.WriteString(line)
		if line == "\r\n" {
			return head.String(), nil
		}
	}
}

// TestRequestSent: the bytes an upstream gets, head and body, for each way
// a client's key and headers combine, and for a body too large to ride
// behind its head; each arrives as one request whose Content-Length is its
// body's.
func TestRequestSent(t *testing.T) {
	type sent struct{ head, body string }
	got := make(chan sent, 1)
	upURL := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			var req fasthttp.Request
			if err := req.Header.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
				t.Errorf("head %q: %v", head, err)
				return
			}
			body := make([]byte, req.Header.ContentLength())
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			got <- sent{head, string(body)}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
				return
			}
		}
	})
	host := strings.TrimSuffix(strings.TrimPrefix(upURL, "http://"), "/v1")
	big := strings.Repeat("x", oneWrite)
	for _, tc := range []struct {
		name      string
		apiKey    string
		keyMode   string
		headers   map[string]string
		authKeys  []string
		callerKey string
		content   string
		host      string // the Host sent, if not base_url's
		want      string // head after the request line and Host
	}{
		{name: "api_key", apiKey: "sk-up", callerKey: "sk-caller",
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\nAuthorization: Bearer sk-up\r\n"},
		{name: "caller's key", callerKey: "sk-caller",
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\nAuthorization: Bearer sk-caller\r\n"},
		{name: "passthrough", apiKey: "sk-up", keyMode: configs.KeyModePassthrough, callerKey: "sk-caller",
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\nAuthorization: Bearer sk-caller\r\n"},
		{name: "gptapi's own key is not sent", authKeys: []string{"sk-caller"}, callerKey: "sk-caller",
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"},
		{name: "no key", want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"},
		{name: "client headers", apiKey: "sk-up", callerKey: "sk-caller",
			headers: map[string]string{"x-team": "a", "X-TEAM": "b", "authorization": "Bearer cfg", "accept-encoding": "gzip",
				"Content-Length": "5", "transfer-encoding": "chunked", "user-agent": "ua"},
			want: "Content-Type: application/json\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer cfg\r\nX-Team: a\r\nUser-Agent: ua\r\n"},
		{name: "Host replaced", headers: map[string]string{"host": "virt.example"}, host: "virt.example",
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"},
		{name: "body past one write", content: big,
			want: "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(upURL)
			c := &cfg.Clients[0]
			c.APIKey, c.Headers = tc.apiKey, tc.headers
			if tc.keyMode != "" {
				c.KeyMode = tc.keyMode
			}
			cfg.Auth.Keys = tc.authKeys
			_, addr := startProxy(t, cfg, nil)
			body := `{"model":"qwen-7b","messages":[{"role":"user","content":"` + tc.content + `hi"}]}`
			var kv []string
			if tc.callerKey != "" {
				kv = []string{"Authorization", "Bearer " + tc.callerKey}
			}
			if status, _, answer := postWith(t, addr, "/v1/chat/completions", []byte(body), kv...); status != 200 {
				t.Fatalf("status %d: %s", status, answer)
			}
			var s sent
			select {
			case s = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream got no whole request")
			}
			h := host
			if tc.host != "" {
				h = tc.host
			}
			want := "POST /v1/chat/completions HTTP/1.1\r\nHost: " + h + "\r\n" + tc.want +
				"Content-Length: " + strconv.Itoa(len(s.body)) + "\r\n\r\n"
			if s.head != want {
				t.Errorf("head\n%q\nwant\n%q", s.head, want)
			}
			if !strings.Contains(s.body, tc.content+"hi") || !json.Valid([]byte(s.body)) {
				t.Errorf("body %.80q... (%d bytes) is not the request's", s.body, len(s.body))
			}
		})
	}
}

// TestReloadChangesHeaders: a reload that keeps a client's transport (and
// so its connections) but changes its headers sends the new ones from the
// next request on.
func TestReloadChangesHeaders(t *testing.T) {
	team := make(chan string, 4)
	upURL := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		team <- string(ctx.Request.Header.Peek("X-Team"))
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`)
	})
	cfg := testConfig(upURL)
	cfg.Clients[0].Headers = map[string]string{"X-Team": "a"}
	srv, addr := startProxy(t, cfg, nil)
	for _, want := range []string{"a", "b"} {
		if want == "b" {
			pool := srv.state.Load().upstreams[0].hc
			next := testConfig(upURL)
			next.Clients[0].Headers = map[string]string{"X-Team": "b"}
			if err := srv.Apply(next); err != nil {
				t.Fatal(err)
			}
			if srv.state.Load().upstreams[0].hc != pool {
				t.Fatal("the reload made a new pool; this test is about one that keeps it")
			}
		}
		if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		if got := <-team; got != want {
			t.Errorf("X-Team %q, want %q", got, want)
		}
	}
}

// TestModelsSent: the model list fetch carries the headers every request to
// the client carries (fixedHeaders), and the caller's key only where the
// client has no Authorization of its own.
func TestModelsSent(t *testing.T) {
	heads := make(chan string, 1)
	upURL := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		head, err := readHead(br)
		if err != nil {
			return
		}
		heads <- head
		const list = `{"object":"list","data":[]}`
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(list))+"\r\nConnection: close\r\n\r\n"+list) //nolint:errcheck
	})
	for _, tc := range []struct {
		name    string
		c       configs.Client
		key     string
		want    []string
		notWant string
	}{
		{"api_key and headers", configs.Client{APIKey: "sk-up", Headers: map[string]string{"x-team": "a"}}, "sk-caller",
			[]string{"Authorization: Bearer sk-up\r\n", "X-Team: a\r\n", "Accept-Encoding: identity\r\n"}, "sk-caller"},
		{"caller's key", configs.Client{}, "sk-caller", []string{"Authorization: Bearer sk-caller\r\n"}, ""},
		{"a header's Authorization", configs.Client{KeyMode: configs.KeyModePassthrough, Headers: map[string]string{"authorization": "Bearer cfg"}}, "sk-caller",
			[]string{"Authorization: Bearer cfg\r\n"}, "sk-caller"},
	} {
		c := tc.c
		c.Name, c.BaseURL = "a", upURL+"/"
		up, err := newUpstream(&c, &configs.Default().Check)
		if err != nil {
			t.Fatal(err)
		}
		fetchUpstreamModels(up, []byte(tc.key), 5*time.Second)
		var head string
		select {
		case head = <-heads:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no model list request", tc.name)
		}
		if !strings.HasPrefix(head, "GET /v1/models HTTP/1.1\r\n") {
			t.Errorf("%s: request line of %q", tc.name, head)
		}
		for _, w := range tc.want {
			if !strings.Contains(head, w) {
				t.Errorf("%s: %q lacks %q", tc.name, head, w)
			}
		}
		if tc.notWant != "" && strings.Contains(head, tc.notWant) {
			t.Errorf("%s: %q carries %q", tc.name, head, tc.notWant)
		}
	}
}
