package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Request says what every request of a run sends and what its answer must be.
type Request struct {
	Addr string // host:port; the generator talks only to this address
	Path string // e.g. /v1/chat/completions
	Body []byte // the JSON body, sent as is

	// Stream reads the answer as SSE, event by event.
	Stream bool
	// WantContent is the number of events with non-empty content a stream
	// must carry; 0 skips the check.
	WantContent int
	// IDPrefix makes each request's X-Request-Id IDPrefix + sequence number;
	// empty sends no X-Request-Id.
	IDPrefix string
	// Strict parses every body (or every stream event) as JSON and checks
	// the answer's shape; by default only cheap byte checks are made, so the
	// generator's own cost stays small at high rates.
	Strict bool
	// Timeout bounds one whole exchange. By default 30s.
	Timeout time.Duration
}

// Outcome is what one exchange measured. Times are from the request's
// reference time: its intended send time in an open loop, its actual send
// time in a closed loop.
type Outcome struct {
	Err      error
	Latency  time.Duration   // until the answer's last byte
	TTFT     time.Duration   // streams: until the first event
	Gaps     []time.Duration // streams: between successive content events
	Events   int             // streams: data events, [DONE] not counted
	Contents int             // streams: events with non-empty content
}

var (
	errStatus  = errors.New("loadgen: status is not 200")
	errBody    = errors.New("loadgen: body is not a chat answer")
	errStream  = errors.New("loadgen: stream is malformed")
	errNoDone  = errors.New("loadgen: stream ended without [DONE]")
	errContent = errors.New("loadgen: wrong number of content events")
	errEvent   = errors.New("loadgen: stream carried an error event")
)

// newClient makes the keep-alive client for r with room for conns
// connections; a request finding none free waits for one (the wait counts in
// its latency) rather than failing.
func newClient(r *Request, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                          r.Addr,
		MaxConns:                      conns,
		MaxConnWaitTimeout:            r.timeout(),
		ReadTimeout:                   r.timeout(),
		WriteTimeout:                  r.timeout(),
		MaxIdleConnDuration:           time.Minute,
		StreamResponseBody:            r.Stream,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		ReadBufferSize:                16 << 10,
	}
}

func (r *Request) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 30 * time.Second
}

// exchanger runs exchanges for one goroutine at a time; it is pooled.
type exchanger struct {
	req   fasthttp.Request
	resp  fasthttp.Response
	br    *bufio.Reader
	id    []byte
	gaps  []time.Duration
	parse fastjson.Parser
}

var exchangers = sync.Pool{New: func() any {
	return &exchanger{br: bufio.NewReaderSize(nil, 16<<10)}
}}

// do sends request number seq of r over hc and checks the answer. ref is the
// time latencies count from. The Outcome's Gaps are valid until the exchanger
// is put back; copy to keep.
func (x *exchanger) do(hc *fasthttp.HostClient, r *Request, seq uint64, ref time.Time) Outcome {
	req, resp := &x.req, &x.resp
	req.Reset()
	resp.Reset()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(r.Path)
	req.Header.SetHost(r.Addr)
	req.Header.SetContentType("application/json")
	if r.IDPrefix != "" {
		x.id = strconv.AppendUint(append(x.id[:0], r.IDPrefix...), seq, 10)
		req.Header.SetBytesV("X-Request-Id", x.id)
	}
	req.SetBodyRaw(r.Body)
	req.SetTimeout(r.timeout())

	if err := hc.Do(req, resp); err != nil {
		return Outcome{Err: err, Latency: time.Since(ref)}
	}
	if !r.Stream {
		o := Outcome{Latency: time.Since(ref)}
		o.Err = x.checkAnswer(resp, r.Strict)
		return o
	}
	o := x.readStream(resp, r, ref)
	resp.CloseBodyStream()
	return o
}

// checkAnswer checks a plain chat answer.
func (x *exchanger) checkAnswer(resp *fasthttp.Response, strict bool) error {
	body := resp.Body()
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("%w: %d %.120s", errStatus, resp.StatusCode(), body)
	}
	return x.checkChat(body, strict)
}

// checkChat checks that body is a chat.completion whose first choice has text.
func (x *exchanger) checkChat(body []byte, strict bool) error {
	if !strict {
		if len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' || !bytes.Contains(body, []byte(`"choices":[{`)) {
			return fmt.Errorf("%w: %.120s", errBody, body)
		}
		return nil
	}
	v, err := x.parse.ParseBytes(body)
	if err != nil {
		return fmt.Errorf("%w: %w", errBody, err)
	}
	if len(v.GetStringBytes("choices", "0", "message", "content")) == 0 {
		return fmt.Errorf("%w: no choices[0].message.content in %.120s", errBody, body)
	}
	return nil
}

