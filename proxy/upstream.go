package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// upstream is one configured client: where to send, how to authorize, and
// its connection pools. It is immutable; a reload builds new ones and closes
// the idle connections of the old ones.
type upstream struct {
	cfg  *configs.Client
	host string // host[:port] as dialled
	path string // base_url path, e.g. "/v1"
	tls  bool

	// uris are the request paths per endpoint, e.g. "/v1/chat/completions".
	uris      [5]string
	modelsURI string

	// auth is the ready "Bearer <api_key>" header value, empty when the
	// caller's key is sent instead.
	auth string

	// plain serves non-streaming exchanges, stream serves SSE: their
	// connections time reads differently (see deadlineConn), so they do not
	// share a pool.
	plain  *fasthttp.HostClient
	stream *fasthttp.HostClient

	hists *upstreamStats // latency, TTFT, failure log throttle; kept by name across reloads
}

func newUpstream(c *configs.Client, chk *configs.Check) (*upstream, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return nil, err
	}
	up := &upstream{
		cfg:  c,
		host: u.Host,
		path: strings.TrimRight(u.Path, "/"),
		tls:  u.Scheme == "https",
	}
	if up.host != "" && u.Port() == "" {
		if up.tls {
			up.host += ":443"
		} else {
			up.host += ":80"
		}
	}
	up.uris[logsink.Chat] = up.path + "/chat/completions"
	up.uris[logsink.Completions] = up.path + "/completions"
	up.uris[logsink.Embeddings] = up.path + "/embeddings"
	up.uris[logsink.Rerank] = up.path + "/rerank"
	up.modelsURI = up.path + "/models"
	if c.KeyMode != "passthrough" && c.APIKey != "" {
		up.auth = "Bearer " + c.APIKey
	}
	up.plain = up.hostClient(c, chk.ConnectTimeout, chk.FirstByteTimeout, 0)
	// fasthttp refuses a body over the limit before reading it, whether its
	// Content-Length says so or its chunks add up to it: an upstream cannot
	// make gptapi allocate what it declares.
	up.plain.MaxResponseBodySize = chk.MaxResponseBytes
	up.stream = up.hostClient(c, chk.ConnectTimeout, chk.FirstByteTimeout, chk.StreamIdleTimeout)
	return up, nil
}

func (up *upstream) hostClient(c *configs.Client, connect, firstByte, idle time.Duration) *fasthttp.HostClient {
	maxConns := c.MaxConns
	if maxConns <= 0 {
		maxConns = 1024
	}
	return &fasthttp.HostClient{
		Addr:      up.host,
		Name:      "gptapi",
		IsTLS:     up.tls,
		TLSConfig: &tls.Config{ServerName: hostname(up.host), ClientSessionCache: tls.NewLRUClientSessionCache(64)},
		MaxConns:  maxConns,
		// uvicorn-based servers (vLLM, SGLang) close keep-alive connections
		// idle for 5 s; closing ours first avoids most stale ones.
		MaxIdleConnDuration: 4 * time.Second,
		// A pooled connection the upstream closed while idle fails before
		// any response byte: that request never ran, so it is sent once
		// more on a fresh connection. Every other failure is the dispatch
		// loop's to fail over.
		MaxIdemponentCallAttempts: 2,
		RetryIfErr: func(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, attempts == 1 && staleConn(err)
		},
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		Dial: func(addr string) (net.Conn, error) {
			conn, err := fasthttp.DialTimeout(addr, connect)
			if err != nil {
				return nil, err
			}
			return &deadlineConn{Conn: conn, firstByte: firstByte, idle: idle}, nil
		},
	}
}

// staleConn reports whether err is a pooled connection found closed before
// the upstream answered anything (fasthttp gives that as a bare io.EOF
// inside its retry loop, ErrConnectionClosed outside it).
func staleConn(err error) bool {
	return err == io.EOF || errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

func hostname(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

// closeIdle drops the pools' idle connections of an upstream a reload
// removed; exchanges still running finish on their own connections.
func (up *upstream) closeIdle() {
	up.plain.CloseIdleConnections()
	up.stream.CloseIdleConnections()
}

// deadlineConn turns fasthttp's absolute read deadline into the SPEC's
// timeouts. fasthttp sets one deadline before reading each response (the
// request's, e.g. request_timeout, or none); each Read here also bounds the
// silence: firstByte while waiting for the response, idle between reads
// after it (0 = no silence bound). The netpoller enforces it: no timer per
// stream, no allocation per read.
//
// For streams the first SSE event usually follows the headers in a read of
// its own (vLLM sends headers before prefill), so firstByte also bounds the
// read after the headers; from then on idle applies.
type deadlineConn struct {
	net.Conn
	firstByte, idle time.Duration
	abs             time.Time // deadline fasthttp asked for; zero = none
	reads           int       // reads that returned data in this exchange
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	// fasthttp calls this right before reading each response: a new
	// exchange starts waiting for its first byte.
	c.abs = t
	c.reads = 0
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.abs = t
	c.reads = 0
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	limit := c.firstByte
	switch {
	case c.reads == 1 && c.idle > 0 && c.idle < c.firstByte:
		// the read after the headers of a stream: see the type's comment
	case c.reads >= 1:
		limit = c.idle
	}
	d := c.abs
	if limit > 0 {
		if t := time.Now().Add(limit); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if limit > 0 || c.reads == 1 {
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.reads < 2 {
		c.reads++
	}
	return n, err
}
