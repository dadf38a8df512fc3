package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gptapi/gptapi/internal/throttle"
)

// callerListener hands fasthttp callerConns, and keeps the open ones so
// shutdown can close the callers' side of what it cuts (SPEC §1).
type callerListener struct {
	net.Listener
	s *Server

	mu    sync.Mutex
	conns map[*callerConn]struct{}

	acceptLog throttle.Log
	closed    chan struct{} // closed by Close: an Accept error then ends Serve
	closeOnce sync.Once
}

func newCallerListener(ln net.Listener, s *Server) *callerListener {
	return &callerListener{Listener: ln, s: s, closed: make(chan struct{})}
}

// Pacing of Accept while accepting fails (vars for a test).
var acceptRetryMin, acceptRetryMax = 5 * time.Millisecond, time.Second

// Accept waits out every error but the listener's close. fasthttp takes
// any other error as the listener's end and Serve returns: one flood of
// connections past the process's file descriptor limit (EMFILE), or a
// machine out of socket memory, would stop the gateway for good. Like
// nginx, gptapi logs, pauses accepting, and serves the connections it has
// until some close.
func (l *callerListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return l.track(c), nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		pause = min(max(2*pause, acceptRetryMin), acceptRetryMax)
		if ok, held := l.acceptLog.Allow(time.Now(), failureLogEvery); ok {
			l.s.log.Error("cannot accept connections; retrying", "err", err, "open_connections", l.open(),
				"more_since_last_line", held)
		}
		wait := time.NewTimer(pause)
		select {
		case <-wait.C:
		case <-l.closed: // shutdown does not wait out the pause
			wait.Stop()
			return nil, err
		}
	}
}

func (l *callerListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// track wraps a new connection and keeps it until it closes.
func (l *callerListener) track(c net.Conn) *callerConn {
	cc := &callerConn{Conn: c, l: l}
	cc.sock.init(c)
	if sc, ok := c.(syscall.Conn); ok {
		cc.raw, _ = sc.SyscallConn() // for gone's peek
	}
	l.mu.Lock()
	if l.conns == nil {
		l.conns = make(map[*callerConn]struct{})
	}
	l.conns[cc] = struct{}{}
	l.mu.Unlock()
	return cc
}

func (l *callerListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *callerListener) forget(c *callerConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// cutAll gives every open caller connection until the deadline to take
// what is being written to it (a stream's error event), then its writes
// fail. It returns how many were open.
func (l *callerListener) cutAll(deadline time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.cutAt.Store(deadline.UnixNano())
		_ = c.Conn.SetWriteDeadline(deadline)
	}
	return len(l.conns)
}

// closeAll closes every open caller connection.
func (l *callerListener) closeAll() int {
	l.mu.Lock()
	cs := make([]*callerConn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs)
}

// callerConn is one caller's connection. Each Write may wait at most
// server.send_timeout (read live from the config in force) for the caller
// to take bytes: a caller that stops reading fails the write, and a stream
// to it ends as 499 instead of holding its upstream forever (SPEC §4.4).
// fasthttp's WriteTimeout cannot do this: it bounds a whole response, which
// would cut long streams. The netpoller enforces the deadline: no timer,
// no allocation per write.
type callerConn struct {
	net.Conn
	l *callerListener
	// cutAt, once set (unix ns), is the deadline of every write: shutdown
	// is cutting this connection.
	cutAt  atomic.Int64
	closed atomic.Bool
	raw    syscall.RawConn // nil when the listener's conns have none
	sock   connIO
}

func (c *callerConn) Read(p []byte) (int, error) { return c.sock.read(p) }

func (c *callerConn) Write(p []byte) (int, error) {
	if at := c.cutAt.Load(); at != 0 {
		if err := c.Conn.SetWriteDeadline(time.Unix(0, at)); err != nil {
			return 0, err
		}
	} else if d := c.l.s.state.Load().cfg.Server.SendTimeout; d > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
			return 0, err
		}
	}
	return c.sock.write(p)
}

func (c *callerConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.l.forget(c)
	return c.Conn.Close()
}
