package proxy

import (
	"bytes"
	"strconv"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// request is a parsed caller request. Values point into the caller's body
// and the exchange's arena: valid until the handler returns.
type request struct {
	endpoint logsink.Endpoint
	root     *fastjson.Value
	obj      *fastjson.Object

	model       []byte // as the caller asked
	stream      bool
	callerUsage bool // the caller asked for stream_options.include_usage

	// What the caller sent for the keys an attempt may rewrite, so each
	// attempt starts from the caller's values (nil = absent).
	maxTokens, maxCompletionTokens, stop, streamOptions, modelValue *fastjson.Value
	callerStops                                                     []string // point into the body
	stopSeen                                                        map[string]struct{}

	// text holds strings preprocessing makes (views of it are given to the
	// arena). It is only appended to while the request lives, so views stay
	// valid even when it grows.
	text []byte

	merge merger // preprocess's merge_user state
}

func (r *request) reset() {
	clear(r.callerStops)
	seen, stops, text, join := r.stopSeen, r.callerStops[:0], r.text[:0], r.merge.buf[:0]
	if cap(stops) > maxKeptStops {
		// a map once grown for a huge stop list keeps its buckets
		seen, stops = nil, nil
	}
	if cap(text) > maxKeptText {
		text = nil
	}
	if cap(join) > maxKeptText {
		join = nil
	}
	*r = request{callerStops: stops, text: text, stopSeen: seen, merge: merger{buf: join}}
}

// maxKeptText is the largest text scratch a pooled request keeps.
const maxKeptText = 1 << 20

// maxKeptStops is the largest stop list whose scratch a pooled request keeps.
const maxKeptStops = 256

// newText returns a string of the concatenation of parts, stored in r.text.
func (r *request) newText(parts ...string) string {
	start := len(r.text)
	for _, p := range parts {
		r.text = append(r.text, p...)
	}
	return b2s(r.text[start:])
}

// maxModelBytes bounds the model name (SPEC §3): it reaches logs, the
// record and the matcher, so its size must not be the caller's to choose.
const maxModelBytes = 256

// parse validates the caller's body for endpoint ep (SPEC §3, 400 cases).
func (r *request) parse(p *fastjson.Parser, body []byte, ep logsink.Endpoint) *apiError {
	r.endpoint = ep
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("Request body is empty; expected a JSON object.")
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return badRequest("Request body is not valid JSON: " + err.Error())
	}
	o, err := v.Object()
	if err != nil {
		return badRequest("Request body must be a JSON object.")
	}
	r.root, r.obj = v, o
	if k := duplicateKey(o); k != "" {
		return badRequest("Field '" + k + "' appears more than once.")
	}

	m := o.Get("model")
	switch {
	case m == nil:
		return badRequest("Missing required field 'model'.")
	case m.Type() != fastjson.TypeString:
		return badRequest("Field 'model' must be a string.")
	}
	r.model, _ = m.StringBytes()
	r.modelValue = m
	if len(r.model) == 0 {
		return badRequest("Field 'model' must not be empty.")
	}
	if len(r.model) > maxModelBytes {
		return badRequest("Field 'model' is longer than 256 bytes.")
	}

	if s := o.Get("stream"); s != nil {
		switch s.Type() {
		case fastjson.TypeTrue:
			r.stream = true
		case fastjson.TypeFalse, fastjson.TypeNull:
		default:
			return badRequest("Field 'stream' must be a boolean.")
		}
	}
	if r.stream && ep != logsink.Chat && ep != logsink.Completions {
		return badRequest("Field 'stream' is not supported on this endpoint.")
	}
	r.streamOptions = o.Get("stream_options")
	if r.streamOptions != nil {
		r.callerUsage = r.streamOptions.GetBool("include_usage")
	}

	for _, k := range [...]string{"max_tokens", "max_completion_tokens"} {
		t := o.Get(k)
		if t == nil || t.Type() == fastjson.TypeNull {
			continue
		}
		if !isInteger(t) {
			return badRequest("Field '" + k + "' must be an integer.")
		}
		if k == "max_tokens" {
			r.maxTokens = t
		} else {
			r.maxCompletionTokens = t
		}
	}

	switch ep {
	case logsink.Chat:
		msgs := o.Get("messages")
		if msgs == nil {
			return badRequest("Missing required field 'messages'.")
		}
		a, err := msgs.Array()
		if err != nil {
			return badRequest("Field 'messages' must be an array.")
		}
		if len(a) == 0 {
			return badRequest("Field 'messages' must not be empty.")
		}
		for i, m := range a {
			if m.Type() != fastjson.TypeObject {
				return badRequest("messages[" + strconv.Itoa(i) + "] must be an object.")
			}
		}
	case logsink.Completions:
		if p := o.Get("prompt"); p == nil || p.Type() == fastjson.TypeNull {
			return badRequest("Missing required field 'prompt'.")
		}
	case logsink.Embeddings:
		if in := o.Get("input"); in == nil || in.Type() == fastjson.TypeNull {
			return badRequest("Missing required field 'input'.")
		}
	case logsink.Rerank:
		if q := o.Get("query"); q == nil || q.Type() == fastjson.TypeNull {
			return badRequest("Missing required field 'query'.")
		}
		if d := o.Get("documents"); d == nil || d.Type() != fastjson.TypeArray {
			return badRequest("Missing required field 'documents' (an array).")
		}
	}

	if s := o.Get("stop"); s != nil {
		r.stop = s
		switch s.Type() {
		case fastjson.TypeString:
			b, _ := s.StringBytes()
			r.callerStops = append(r.callerStops, b2s(b))
		case fastjson.TypeArray:
			for _, e := range s.GetArray() {
				b, err := e.StringBytes()
				if err != nil {
					return badRequest("Field 'stop' must be a string or an array of strings.")
				}
				r.callerStops = append(r.callerStops, b2s(b))
			}
		case fastjson.TypeNull:
		default:
			return badRequest("Field 'stop' must be a string or an array of strings.")
		}
	}
	return nil
}

