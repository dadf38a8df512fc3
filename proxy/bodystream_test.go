package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestChunkReadiness(t *testing.T) {
	for _, tc := range []struct {
		buf   string
		left  int // bytes left of the current chunk; 0: buf starts with a header
		ready bool
	}{
		{"", 0, false},
		{"1a", 0, false},
		{"1a\r", 0, false},
		{"1a\r\n", 0, false},           // header only: Read would wait for data
		{"3\r\nab", 0, true},           // part of the data: returned at once
		{"3\r\nabc", 0, false},         // whole data: fasthttp then waits for CRLF
		{"3\r\nabc\r", 0, false},       //
		{"3\r\nabc\r\n", 0, true},      //
		{"3\r\nabc\r\n5\r\n", 0, true}, // the next header may be partial
		{"3;x=1\r\nabc\r\n", 0, true},  // extension
		{"3 \r\nabc\r\n", 0, true},     // whitespace after the size
		{"A\r\n0123456789\r\n", 0, true},
		{"0\r\n", 0, false}, // last chunk: its empty trailer is still out
		{"0\r\n\r\n", 0, true},
		{"zz\r\nabc\r\n", 0, false},
		{"123456789\r\nab", 0, false}, // too long a size: left to fasthttp
		{"ab", 3, true},
		{"abc", 3, false},
		{"abc\r", 3, false},
		{"abc\r\n", 3, true},
		{"abc\r\n7", 3, true},
	} {
		var n int
		if tc.left > 0 {
			n = chunkReady([]byte(tc.buf), tc.left)
		} else {
			n = nextChunkReady([]byte(tc.buf))
		}
		if (n > 0) != tc.ready {
			t.Errorf("%q left %d: %d, want ready=%v", tc.buf, tc.left, n, tc.ready)
		}
	}
}

// heldStream answers one streamed request from an upstream that writes
// three chunks at once and then holds the body open until end is called,
// when it sends the last chunk.
func heldStream(t *testing.T) (resp *fasthttp.Response, end func()) {
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

	hc := &fasthttp.HostClient{Addr: ln.Addr().String(), StreamResponseBody: true}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp = fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + ln.Addr().String() + "/v1/chat/completions")
	req.Header.SetMethod("POST")
	resp.StreamBody = true
	if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		closeUpstream(resp, nil)
		fasthttp.ReleaseResponse(resp)
	})
	// The status line, headers and chunks came in one segment; give them
	// time to be whole in the socket before fasthttp's first body read.
	time.Sleep(50 * time.Millisecond)
	return resp, func() { release <- struct{}{} }
}

// TestBodyStreamBuffered runs fasthttp's real client against heldStream:
// Buffered must see the two chunks behind the first, then nothing, without
// reading. It also fails when a fasthttp upgrade moves the fields Buffered
// reads.
func TestBodyStreamBuffered(t *testing.T) {
	resp, end := heldStream(t)
	var bs bodyStream
	bs.reset(resp.BodyStream())
	if !streamLayout.ok || bs.outer == nil {
		t.Fatalf("fasthttp's body stream layout was not recognised (type %T): bursts are no longer coalesced", resp.BodyStream())
	}
	p := make([]byte, 4096)
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
	if got := bs.Buffered(); got != 0 {
		t.Fatalf("Buffered() = %d after the end", got)
	}
}

// TestStreamBurstOneWrite: events an upstream sends together reach the
// caller together, in one HTTP chunk, not one chunk (one write) per event.
func TestStreamBurstOneWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const events = 20
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				var req fasthttp.Request
				for req.Read(br) == nil {
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
					if _, err := io.WriteString(c, b.String()); err != nil {
						return
					}
				}
			}()
		}
	}()
	_, addr := startProxy(t, testConfig("http://"+ln.Addr().String()+"/v1"), newCaptureSink())

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

// FuzzChunkReady holds Buffered to its promise with fasthttp's own chunked
// reader: when nextChunkReady says the bytes in memory suffice, the first
// body Read over exactly those bytes never asks the network for more.
func FuzzChunkReady(f *testing.F) {
	for _, s := range []string{"3\r\nabc\r\n", "3\r\nab", "0\r\n\r\n", "3;x\r\nabc\r\n", "1a\r\n", "3 \r\nabc\r\n0\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		if nextChunkReady(buf) == 0 {
			return
		}
		head := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		network := &waitReader{}
		br := bufio.NewReaderSize(io.MultiReader(strings.NewReader(head), bytes.NewReader(buf), network), 1<<16)
		var resp fasthttp.Response
		resp.StreamBody = true
		if err := resp.Read(br); err != nil {
			t.Fatalf("headers: %v", err)
		}
		network.asked = false // reading the headers may have looked past them
		_, _ = resp.BodyStream().Read(make([]byte, 1<<16))
		if network.asked {
			t.Fatalf("%q: ready, but fasthttp needed more bytes", buf)
		}
	})
}
