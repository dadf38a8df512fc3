package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
)

// upstream is one configured client: where to send, how to authorize, and
// its connection pools. It is immutable; a reload builds new ones and closes
// the idle connections of the old ones.
type upstream struct {
	cfg  *configs.Client
	host string // host:port as dialled
	// hostHeader is the Host sent: base_url's host as written, without a
	// default port added.
	hostHeader string
	path       string // base_url path, e.g. "/v1"
	tls        bool

	// headers are what every request carries (fixedHeaders); heads are
	// the request line and headers per endpoint (apis), each request's
	// own to follow, built once (buildHeads).
	headers   [][2]string
	heads     [len(apis)][]byte
	modelsURI string

	// auth is the ready "Bearer <api_key>" header value, empty when the
	// caller's key is sent instead.
	auth string
	// ownAuth: headers carry an Authorization (api_key, or one of the
	// client's), so the caller's key is never added.
	ownAuth bool

	// hc dials the upstream and pools its connections: one pool for plain
	// answers and streams, so max_conns bounds them together, as the
	// upstream counts them.
	hc *fasthttp.HostClient
	// plainPool and streamPool are hc's pool as exchanges hold its
	// connections (upconn.go), each with the read bound of its kind.
	plainPool, streamPool *upPool

	hists *upstreamStats // latency, TTFT, failure log throttle; kept by name across reloads
}

func newUpstream(c *configs.Client, chk *configs.Check) (*upstream, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return nil, err
	}
	up := &upstream{
		cfg:        c,
		host:       u.Host,
		hostHeader: u.Host,
		path:       strings.TrimRight(u.EscapedPath(), "/"),
		tls:        u.Scheme == "https",
	}
	if up.host != "" && u.Port() == "" {
		if up.tls {
			up.host += ":443"
		} else {
			up.host += ":80"
		}
	}
	up.modelsURI = up.path + "/models"
	if c.KeyMode != configs.KeyModePassthrough && c.APIKey != "" {
		up.auth = "Bearer " + c.APIKey
	}
	up.buildHeads()
	up.hc = up.hostClient(c, chk)
	// fasthttp refuses a body over the limit before reading it, whether its
	// Content-Length says so or its chunks add up to it: an upstream cannot
	// make gptapi allocate what it declares.
	up.hc.MaxResponseBodySize = chk.MaxResponseBytes
	conns := newConnPool(up.hc)
	up.plainPool = &upPool{hc: up.hc, conns: conns}
	up.streamPool = &upPool{hc: up.hc, conns: conns, idle: chk.StreamIdleTimeout}
	return up, nil
}

// buildHeads builds headers and heads from up.cfg; a reload that keeps the
// transport but changes a client's headers builds them again.
func (up *upstream) buildHeads() {
	up.headers, up.ownAuth = up.fixedHeaders()
	for ep, a := range apis {
		if a.path != "" {
			h := append(append(append([]byte(nil), "POST "...), up.path+a.path...), " HTTP/1.1\r\n"...)
			for _, kv := range up.headers {
				h = append(append(append(append(h, kv[0]...), ": "...), kv[1]...), "\r\n"...)
			}
			up.heads[ep] = h
		}
	}
}

// fixedHeaders are the headers every request to the client carries:
// Host, Content-Type, Accept-Encoding identity (answers are read, rewritten
// and recorded as text, SPEC §3), the api_key's Authorization and the
// client's headers, in canonical case. A header of the client's replaces
// gptapi's of the same name, Host included; Content-Length and
// Transfer-Encoding are left out, as the framing is gptapi's; of two
// spellings of one name the last in byte order wins. It reports whether an
// Authorization is among them.
func (up *upstream) fixedHeaders() ([][2]string, bool) {
	hdrs := [][2]string{
		{"Host", up.hostHeader},
		{"Content-Type", "application/json"},
		{"Accept-Encoding", "identity"},
	}
	if up.auth != "" {
		hdrs = append(hdrs, [2]string{"Authorization", up.auth})
	}
	for _, k := range slices.Sorted(maps.Keys(up.cfg.Headers)) {
		name := string(fasthttp.AppendNormalizedHeaderKey(nil, k))
		if name == fasthttp.HeaderContentLength || name == fasthttp.HeaderTransferEncoding {
			continue
		}
		i := slices.IndexFunc(hdrs, func(h [2]string) bool { return h[0] == name })
		if i < 0 {
			hdrs = append(hdrs, [2]string{name, ""})
			i = len(hdrs) - 1
		}
		hdrs[i][1] = up.cfg.Headers[k]
	}
	auth := slices.ContainsFunc(hdrs, func(h [2]string) bool { return h[0] == fasthttp.HeaderAuthorization })
	return hdrs, auth
}

