package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/internal/testlog"
)

// failingListener fails its first fails Accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Accept errors other than the listener's close (EMFILE: a flood of
// connections past the file descriptor limit) are waited out, logged once,
// and the gateway goes on serving; fasthttp alone would end Serve at the
// first. Shutdown still ends Serve.
func TestAcceptErrorsWaitedOut(t *testing.T) {
	var log testlog.Buffer
	s, err := New(testConfig(), &captureSink{}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.fails.Store(5)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + inner.Addr().String() + "/health")
	if err := fasthttp.DoTimeout(req, resp, 3*time.Second); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("/health after failed accepts: %v, status %d", err, resp.StatusCode())
	}
	if n := bytes.Count([]byte(log.String()), []byte("cannot accept connections")); n != 1 {
		t.Errorf("%d log lines for 5 failed accepts, want 1:\n%s", n, log.String())
	}
	if !bytes.Contains([]byte(log.String()), []byte("too many open files")) {
		t.Errorf("the log line does not say why:\n%s", log.String())
	}

	// Shutdown ends a pause between failed accepts, however long.
	defer func(lo, hi time.Duration) { acceptRetryMin, acceptRetryMax = lo, hi }(acceptRetryMin, acceptRetryMax)
	acceptRetryMin, acceptRetryMax = time.Hour, time.Hour
	ln.fails.Store(1 << 30)
	c, err := net.Dial("tcp", inner.Addr().String()) // ends the Accept under way; the next one fails
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(50 * time.Millisecond) // into the pause
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-served:
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}

// A connection gptapi could not make for want of its own resources blames
// no upstream; one the upstream refused or let time out does.
func TestUpstreamFailureLocal(t *testing.T) {
	up := &upstream{cfg: &configs.Client{Name: "up0"}}
	dial := func(call string, errno syscall.Errno) error {
		return fmt.Errorf("error when dialing 127.0.0.1:1: %w",
			&net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError(call, errno)})
	}
	for _, c := range []struct {
		err   error
		local bool
		msg   string
	}{
		{dial("socket", syscall.EMFILE), true, "up0: cannot connect (gptapi is out of file descriptors, ports or socket memory)"},
		{dial("socket", syscall.ENFILE), true, "up0: cannot connect (gptapi is out of file descriptors, ports or socket memory)"},
		{dial("connect", syscall.EADDRNOTAVAIL), true, "up0: cannot connect (gptapi is out of file descriptors, ports or socket memory)"},
		{dial("connect", syscall.ENOBUFS), true, "up0: cannot connect (gptapi is out of file descriptors, ports or socket memory)"},
		{fasthttp.ErrNoFreeConns, true, "up0: no free connection (max_conns reached)"},
		{dial("connect", syscall.ECONNREFUSED), false, "up0: connection refused"},
		{dial("connect", syscall.EHOSTUNREACH), false, "up0: cannot connect"},
		{fasthttp.ErrDialTimeout, false, "up0: timeout"},
	} {
		e := upstreamFailure(up, c.err)
		if e.local != c.local || e.msg != c.msg {
			t.Errorf("%v: local %v, %q; want %v, %q", c.err, e.local, e.msg, c.local, c.msg)
		}
	}
}

// A caller that sends its request slower than server.read_timeout allows
// gets a 408 that says so, and its connection closed; a malformed request
// stays a 400.
func TestSlowCallerTimesOut(t *testing.T) {
	cfg := testConfig()
	cfg.Server.ReadTimeout = 300 * time.Millisecond
	_, addr := startProxy(t, cfg, &captureSink{})
	for _, c := range []struct {
		name, sent string
		status     int
		code       string
	}{
		{"headers cut", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", 408, `"code":"request_timeout"`},
		{"body short", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{", 408, `"code":"request_timeout"`},
		{"malformed", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400, `"code":"invalid_request"`},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(c.sent)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn) // to the close
		conn.Close()
		if err != nil {
			t.Fatalf("%s: %v after %q", c.name, err, got)
		}
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(bytes.NewReader(got))); err != nil {
			t.Fatalf("%s: %v in %q", c.name, err, got)
		}
		if resp.StatusCode() != c.status || !bytes.Contains(resp.Body(), []byte(c.code)) {
			t.Errorf("%s: %d %s, want %d with %s", c.name, resp.StatusCode(), resp.Body(), c.status, c.code)
		}
	}
}
