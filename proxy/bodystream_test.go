package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/logsink"
)

// bufferedBody is a chunked body reader in the given state over buf, all of
// it buffered, with network behind it.
func bufferedBody(buf []byte, state uint8, left int64, network io.Reader) *bodyReader {
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buf), network), 1<<16)
	if len(buf) > 0 {
		_, _ = br.Peek(len(buf)) // one Read of the bytes.Reader: the network is not asked
	}
	return &bodyReader{br: br, mode: bodyChunked, state: state, left: left}
}

// TestChunkReadiness: Buffered says ready exactly when a Read has bytes
// (or the end) to return without waiting for the network, and a Read it
// called ready never asks the network.
func TestChunkReadiness(t *testing.T) {
	for _, tc := range []struct {
		buf   string
		state uint8
		left  int64 // bytes left of the current chunk, in chunkData
		ready bool
	}{
		{"", chunkHead, 0, false},
		{"1a", chunkHead, 0, false},
		{"1a\r", chunkHead, 0, false},
		{"1a\r\n", chunkHead, 0, false},           // header only: Read would wait for data
		{"3\r\nab", chunkHead, 0, true},           // part of the data: returned at once
		{"3\r\nabc", chunkHead, 0, true},          // the closing CRLF is left for the next Read
		{"3\r\nabc\r\n", chunkHead, 0, true},      //
		{"3\r\nabc\r\n5\r\n", chunkHead, 0, true}, // the next header may be partial
		{"3;x=1\r\nabc\r\n", chunkHead, 0, true},  // extension
		{"3 \r\nabc\r\n", chunkHead, 0, true},     // whitespace after the size
		{"A\r\n0123456789\r\n", chunkHead, 0, true},
		{"0\r\n", chunkHead, 0, false}, // last chunk: its empty trailer is still out
		{"0\r\n\r\n", chunkHead, 0, true},
		{"zz\r\nabc\r\n", chunkHead, 0, false},
		{"1234567890123456\r\nab", chunkHead, 0, false}, // size beyond int64
		{"ab", chunkData, 3, true},
		{"abc\r", chunkData, 3, true},
		{"\r", chunkCRLF, 0, false},
		{"\r\n", chunkCRLF, 0, false},
		{"\r\n3\r\n", chunkCRLF, 0, false},
		{"\r\n3\r\na", chunkCRLF, 0, true},
		{"\r\n0\r\n\r\n", chunkCRLF, 0, true},
	} {
		network := &waitReader{}
		b := bufferedBody([]byte(tc.buf), tc.state, tc.left, network)
		n := b.Buffered()
		if (n > 0) != tc.ready {
			t.Errorf("%q state %d: Buffered() = %d, want ready=%v", tc.buf, tc.state, n, tc.ready)
		}
		if n > 0 {
			_, _ = b.Read(make([]byte, 1<<16))
			if network.asked {
				t.Errorf("%q state %d: ready, but Read asked the network", tc.buf, tc.state)
			}
		}
	}
}

// heldStream answers one streamed request from an upstream that writes
// three chunks at once and then holds the body open until end is called,
// when it sends the last chunk. It returns the body as the relay reads it,
// on a connection held as tryStream holds it.
func heldStream(t *testing.T) (body *bodyReader, end func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	release := make(chan struct{}, 1)
	t.Cleanup(func() { close(release) })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(c)); err != nil {
			return
		}
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := range 3 {
			ev := "data: " + strconv.Itoa(i) + "\n\n"
			b.WriteString(strconv.FormatInt(int64(len(ev)), 16) + "\r\n" + ev + "\r\n")
		}
		if _, err := io.WriteString(c, b.String()); err != nil {
			return
		}
		<-release
		_, _ = io.WriteString(c, "0\r\n\r\n")
	}()

	cfg := testConfig("http://" + ln.Addr().String() + "/v1")
	up, err := newUpstream(&cfg.Clients[0], &cfg.Check)
	if err != nil {
		t.Fatal(err)
	}
	var conn heldConn
	var hdr fasthttp.ResponseHeader
	head := append(up.heads[logsink.Chat], "Content-Length: 0\r\n\r\n"...)
	if err := conn.start(up.streamPool, head, nil, &hdr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	body = new(bodyReader)
	body.reset(conn.br, bodyLength(&hdr))
	t.Cleanup(func() { conn.finish(false) })
	// The status line, headers and chunks came in one segment; give them
	// time to be whole in the socket before the first body read.
	time.Sleep(50 * time.Millisecond)
	return body, func() { release <- struct{}{} }
}

// TestBodyStreamBuffered runs a held upstream connection against
// heldStream: Buffered must see the two chunks behind the first, then
// nothing, without reading.
func TestBodyStreamBuffered(t *testing.T) {
	bs, end := heldStream(t)
	p := make([]byte, len("data: 0\n\n")) // one event per Read
	for i := range 3 {
		n, err := bs.Read(p)
		if err != nil || string(p[:n]) != "data: "+strconv.Itoa(i)+"\n\n" {
			t.Fatalf("read %d: %q %v", i, p[:n], err)
		}
		if got := bs.Buffered(); (got > 0) != (i < 2) {
			t.Fatalf("after chunk %d Buffered() = %d", i, got)
		}
	}
	end()
	if n, err := bs.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("end: %d %v", n, err)
	}
	if got := bs.Buffered(); got != 0 || !bs.Done() {
		t.Fatalf("Buffered() = %d, Done() = %v after the end", got, bs.Done())
	}
}