func (up *upstream) hostClient(c *configs.Client, chk *configs.Check) *fasthttp.HostClient {
	connect, firstByte := chk.ConnectTimeout, chk.FirstByteTimeout
	maxConns := c.MaxConns
	if maxConns <= 0 {
		maxConns = configs.DefaultMaxConns
	}
	return &fasthttp.HostClient{
		Addr:      up.host,
		Name:      "gptapi",
		IsTLS:     up.tls,
		TLSConfig: &tls.Config{ServerName: hostname(up.host), ClientSessionCache: tls.NewLRUClientSessionCache(64)},
		MaxConns:  maxConns,
		// With every connection busy a request waits this long for one
		// (fasthttp.ErrNoFreeConns after it): gptapi's limit, not ill health.
		MaxConnWaitTimeout: chk.MaxConnWait,
		// uvicorn-based servers (vLLM, SGLang) close keep-alive connections
		// idle for 5 s; closing ours first avoids most stale ones.
		MaxIdleConnDuration: 4 * time.Second,
		// Exchanges hold their connections (upconn.go) and retry a stale
		// pooled one themselves; this covers the model list fetch.
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
			return newDeadlineConn(conn, firstByte), nil
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
	up.hc.CloseIdleConnections()
}

// deadlineConn turns an absolute read deadline into the SPEC's timeouts
// (§2). One deadline is set before reading each response (the request's,
// e.g. request_timeout, or none: heldConn.send, or fasthttp for the model
// list); from that moment firstByte is a fixed deadline, not renewed by
// bytes that trickle in. It bounds a plain answer's headers and a stream's
// first data event, until the exchange says that arrived (answerStarted):
// only the exchange can tell, since over TLS this connection carries
// ciphertext. After that, each Read bounds the silence by idle, which the
// exchange holding the connection sets (upPool.idle; 0 = no bound but the
// request's). The netpoller enforces it: no timer per stream, no
// allocation per read.
type deadlineConn struct {
	net.Conn
	firstByte, idle time.Duration
	abs             time.Time // deadline asked for; zero = none
	flowing         bool      // the answer has started: idle bounds each silence
	sock            connIO
}

func newDeadlineConn(conn net.Conn, firstByte time.Duration) *deadlineConn {
	c := &deadlineConn{Conn: conn, firstByte: firstByte}
	c.sock.init(conn)
	return c
}

func (c *deadlineConn) Write(p []byte) (int, error) { return c.sock.write(p) }

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	// Called right before reading each response: a new
	// exchange starts waiting for its first byte.
	return c.start(t, c.Conn.SetReadDeadline)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	return c.start(t, c.Conn.SetDeadline)
}

func (c *deadlineConn) start(t time.Time, set func(time.Time) error) error {
	c.abs, c.flowing = t, false
	if c.firstByte > 0 {
		if fb := time.Now().Add(c.firstByte); t.IsZero() || fb.Before(t) {
			t = fb
		}
	}
	return set(t)
}

// answerStarted ends the first-byte wait: a plain answer's headers, or a
// stream's first data event, are in. From now on idle bounds each silence.
func (c *deadlineConn) answerStarted() {
	c.flowing = true
	_ = c.Conn.SetReadDeadline(c.abs)
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.flowing && c.idle > 0 {
		d := time.Now().Add(c.idle)
		if !c.abs.IsZero() && c.abs.Before(d) {
			d = c.abs
		}
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
	}
	return c.sock.read(p)
}