var (
	dataPrefix = []byte("data:")
	doneEvent  = []byte("[DONE]")
	errorEvent = []byte(`{"error"`)
	contentKey = []byte(`"content":"`)
	emptyKey   = []byte(`"content":""`)
)

// readStream reads an SSE answer to its end, timing every event.
func (x *exchanger) readStream(resp *fasthttp.Response, r *Request, ref time.Time) Outcome {
	var o Outcome
	if resp.StatusCode() != fasthttp.StatusOK {
		body, _ := readAll(resp)
		o.Err = fmt.Errorf("%w: %d %.120s", errStatus, resp.StatusCode(), body)
		o.Latency = time.Since(ref)
		return o
	}
	if !bytes.HasPrefix(resp.Header.ContentType(), []byte("text/event-stream")) {
		o.Err = fmt.Errorf("%w: content type %q", errStream, resp.Header.ContentType())
		o.Latency = time.Since(ref)
		return o
	}
	src := resp.BodyStream()
	if src == nil {
		src = bytes.NewReader(resp.Body())
	}
	x.br.Reset(src)
	x.gaps = x.gaps[:0]
	var last time.Time
	done := false
	for {
		line, err := x.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			o.Err = fmt.Errorf("%w: event longer than %d bytes", errStream, x.br.Size())
			break
		}
		if len(line) > 0 {
			now := time.Now()
			if perr := x.event(&o, bytes.TrimRight(line, "\r\n"), r.Strict, &done, now, &last, ref); perr != nil && o.Err == nil {
				o.Err = perr
			}
		}
		if err != nil {
			if err != io.EOF && o.Err == nil {
				o.Err = fmt.Errorf("%w: %w", errStream, err)
			}
			break
		}
	}
	o.Latency = time.Since(ref)
	o.Gaps = x.gaps
	if o.Err != nil {
		return o
	}
	switch {
	case !done:
		o.Err = errNoDone
	case r.WantContent > 0 && o.Contents != r.WantContent:
		o.Err = fmt.Errorf("%w: got %d, want %d", errContent, o.Contents, r.WantContent)
	}
	return o
}

// event accounts for one SSE line.
func (x *exchanger) event(o *Outcome, line []byte, strict bool, done *bool, now time.Time, last *time.Time, ref time.Time) error {
	if len(line) == 0 || line[0] == ':' {
		return nil // event separator or comment
	}
	payload, ok := bytes.CutPrefix(line, dataPrefix)
	if !ok {
		return nil // event:, id:, retry: lines carry nothing we check
	}
	payload = bytes.TrimPrefix(payload, []byte(" "))
	if *done {
		return fmt.Errorf("%w: data after [DONE]", errStream)
	}
	if bytes.Equal(payload, doneEvent) {
		*done = true
		return nil
	}
	if o.Events == 0 {
		o.TTFT = now.Sub(ref)
	}
	o.Events++
	if bytes.HasPrefix(payload, errorEvent) {
		return fmt.Errorf("%w: %.160s", errEvent, payload)
	}
	if strict {
		v, err := x.parse.ParseBytes(payload)
		if err != nil {
			return fmt.Errorf("%w: event is not JSON: %w", errStream, err)
		}
		if v.Get("choices") == nil {
			return fmt.Errorf("%w: event without choices: %.120s", errStream, payload)
		}
		if len(v.GetStringBytes("choices", "0", "delta", "content")) > 0 {
			x.content(o, now, last)
		}
		return nil
	}
	if bytes.Contains(payload, contentKey) && !bytes.Contains(payload, emptyKey) {
		x.content(o, now, last)
	}
	return nil
}

func (x *exchanger) content(o *Outcome, now time.Time, last *time.Time) {
	if o.Contents > 0 {
		x.gaps = append(x.gaps, now.Sub(*last))
	}
	*last = now
	o.Contents++
}

// readAll reads a streamed or buffered body whole, for error messages.
func readAll(resp *fasthttp.Response) ([]byte, error) {
	if s := resp.BodyStream(); s != nil {
		return io.ReadAll(io.LimitReader(s, 4096))
	}
	return resp.Body(), nil
}