// isInteger reports whether v is a JSON number written as an integer.
func isInteger(v *fastjson.Value) bool {
	if v.Type() != fastjson.TypeNumber {
		return false
	}
	if _, err := v.Int64(); err != nil {
		return false
	}
	return true
}

// appendUpstreamBody appends the body one attempt sends to client c routing
// on model: the caller's request with model rewrite, max_tokens clamp, stop
// merge and the stream usage ask applied (SPEC §4.3, §4.4). Every other byte
// of the caller's fields is kept.
func (r *request) appendUpstreamBody(dst []byte, a *fastjson.Arena, c *configs.Client, model []byte) []byte {
	o := r.obj
	switch {
	case c.Model != "":
		o.Set("model", a.NewString(c.Model))
	case !bytes.Equal(model, r.model):
		o.Set("model", a.NewStringBytes(model))
	default:
		o.Set("model", r.modelValue)
	}

	clamp(o, a, "max_tokens", r.maxTokens, c.MaxTokens)
	clamp(o, a, "max_completion_tokens", r.maxCompletionTokens, c.MaxTokens)

	if len(c.Stop) > 0 {
		o.Set("stop", r.mergeStops(a, c.Stop))
	} else if r.stop != nil {
		o.Set("stop", r.stop)
	}

	if r.stream && c.StreamUsage && !r.callerUsage {
		so := a.NewObject()
		if r.streamOptions != nil && r.streamOptions.Type() == fastjson.TypeObject {
			r.streamOptions.GetObject().Visit(func(k []byte, v *fastjson.Value) {
				so.Set(string(k), v)
			})
		}
		so.Set("include_usage", a.NewTrue())
		o.Set("stream_options", so)
	} else if r.streamOptions != nil {
		o.Set("stream_options", r.streamOptions)
	}
	dst = r.root.MarshalTo(dst)
	r.undo()
	return dst
}

// mergeStops returns the caller's stops followed by the client's, each once,
// in order (SPEC §4.3). A set keeps it linear in the number of stops.
func (r *request) mergeStops(a *fastjson.Arena, client []string) *fastjson.Value {
	if r.stopSeen == nil {
		r.stopSeen = make(map[string]struct{}, len(r.callerStops)+len(client))
	}
	arr := a.NewArray()
	n := 0
	add := func(s string) {
		if _, dup := r.stopSeen[s]; dup {
			return
		}
		r.stopSeen[s] = struct{}{}
		arr.SetArrayItem(n, a.NewString(s))
		n++
	}
	for _, s := range r.callerStops {
		add(s)
	}
	for _, s := range client {
		add(s)
	}
	clear(r.stopSeen)
	return arr
}

// undo removes keys an attempt added that the caller did not send, so the
// next attempt starts from the caller's request.
func (r *request) undo() {
	if r.stop == nil {
		r.obj.Del("stop")
	}
	if r.streamOptions == nil {
		r.obj.Del("stream_options")
	}
}

// clamp lowers key to limit (0 = none) when the caller asked for more; else
// restores the caller's value.
func clamp(o *fastjson.Object, a *fastjson.Arena, key string, orig *fastjson.Value, limit int) {
	if orig == nil {
		return
	}
	if n, err := orig.Int64(); err == nil && limit > 0 && n > int64(limit) {
		o.Set(key, a.NewNumberInt(limit))
		return
	}
	o.Set(key, orig)
}

// hidesUsage reports whether gptapi asks c for stream usage the caller did
// not want, and so must drop the usage-only chunk.
func (r *request) hidesUsage(c *configs.Client) bool {
	return r.stream && c.StreamUsage && !r.callerUsage
}

// rewritten are the top-level keys gptapi reads or rewrites.
var rewritten = [...]string{"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop"}

// duplicateKey returns a key of rewritten that o holds twice: parsers differ
// on which one wins, so gptapi and the upstream could disagree on the model.
func duplicateKey(o *fastjson.Object) string {
	var seen [len(rewritten)]bool
	dup := ""
	o.Visit(func(k []byte, _ *fastjson.Value) {
		for i, name := range rewritten {
			if string(k) == name {
				if seen[i] {
					dup = name
				}
				seen[i] = true
			}
		}
	})
	return dup
}
