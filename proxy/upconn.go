package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// gptapi sends each upstream request on a connection it holds itself,
// taken from the upstream's fasthttp pool through the HostClient's public
// connection methods (AcquireConn, ReleaseConn, CloseConn: the ones a custom
// fasthttp.RoundTripper uses). fasthttp keeps what it is good at: dialling,
// TLS, the pool, its idle cleaner, max_conns with max_conn_wait, and the
// request writer and header parser. gptapi gets what a proxy needs:
//   - a stream is read from a bufio.Reader gptapi owns, so it knows what is
//     buffered (burst coalescing, bodystream.go) without fasthttp's internals;
//   - a running request's connection is known, so it can be closed when the
//     caller leaves or shutdown cuts (SPEC §1, §4.4): cancelling an upstream
//     is closing its connection, never draining it.

// connPool is a HostClient's pool of connections.
type connPool interface {
	acquire() (poolConn, error)
	release(poolConn)
	close(poolConn)
}

// poolConn is a connection taken from a connPool.
type poolConn struct {
	h      any      // the pool's handle for it (fasthttp's *clientConn)
	nc     net.Conn // as fasthttp dialled it: TLS over a deadlineConn for https
	reused bool     // it served an earlier exchange
}

// hostPool is connPool over a HostClient's methods. C is fasthttp's handle
// of a pooled connection, a type it does not export: it is inferred from
// the methods' signatures, and only the methods fasthttp exports on it are
// called.
type hostPool[C interface {
	comparable
	Conn() net.Conn
	LastUseTime() time.Time
}] struct {
	acquireFn func(time.Duration, bool) (C, error)
	releaseFn func(C)
	closeFn   func(C)
}

func newConnPool(hc *fasthttp.HostClient) connPool {
	return poolOf(hc.AcquireConn, hc.ReleaseConn, hc.CloseConn)
}

func poolOf[C interface {
	comparable
	Conn() net.Conn
	LastUseTime() time.Time
}](acquire func(time.Duration, bool) (C, error), release, closeConn func(C)) connPool {
	return &hostPool[C]{acquireFn: acquire, releaseFn: release, closeFn: closeConn}
}

// acquire waits up to the HostClient's MaxConnWaitTimeout (max_conn_wait)
// for a connection when max_conns are busy: fasthttp.ErrNoFreeConns after.
func (p *hostPool[C]) acquire() (poolConn, error) {
	cc, err := p.acquireFn(0, false)
	if err != nil {
		return poolConn{}, err
	}
	return poolConn{h: cc, nc: cc.Conn(), reused: !cc.LastUseTime().IsZero()}, nil
}

func (p *hostPool[C]) release(c poolConn) { p.releaseFn(c.h.(C)) }
func (p *hostPool[C]) close(c poolConn)   { p.closeFn(c.h.(C)) }

// upPool is an upstream's pool as one kind of exchange uses it: the
// HostClient, its connections, and how long a connection may stay silent
// once the answer flows (idle: stream_idle_timeout for streams; none for
// plain answers, which request_timeout bounds whole).
type upPool struct {
	hc    *fasthttp.HostClient
	conns connPool
	idle  time.Duration
}

// heldConn is an upstream connection held for one exchange, from sending
// the request until the answer was read (released to the pool) or the
// exchange was abandoned (closed).
type heldConn struct {
	p  *upPool
	pc poolConn
	dc *deadlineConn // the TCP connection under pc.nc
	br *bufio.Reader // the answer is read from here; from the HostClient's pool
}

// start sends a request (send) on a connection of p and reads the response
// header into hdr. The request's write and its answer are bounded by
// deadline (zero: none but first_byte_timeout). A pooled connection the
// upstream closed while idle fails before any byte of an answer: that
// request never ran, so it is sent once more on a fresh connection
// (neverRan); every other failure is the dispatch loop's to fail over.
func (h *heldConn) start(p *upPool, head, body []byte, hdr *fasthttp.ResponseHeader, deadline time.Time) error {
	for attempt := 0; ; attempt++ {
		err := h.send(p, head, body, deadline)
		writing := err != nil
		if err == nil {
			err = readHeader(hdr, h.br)
			if err == nil {
				return nil
			}
		}
		retry := attempt == 0 && h.pc.reused && neverRan(err, writing)
		h.finish(false)
		if !retry {
			return err
		}
	}
}

