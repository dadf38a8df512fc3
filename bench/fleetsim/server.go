package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// defaultMaxTokens is the answer length when a request names none (vLLM
// would generate up to the context limit; a simulator has no reason to).
const defaultMaxTokens = 256

// maxBodyBytes bounds a request body; fasthttp answers 413 beyond it.
const maxBodyBytes = 32 << 20

// server is one simulated vLLM server: its engine behind an OpenAI HTTP API.
type server struct {
	name  string
	addr  string    // where it listens
	fleet []*server // every server of the process, for /sim/probe-fleet
	eng   *engine
	gap   time.Duration // least wall time between two events of a stream (-event-gap / -speed)
	seq   atomic.Uint64
	http  *fasthttp.Server
}

func newServer(name string, eng *engine, gap time.Duration) *server {
	s := &server{name: name, eng: eng, gap: gap}
	s.http = &fasthttp.Server{
		Handler:               s.handle,
		Name:                  "fleetsim",
		MaxRequestBodySize:    maxBodyBytes,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ReadBufferSize:        16 << 10,
	}
	return s
}

func (s *server) serve(ln net.Listener) error { return s.http.Serve(ln) }

func (s *server) handle(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Sim-Server", s.name)
	post := ctx.IsPost()
	switch string(ctx.Path()) {
	case "/v1/chat/completions":
		if post {
			s.generate(ctx, true)
			return
		}
	case "/v1/completions":
		if post {
			s.generate(ctx, false)
			return
		}
	case "/sim/probe":
		if post {
			s.probe(ctx)
			return
		}
	case "/sim/probe-fleet":
		if post {
			s.probeFleet(ctx)
			return
		}
	case "/metrics":
		s.metrics(ctx)
		return
	case "/v1/models":
		s.models(ctx)
		return
	case "/health":
		return
	default:
		writeError(ctx, fasthttp.StatusNotFound, "NotFoundError", "Not Found")
		return
	}
	writeError(ctx, fasthttp.StatusMethodNotAllowed, "MethodNotAllowed", "Method Not Allowed")
}

// ask is one parsed generation request.
type ask struct {
	chain  []uint64
	text   uint64
	prompt int
	maxOut int
	stream bool
	usage  bool // stream_options.include_usage
}

var (
	parsers fastjson.ParserPool
	texts   = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
)

// parse reads a chat (or completions) request the way vLLM's front end
// checks it; on failure it returns the status and the message of the error.
func (s *server) parse(body []byte, chat bool) (a ask, status int, msg string) {
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil {
		return a, 400, "request body is not valid JSON: " + err.Error()
	}
	if v.Type() != fastjson.TypeObject {
		return a, 400, "request body must be a JSON object"
	}
	model := v.Get("model")
	if model == nil || model.Type() != fastjson.TypeString {
		return a, 400, "'model' is required and must be a string"
	}
	if m := string(model.GetStringBytes()); m != s.eng.cfg.Model {
		return a, 404, "The model `" + m + "` does not exist."
	}
	tb := texts.Get().(*[]byte)
	defer texts.Put(tb)
	text := (*tb)[:0]
	if chat {
		msgs := v.Get("messages")
		if msgs == nil {
			return a, 400, "'messages' is required"
		}
		text, err = appendChat(text, msgs)
	} else {
		pr := v.Get("prompt")
		if pr == nil {
			return a, 400, "'prompt' is required"
		}
		text, err = appendCompletion(text, pr)
	}
	*tb = text
	if err != nil {
		return a, 400, err.Error()
	}
	a.maxOut = defaultMaxTokens
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		if mt := v.Get(k); mt != nil && mt.Type() != fastjson.TypeNull {
			n, err := mt.Int()
			if err != nil {
				return a, 400, "'" + k + "' must be an integer"
			}
			if n < 1 {
				return a, 400, k + " must be at least 1, got " + strconv.Itoa(n) + "."
			}
			a.maxOut = n
		}
	}
	if st := v.Get("stream"); st != nil && st.Type() != fastjson.TypeNull {
		if a.stream, err = st.Bool(); err != nil {
			return a, 400, "'stream' must be a boolean"
		}
	}
	a.usage = v.GetBool("stream_options", "include_usage")
	a.prompt = promptTokens(text)
	if limit := s.eng.cfg.MaxModelLen; a.prompt+a.maxOut > limit {
		return a, 400, "This model's maximum context length is " + strconv.Itoa(limit) +
			" tokens. However, you requested " + strconv.Itoa(a.prompt+a.maxOut) + " tokens (" +
			strconv.Itoa(a.prompt) + " in the messages, " + strconv.Itoa(a.maxOut) +
			" in the completion). Please reduce the length of the messages or completion."
	}
	a.chain = appendChain(make([]uint64, 0, len(text)/blockBytes), text)
	a.text = fnvAdd(fnvOffset, text)
	return a, 0, ""
}