// TestStreamBurstOneWrite: events an upstream sends together reach the
// caller together, in one HTTP chunk, not one chunk (one write) per event.
func TestStreamBurstOneWrite(t *testing.T) {
	const events = 20
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := range events + 1 {
		ev := `data: {"id":"c","choices":[{"index":0,"delta":{"content":"t` + strconv.Itoa(i) + `"}}]}` + "\n\n"
		if i == events {
			ev = "data: [DONE]\n\n"
		}
		b.WriteString(strconv.FormatInt(int64(len(ev)), 16) + "\r\n" + ev + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	_, addr := startProxy(t, testConfig(rawUpstream(t, answering([]byte(b.String())))), newCaptureSink())

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`
	io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	br := bufio.NewReader(conn)
	var h fasthttp.ResponseHeader
	if err := h.Read(br); err != nil || h.StatusCode() != 200 {
		t.Fatalf("status %d: %v", h.StatusCode(), err)
	}
	// Count the HTTP chunks gptapi wrote: one per flushed write.
	chunks, dataLines := 0, 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		size, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
		if err != nil {
			t.Fatalf("chunk size %q: %v", line, err)
		}
		if size == 0 {
			break
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(br, data); err != nil {
			t.Fatal(err)
		}
		chunks++
		dataLines += strings.Count(string(data), "data: ")
	}
	if dataLines != events+1 {
		t.Fatalf("%d data lines, want %d", dataLines, events+1)
	}
	if chunks > 3 {
		t.Errorf("%d events sent at once reached the caller in %d writes", events+1, chunks)
	}
}

// waitReader stands for the network behind the buffered bytes.
type waitReader struct{ asked bool }

func (w *waitReader) Read([]byte) (int, error) {
	w.asked = true
	return 0, errors.New("fasthttp would wait on the network here")
}

// FuzzChunkReady holds Buffered to its promise: whenever it says ready,
// the next Read returns without asking the network for more.
func FuzzChunkReady(f *testing.F) {
	for _, s := range []string{"3\r\nabc\r\n", "3\r\nab", "0\r\n\r\n", "3;x\r\nabc\r\n", "1a\r\n", "3 \r\nabc\r\n0\r\n",
		"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, buf []byte, size uint8) {
		network := &waitReader{}
		b := bufferedBody(buf, chunkHead, 0, network)
		p := make([]byte, int(size)+1)
		for b.Buffered() > 0 {
			if _, err := b.Read(p); err != nil {
				break
			}
			if network.asked {
				t.Fatalf("%q: ready, but Read needed more bytes", buf)
			}
		}
	})
}

// FuzzChunkedDecode: what the standard library's chunked writer encodes,
// the body reader decodes to the same bytes, however the network splits
// them and whatever size the reads are.
func FuzzChunkedDecode(f *testing.F) {
	f.Add([]byte("data: x\n\n"), []byte{3, 1, 200}, uint8(5))
	f.Fuzz(func(t *testing.T, data, cuts []byte, size uint8) {
		var enc bytes.Buffer
		w := httputil.NewChunkedWriter(&enc)
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			_, _ = w.Write(rest[:n])
			rest = rest[n:]
		}
		_, _ = w.Write(rest)
		_ = w.Close()
		enc.WriteString("\r\n") // no trailers
		var b bodyReader
		b.reset(bufio.NewReaderSize(iotest.HalfReader(&enc), 16), -1)
		got, err := io.ReadAll(iotest.OneByteReader(&readSize{r: &b, n: int(size) + 1}))
		if err != nil || !bytes.Equal(got, data) || !b.Done() {
			t.Fatalf("decoded %q (%v, done %v), want %q", got, err, b.Done(), data)
		}
	})
}

// readSize reads at most n bytes per Read.
type readSize struct {
	r io.Reader
	n int
}

func (r *readSize) Read(p []byte) (int, error) { return r.r.Read(p[:min(len(p), r.n)]) }

// A stream sent on a pooled connection the upstream closed while idle is
// sent once more on a fresh one, as a non-stream request is.
func TestStalePooledConnectionStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{IdleTimeout: 50 * time.Millisecond, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.WriteString(`data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}` + "\n\n")
			w.Flush()
			w.WriteString("data: [DONE]\n\n")
		})
	}}
	go up.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = up.Shutdown() })
	_, addr := startProxy(t, testConfig("http://"+ln.Addr().String()+"/v1"), nil)
	body := `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"x"}]}`
	for i := 0; i < 3; i++ {
		status, _, got := post(t, addr, "/v1/chat/completions", body)
		if status != 200 || !strings.Contains(string(got), "data: [DONE]") {
			t.Fatalf("request %d: %d %s", i, status, got)
		}
		time.Sleep(200 * time.Millisecond) // the upstream closes the idle connection meanwhile
	}
}