// send takes a connection and writes a request on it: head, then body
// unless it is empty (prepare puts a small body in head).
func (h *heldConn) send(p *upPool, head, body []byte, deadline time.Time) error {
	pc, err := p.conns.acquire()
	if err != nil {
		return err
	}
	h.p, h.pc, h.dc = p, pc, deadlineOf(pc.nc)
	if h.dc != nil {
		h.dc.idle = p.idle
	}
	// One deadline for the write and the answer's first byte (deadlineConn
	// starts first_byte_timeout here): an upstream that does not take the
	// request is as bad as one that does not answer it, and the netpoller
	// keeps one timer for both when they are equal.
	if err = pc.nc.SetDeadline(deadline); err == nil {
		if _, err = pc.nc.Write(head); err == nil && len(body) > 0 {
			_, err = pc.nc.Write(body)
		}
	}
	h.br = p.hc.AcquireReader(pc.nc)
	return err
}

// readHeader reads a response header, skipping interim (1xx) answers, at
// most maxInterim of them: an upstream sending them without end would
// otherwise hold a stream without a first-byte bound forever.
func readHeader(hdr *fasthttp.ResponseHeader, br *bufio.Reader) error {
	for i := range maxInterim + 1 {
		if err := hdr.Read(br); err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF // an interim answer came: the request ran
			}
			return err
		}
		if s := hdr.StatusCode(); s >= 200 || s < 100 {
			return nil
		}
	}
	return errTooManyInterim
}

// neverRan reports whether an attempt on a reused connection failed before
// the upstream could have run its request, so that sending it once more is
// safe: the write found the socket closed, or not one byte of an answer
// came (fasthttp's header read gives any failure of its first byte, a reset
// included, as a bare io.EOF). A failure after the first byte, a reset
// included, means the upstream had the request: sending it again would run
// it twice.
func neverRan(err error, writing bool) bool {
	if writing {
		return staleConn(err)
	}
	return err == io.EOF
}

// maxInterim is how many 1xx answers may come before the final one
// (fasthttp's own reader allows as many).
const maxInterim = 100

var errTooManyInterim = errors.New("more than 100 interim (1xx) answers")

// finish gives the connection back to the pool when reuse is true and
// nothing unread is left on it, else closes it (the upstream sees the
// request cancelled). It does nothing when no connection is held.
func (h *heldConn) finish(reuse bool) {
	if h.p == nil {
		return
	}
	if h.br != nil {
		reuse = reuse && h.br.Buffered() == 0
		h.p.hc.ReleaseReader(h.br)
	}
	if reuse {
		h.p.conns.release(h.pc)
	} else {
		h.p.conns.close(h.pc)
	}
	*h = heldConn{}
}

// interrupt closes the connection under a read or write in progress on
// another goroutine, which then fails; the owner still calls finish. The
// caller makes sure the owner has not finished yet.
func (h *heldConn) interrupt() {
	if h.dc != nil {
		_ = h.dc.Conn.Close()
	} else if h.pc.nc != nil {
		_ = h.pc.nc.Close()
	}
}

// deadlineOf returns the deadlineConn under c (dialled by hostClient, maybe
// wrapped in TLS by fasthttp), nil if there is none.
func deadlineOf(c net.Conn) *deadlineConn {
	for range 2 {
		switch t := c.(type) {
		case *deadlineConn:
			return t
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = t.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// reusable reports whether the connection can serve another exchange once
// body was read to its end.
func reusable(hdr *fasthttp.ResponseHeader, body *bodyReader) bool {
	return body.Done() && body.mode != bodyUntilClose && !hdr.ConnectionClose()
}