func (s *server) generate(ctx *fasthttp.RequestCtx, chat bool) {
	a, status, msg := s.parse(ctx.PostBody(), chat)
	if status != 0 {
		typ := "BadRequestError"
		if status == 404 {
			typ = "NotFoundError"
		}
		writeError(ctx, status, typ, msg)
		return
	}
	r := newRequest(a.chain, a.text, a.prompt, a.maxOut)
	s.eng.submit(r)
	id := s.seq.Add(1)
	created := time.Now().Unix()
	an := answer{s: s, r: r, a: &a, chat: chat, id: id, created: created}
	if !a.stream {
		for !r.finished.Load() {
			<-r.notify
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(an.appendWhole(nil))
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.ImmediateHeaderFlush = true // headers go now, as vLLM's do
	ctx.SetBodyStreamWriter(an.stream)
}

// answer writes one request's answer.
type answer struct {
	s       *server
	r       *request
	a       *ask
	chat    bool
	id      uint64
	created int64
}

// stream writes the SSE answer: every token generated since the last event
// in one event, events at least s.gap apart; the caller going away cancels
// the request.
func (an *answer) stream(w *bufio.Writer) {
	r := an.r
	sent := 0
	var buf []byte
	for {
		<-r.notify
		g, fin := int(r.generated.Load()), r.finished.Load()
		buf = buf[:0]
		if g > sent {
			buf = an.appendChunk(buf, sent, g)
			sent = g
		}
		if fin {
			buf = an.appendEnd(buf)
		}
		if len(buf) > 0 {
			_, _ = w.Write(buf)
			if err := w.Flush(); err != nil {
				r.canceled.Store(true)
				return
			}
		}
		if fin {
			return
		}
		if an.s.gap > 0 {
			time.Sleep(an.s.gap)
		}
	}
}

func (an *answer) appendHead(b []byte, object string) []byte {
	prefix := "cmpl-"
	if an.chat {
		prefix = "chatcmpl-"
	}
	b = append(b, `{"id":"`...)
	b = append(b, prefix...)
	b = append(b, an.s.name...)
	b = append(b, '-')
	b = strconv.AppendUint(b, an.id, 10)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, an.created, 10)
	b = append(b, `,"model":"`...)
	b = append(b, an.s.eng.cfg.Model...)
	return append(b, `",`...)
}

func (an *answer) object(chunk bool) string {
	switch {
	case an.chat && chunk:
		return "chat.completion.chunk"
	case an.chat:
		return "chat.completion"
	}
	return "text_completion"
}

// appendChunk is the event carrying tokens from..to.
func (an *answer) appendChunk(b []byte, from, to int) []byte {
	b = append(b, "data: "...)
	b = an.appendHead(b, an.object(true))
	if an.chat {
		b = append(b, `"choices":[{"index":0,"delta":{`...)
		if from == 0 {
			b = append(b, `"role":"assistant",`...)
		}
		b = append(b, `"content":"`...)
		b = appendWords(b, an.s.eng.cfg.Seed, an.r.text, from, to)
		b = append(b, `"},"logprobs":null,"finish_reason":null}]}`...)
	} else {
		b = append(b, `"choices":[{"index":0,"text":"`...)
		b = appendWords(b, an.s.eng.cfg.Seed, an.r.text, from, to)
		b = append(b, `","logprobs":null,"finish_reason":null}]}`...)
	}
	return append(b, "\n\n"...)
}

// appendEnd is the finishing event, the usage event when asked, and [DONE].
func (an *answer) appendEnd(b []byte) []byte {
	b = append(b, "data: "...)
	b = an.appendHead(b, an.object(true))
	if an.chat {
		b = append(b, `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}`...)
	} else {
		b = append(b, `"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}`...)
	}
	b = append(b, "\n\n"...)
	if an.a.usage {
		b = append(b, "data: "...)
		b = an.appendHead(b, an.object(true))
		b = append(b, `"choices":[],`...)
		b = an.appendUsage(b)
		b = an.appendSim(b)
		b = append(b, "}\n\n"...)
	}
	return append(b, "data: [DONE]\n\n"...)
}

func (an *answer) appendUsage(b []byte) []byte {
	out := int(an.r.generated.Load())
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(an.a.prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(an.a.prompt+out), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(an.r.cached), 10)
	return append(b, `}}`...)
}

// appendWhole is the non-stream answer.
func (an *answer) appendWhole(b []byte) []byte {
	out := int(an.r.generated.Load())
	b = an.appendHead(b, an.object(false))
	if an.chat {
		b = append(b, `"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
		b = appendWords(b, an.s.eng.cfg.Seed, an.r.text, 0, out)
		b = append(b, `"},"logprobs":null,"finish_reason":"length"}],`...)
	} else {
		b = append(b, `"choices":[{"index":0,"text":"`...)
		b = appendWords(b, an.s.eng.cfg.Seed, an.r.text, 0, out)
		b = append(b, `","logprobs":null,"finish_reason":"length"}],`...)
	}
	b = an.appendUsage(b)
	b = an.appendSim(b)
	return append(b, '}')
}

// appendSim adds what the simulator knows exactly, in simulated
// milliseconds from the request's arrival at this server: its first token
// and its end. Clients that read it get the server's time to first token
// free of their own wall-clock noise.
func (an *answer) appendSim(b []byte) []byte {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b = append(b, `,"sim":{"server":"`...)
	b = append(b, an.s.name...)
	b = append(b, `","ttft_ms":`...)
	b = strconv.AppendFloat(b, ms(an.r.firstAt-an.r.at), 'f', 3, 64)
	b = append(b, `,"e2e_ms":`...)
	b = strconv.AppendFloat(b, ms(an.r.doneAt-an.r.at), 'f', 3, 64)
	return append(b, '}')
}

// probeAnswer is what POST /sim/probe tells the reference router.
type probeAnswer struct {
	Server        string `json:"server"`
	Addr          string `json:"addr"`
	PromptTokens  int    `json:"prompt_tokens"`
	CachedBlocks  int    `json:"cached_blocks"` // leading blocks of the prompt held now
	CachedTokens  int    `json:"cached_tokens"`
	Running       int    `json:"running"`
	Waiting       int    `json:"waiting"`
	QueuedPrefill int64  `json:"queued_prefill_tokens"` // prompt tokens not yet computed, waiting and running
}

// parseProbe reads a probe's body: a chat request, or a completions one
// when it has "prompt" and no "messages".
func (s *server) parseProbe(ctx *fasthttp.RequestCtx) (ask, bool) {
	body := ctx.PostBody()
	chat := !(fastjson.Exists(body, "prompt") && !fastjson.Exists(body, "messages"))
	a, status, msg := s.parse(body, chat)
	if status != 0 {
		writeError(ctx, status, "BadRequestError", msg)
		return a, false
	}
	return a, true
}

// answerProbe is how much of a's prompt s holds now and its queue; it
// changes nothing.
func (s *server) answerProbe(a *ask) probeAnswer {
	s.eng.mu.Lock()
	n := s.eng.pool.match(a.chain)
	st := s.eng.stats()
	s.eng.mu.Unlock()
	return probeAnswer{Server: s.name, Addr: s.addr, PromptTokens: a.prompt, CachedBlocks: n, CachedTokens: n * blockTokens,
		Running: st.Running, Waiting: st.Waiting, QueuedPrefill: st.QueuedPrefill}
}

// probe answers POST /sim/probe for this server.
func (s *server) probe(ctx *fasthttp.RequestCtx) {
	if a, ok := s.parseProbe(ctx); ok {
		pa := s.answerProbe(&a)
		writeJSON(ctx, &pa)
	}
}

// probeFleet answers POST /sim/probe-fleet: the probe of every server of
// this process, in order, for one parse of the prompt instead of one per
// server (the reference router asks before every request).
func (s *server) probeFleet(ctx *fasthttp.RequestCtx) {
	if a, ok := s.parseProbe(ctx); ok {
		pas := make([]probeAnswer, len(s.fleet))
		for i, o := range s.fleet {
			pas[i] = o.answerProbe(&a)
		}
		writeJSON(ctx, pas)
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, _ := json.Marshal(v)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// metrics writes the Prometheus text of vLLM's metrics that routers read.
func (s *server) metrics(ctx *fasthttp.RequestCtx) {
	s.eng.mu.Lock()
	st := s.eng.stats()
	s.eng.mu.Unlock()
	labels := `{engine="0",model_name="` + s.eng.cfg.Model + `"}`
	var b []byte
	m := func(name, typ, help string, v float64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" "+typ+"\n"+name+labels+" "...)
		b = strconv.AppendFloat(b, v, 'f', -1, 64)
		b = append(b, '\n')
	}
	m("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", float64(st.Running))
	m("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", float64(st.Waiting))
	m("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", st.KVUsage)
	m("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.", float64(st.Queries))
	m("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.", float64(st.Hits))
	m("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", float64(st.PromptTokens))
	m("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", float64(st.GenTokens))
	m("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.", float64(st.Preemptions))
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.SetBody(b)
}

func (s *server) models(ctx *fasthttp.RequestCtx) {
	type model struct {
		ID          string `json:"id"`
		Object      string `json:"object"`
		OwnedBy     string `json:"owned_by"`
		MaxModelLen int    `json:"max_model_len"`
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "data": []model{{s.eng.cfg.Model, "model", "vllm", s.eng.cfg.MaxModelLen}}})
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// writeError answers an OpenAI-shaped error, as vLLM's front end does.
func writeError(ctx *fasthttp.RequestCtx, status int, typ, msg string) {
	type e struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   any    `json:"param"`
		Code    int    `json:"code"`
	}
	b, _ := json.Marshal(map[string]e{"error": {Message: msg, Type: typ, Code: status}})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
