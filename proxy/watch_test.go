package proxy

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// slowUpstream reads one request per connection, then waits up to hold
// before answering; closed receives when gptapi closed the connection
// before the answer was due.
func slowUpstream(t *testing.T, hold time.Duration) (url string, closed <-chan struct{}) {
	return heldUpstream(t, "", hold)
}

// prefillUpstream is slowUpstream for streams: it sends an event stream's
// headers at once, then nothing for hold, as a server busy with a long
// prompt's prefill.
func prefillUpstream(t *testing.T, hold time.Duration) (url string, closed <-chan struct{}) {
	return heldUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", hold)
}

// heldUpstream reads one request per connection, writes head, then waits
// up to hold before answering.
func heldUpstream(t *testing.T, head string, hold time.Duration) (url string, closed <-chan struct{}) {
	ch := make(chan struct{}, 4)
	url = rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if req.Read(br) != nil {
			return
		}
		// The request is in. Wait for the answer's time, or for gptapi
		// to close.
		io.WriteString(c, head)
		c.SetReadDeadline(time.Now().Add(hold))
		if _, err := io.Copy(io.Discard, br); err == nil {
			ch <- struct{}{} // EOF: closed by gptapi
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	})
	return url, ch
}

func sendChat(t *testing.T, addr string) net.Conn {
	return sendBody(t, addr, chatBody)
}

func sendStreamChat(t *testing.T, addr string) net.Conn {
	return sendBody(t, addr, `{"stream":true,`+chatBody[1:])
}

func sendBody(t *testing.T, addr, body string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	return conn
}

// waitKind is one of the two waits the watcher looks after: a plain
// request waiting for its whole answer, a stream for its first event.
type waitKind struct {
	name     string
	upstream func(*testing.T, time.Duration) (string, <-chan struct{})
	send     func(*testing.T, string) net.Conn
}

var waitKinds = []waitKind{
	{"plain", slowUpstream, sendChat},
	{"stream before its first event", prefillUpstream, sendStreamChat},
}

// start runs a proxy in front of the kind's upstream, which answers after
// hold, and sends it one request. closed receives when gptapi closed the
// upstream connection before the answer.
func (k waitKind) start(t *testing.T, hold time.Duration) (srv *Server, conn net.Conn, closed <-chan struct{}, sink *captureSink) {
	up, closed := k.upstream(t, hold)
	sink = newCaptureSink()
	srv, addr := startProxy(t, testConfig(up), sink)
	return srv, k.send(t, addr), closed, sink
}

// A caller that leaves while its answer is generated (a stream's: before
// its first event): the upstream request is cancelled (its connection
// closed) and the record says 499 (SPEC §4.4).
func TestCallerLeavesWhileWaiting(t *testing.T) {
	for _, k := range waitKinds {
		t.Run(k.name, func(t *testing.T) {
			_, conn, closed, sink := k.start(t, 5*time.Second)
			time.Sleep(200 * time.Millisecond)
			conn.Close()
			select {
			case <-closed:
			case <-time.After(2 * time.Second):
				t.Fatal("the upstream connection was not closed within 2s of the caller leaving")
			}
			rec := sink.wait(t)
			if rec.Status != 499 || rec.Latency > 1500*time.Millisecond {
				t.Fatalf("record status %d latency %v error %q", rec.Status, rec.Latency, rec.Error)
			}
		})
	}
}

// A request still waiting when shutdown stops waiting is cut: its record
// says 502 "gptapi shutting down" and Shutdown does not wait for the
// upstream (SPEC §1).
func TestShutdownCutsWaiting(t *testing.T) {
	for _, k := range waitKinds {
		t.Run(k.name, func(t *testing.T) {
			srv, conn, closed, sink := k.start(t, 10*time.Second)
			shutdownSoon(t, srv, func() bool { return srv.waiting.count() > 0 })
			<-closed
			rec := sink.wait(t)
			if rec.Status != 502 || !strings.Contains(string(rec.Error), "shutting down") {
				t.Fatalf("record status %d error %q", rec.Status, rec.Error)
			}
			if srv.Unfinished() != 0 {
				t.Fatalf("%d records unfinished", srv.Unfinished())
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			got, _ := io.ReadAll(conn)
			if !strings.HasPrefix(string(got), "HTTP/1.1 502") {
				t.Fatalf("caller got %q", got)
			}
		})
	}
}

// The watcher's snapshot holds no exchange once a pass is over: a pooled
// exchange keeps its last request's buffers, and one the snapshot held
// could never be collected.
func TestWatchKeepsNoExchange(t *testing.T) {
	var ws waitingSet
	xs := []*exchange{new(exchange), new(exchange), new(exchange)}
	for _, x := range xs {
		ws.add(x)
	}
	if n := ws.check(nil); n != 0 {
		t.Fatalf("cancelled %d requests without callers", n)
	}
	for _, x := range xs {
		ws.remove(x)
	}
	for i, w := range ws.scr[:cap(ws.scr)] {
		if w.x != nil || w.caller != nil {
			t.Fatalf("snapshot entry %d still holds an exchange", i)
		}
	}
}
