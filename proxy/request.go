package proxy

import (
	"bytes"
	"strconv"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/internal/jsonw"
	"github.com/gptapi/gptapi/logsink"
)

// request is a parsed caller request. Its members are views of the
// caller's body; only the members gptapi reads or rewrites get fastjson
// values (messages, stop), built by the request's own parsers. Everything
// else is copied upstream byte for byte and never costs a value per
// number: a 16 MiB array of zeros in an unknown field is one memcpy.
// Valid until the handler returns.
type request struct {
	endpoint logsink.Endpoint
	members  []logsink.Member // top-level members of the body, in order

	model       []byte // as the caller asked, unescaped
	stream      bool
	callerUsage bool // the caller asked for stream_options.include_usage
	tools       bool // the request offers tools or functions

	// Indices into members of the keys an attempt may rewrite; -1 if absent.
	iModel, iMaxTokens, iMaxCompletion, iStop, iStreamOptions, iMessages int
	// The caller's token limits, when sent as integers.
	maxTokens, maxCompletionTokens       int64
	hasMaxTokens, hasMaxCompletionTokens bool

	// messages is the chat's message array; preprocess replaces it and
	// sets rewritten, and only then is it written anew for the upstream.
	messages  *fastjson.Value
	rewritten bool
	// msgKeys counts, while one message is checked, how often it names
	// each of messageKeys; countKey is the visitor doing it (a method
	// value made once per request, not once per message).
	msgKeys     [len(messageKeys)]uint8
	countKey    func(k []byte, v *fastjson.Value)
	callerStops []string // unescaped, views of stopParser's buffer
	stopSeen    map[string]struct{}
	soMembers   []logsink.Member // members of stream_options, when it is an object

	msgParser, stopParser fastjson.Parser
	built                 int // values the parsers built for this request
	builtBytes            int // and the bytes they parsed, which they copy

	// text holds strings the request makes (the model name, texts without
	// their reasoning blocks), which views point into. It is only appended
	// to while the request lives, so views stay valid even when it grows.
	text []byte

	merge merger // preprocess's merge_user state
	strs  jsonStrings
}

func (r *request) reset() {
	clear(r.callerStops)
	clear(r.members)
	clear(r.soMembers)
	keep := request{
		members: r.members[:0], soMembers: r.soMembers[:0], callerStops: r.callerStops[:0],
		stopSeen: r.stopSeen, text: r.text[:0], merge: merger{buf: r.merge.buf[:0]},
	}
	if cap(keep.callerStops) > maxKeptStops {
		// a map once grown for a huge stop list keeps its buckets
		keep.stopSeen, keep.callerStops = nil, nil
	}
	if cap(keep.members) > maxKeptMembers {
		keep.members = nil
	}
	if cap(keep.text) > maxKeptText {
		keep.text = nil
	}
	if cap(keep.merge.buf) > maxKeptText {
		keep.merge.buf = nil
	}
	// A parser keeps the values it built, and its copy of the text it
	// parsed, for the next parse; one that parsed a huge request lets
	// them go.
	if r.built <= maxKeptValues && r.builtBytes <= maxKeptText {
		keep.msgParser, keep.stopParser = r.msgParser, r.stopParser
	}
	keep.strs = r.strs
	keep.strs.reset()
	keep.countKey = r.countKey
	*r = keep
}

const (
	maxKeptText    = 1 << 20 // largest text scratch a pooled request keeps
	maxKeptStops   = 256     // largest stop list whose scratch a pooled request keeps
	maxKeptMembers = 256
	maxKeptValues  = 1 << 16
	maxKeptStrings = 256 // parsers of made strings a pooled request keeps
)

// maxMembers bounds the top-level fields of a body, and of its
// stream_options; the API has a few dozen. The values gptapi builds for a
// member are bounded by logsink.ValueBudget (SPEC §3: memory linear in the
// size, whatever the shape).
const maxMembers = 1024

// newText returns a copy of s stored in r.text.
func (r *request) newText(s string) string {
	start := len(r.text)
	r.text = append(r.text, s...)
	return b2s(r.text[start:])
}

// maxModelBytes bounds the model name (SPEC §3): it reaches logs, the
// record and the matcher, so its size must not be the caller's to choose.
const maxModelBytes = 256

// rewritten are the top-level keys gptapi reads or rewrites, the prompts
// the prefix route reads included: each may appear once, since parsers
// differ on which of two wins, so gptapi and the upstream could disagree on
// the model, the limit or the prompt.
var rewritten = [...]string{"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop",
	"prompt", "input", "query", "documents"}

// parse validates the caller's body for endpoint ep (SPEC §3, 400 cases).
func (r *request) parse(body []byte, ep logsink.Endpoint) *apiError {
	r.endpoint = ep
	r.iModel, r.iMaxTokens, r.iMaxCompletion, r.iStop, r.iStreamOptions, r.iMessages = -1, -1, -1, -1, -1, -1
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("Request body is empty; expected a JSON object.")
	}
	var err error
	r.members, err = logsink.ScanObject(r.members[:0], body, maxMembers)
	switch {
	case err == logsink.ErrNotObject:
		return badRequest("Request body must be a JSON object.")
	case err == logsink.ErrTooManyMembers:
		return badRequest("Request body has more than 1024 top-level fields.")
	case err != nil:
		return badRequest("Request body is not valid JSON: " + err.Error() + ".")
	}

	var seen [len(rewritten)]bool
	var kb [32]byte
	iPrompt, iInput, iQuery, iDocuments := -1, -1, -1, -1
	for i := range r.members {
		// As the upstream's parser will read it: an escaped name is no
		// way around a clamp or the model gptapi routes on.
		k := b2s(jsonw.Key(&kb, r.members[i].Key))
		for j, name := range rewritten {
			if k == name {
				if seen[j] {
					return badRequest("Field '" + name + "' appears more than once.")
				}
				seen[j] = true
			}
		}
		switch k {
		case "model":
			r.iModel = i
		case "messages":
			r.iMessages = i
		case "stream":
			if e := r.parseStream(r.members[i].Val); e != nil {
				return e
			}
		case "stream_options":
			r.iStreamOptions = i
		case "max_tokens":
			r.iMaxTokens = i
		case "max_completion_tokens":
			r.iMaxCompletion = i
		case "stop":
			r.iStop = i
		case "prompt":
			iPrompt = i
		case "input":
			iInput = i
		case "query":
			iQuery = i
		case "documents":
			iDocuments = i
		case "tools", "functions":
			r.tools = r.tools || nonEmptyArray(r.members[i].Val)
		}
	}

	if !apis[r.endpoint].generates {
		// Token limits and stops mean nothing to embeddings and rerank: such
		// fields pass as any unknown one, and the client's stops are not
		// added (OpenAI's embeddings API refuses a request with a stop).
		r.iMaxTokens, r.iMaxCompletion, r.iStop = -1, -1, -1
	}
	if e := r.parseModel(); e != nil {
		return e
	}
	if r.stream && ep != logsink.Chat && ep != logsink.Completions {
		return badRequest("Field 'stream' is not supported on this endpoint.")
	}
	if r.iStreamOptions >= 0 {
		if v := r.members[r.iStreamOptions].Val; v[0] == '{' {
			if r.soMembers, err = logsink.ScanObject(r.soMembers[:0], v, maxMembers); err != nil {
				return badRequest("Field 'stream_options' has more than 1024 fields.")
			}
			for _, m := range r.soMembers {
				if string(jsonw.Key(&kb, m.Key)) == "include_usage" {
					r.callerUsage = string(m.Val) == "true"
				}
			}
		}
	}
	var e *apiError
	if r.maxTokens, r.hasMaxTokens, e = r.integer(r.iMaxTokens, "max_tokens"); e != nil {
		return e
	}
	if r.maxCompletionTokens, r.hasMaxCompletionTokens, e = r.integer(r.iMaxCompletion, "max_completion_tokens"); e != nil {
		return e
	}

	switch ep {
	case logsink.Chat:
		if e := r.parseMessages(); e != nil {
			return e
		}
	case logsink.Completions:
		if absent(r.members, iPrompt) {
			return badRequest("Missing required field 'prompt'.")
		}
	case logsink.Embeddings:
		if absent(r.members, iInput) {
			return badRequest("Missing required field 'input'.")
		}
	case logsink.Rerank:
		if absent(r.members, iQuery) {
			return badRequest("Missing required field 'query'.")
		}
		if iDocuments < 0 || r.members[iDocuments].Val[0] != '[' {
			return badRequest("Missing required field 'documents' (an array).")
		}
	}
	return r.parseStop()
}

// absent reports whether member i is missing or null.
func absent(ms []logsink.Member, i int) bool {
	return i < 0 || string(ms[i].Val) == "null"
}

// nonEmptyArray reports whether the JSON value v is an array with an item.
func nonEmptyArray(v []byte) bool {
	if len(v) == 0 || v[0] != '[' {
		return false
	}
	rest := bytes.TrimLeft(v[1:], " \t\r\n")
	return len(rest) > 0 && rest[0] != ']'
}

func (r *request) parseStream(v []byte) *apiError {
	switch string(v) {
	case "true":
		r.stream = true
	case "false", "null":
	default:
		return badRequest("Field 'stream' must be a boolean.")
	}
	return nil
}

func (r *request) parseModel() *apiError {
	if r.iModel < 0 {
		return badRequest("Missing required field 'model'.")
	}
	v := r.members[r.iModel].Val
	if v[0] != '"' {
		return badRequest("Field 'model' must be a string.")
	}
	r.model = v[1 : len(v)-1]
	if bytes.IndexByte(r.model, '\\') >= 0 {
		pv, err := r.stopParser.ParseBytes(v)
		if err != nil {
			return badRequest("Field 'model' is not a valid JSON string.")
		}
		b, _ := pv.StringBytes()
		r.model = s2b(r.newText(b2s(b)))
	}
	if len(r.model) == 0 {
		return badRequest("Field 'model' must not be empty.")
	}
	if len(r.model) > maxModelBytes {
		return badRequest("Field 'model' is longer than 256 bytes.")
	}
	return nil
}

// integer reads member i as an integer; null or absent is no value.
func (r *request) integer(i int, name string) (int64, bool, *apiError) {
	if absent(r.members, i) {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(b2s(r.members[i].Val), 10, 64)
	if err != nil {
		return 0, false, badRequest("Field '" + name + "' must be an integer.")
	}
	return n, true, nil
}

// build parses member i with p, within its value budget.
func (r *request) build(p *fastjson.Parser, i int, name string) (*fastjson.Value, *apiError) {
	m := &r.members[i]
	if m.Values > logsink.ValueBudget(len(m.Val)) {
		return nil, badRequest("Field '" + name + "' holds " + strconv.Itoa(m.Values) +
			" JSON values in " + strconv.Itoa(len(m.Val)) + " bytes, more than gptapi accepts for its size.")
	}
	r.built += m.Values
	r.builtBytes += len(m.Val)
	v, err := p.ParseBytes(m.Val)
	if err != nil {
		return nil, badRequest("Field '" + name + "' is not valid JSON: " + err.Error())
	}
	return v, nil
}

func (r *request) parseMessages() *apiError {
	if r.iMessages < 0 {
		return badRequest("Missing required field 'messages'.")
	}
	if r.members[r.iMessages].Val[0] != '[' {
		return badRequest("Field 'messages' must be an array.")
	}
	v, e := r.build(&r.msgParser, r.iMessages, "messages")
	if e != nil {
		return e
	}
	a := v.GetArray()
	if len(a) == 0 {
		return badRequest("Field 'messages' must not be empty.")
	}
	if r.countKey == nil {
		r.countKey = r.countMessageKey
	}
	for i, m := range a {
		if m.Type() != fastjson.TypeObject {
			return badRequest("messages[" + strconv.Itoa(i) + "] must be an object.")
		}
		r.msgKeys = [len(messageKeys)]uint8{}
		m.GetObject().Visit(r.countKey)
		for j, n := range r.msgKeys {
			if n > 1 {
				return badRequest("messages[" + strconv.Itoa(i) + "] has '" + messageKeys[j] + "' more than once.")
			}
		}
	}
	r.messages = v
	return nil
}

// messageKeys are the names of a message gptapi reads (preprocessing, the
// prefix route): each may appear once, as at the top level, so that what
// gptapi rewrites and routes on is what the upstream reads.
var messageKeys = [...]string{"role", "content", "tool_calls"}

func (r *request) countMessageKey(k []byte, _ *fastjson.Value) {
	for j, name := range messageKeys {
		if string(k) == name && r.msgKeys[j] < 2 {
			r.msgKeys[j]++
		}
	}
}

func errStopType() *apiError {
	return badRequest("Field 'stop' must be a string or an array of strings.")
}

// parseStop reads the caller's stops: a string or a list of strings.
func (r *request) parseStop() *apiError {
	if absent(r.members, r.iStop) {
		return nil
	}
	switch r.members[r.iStop].Val[0] {
	case '"', '[':
	default:
		return errStopType()
	}
	v, e := r.build(&r.stopParser, r.iStop, "stop")
	if e != nil {
		return e
	}
	if v.Type() == fastjson.TypeString {
		b, _ := v.StringBytes()
		r.callerStops = append(r.callerStops, b2s(b))
		return nil
	}
	for _, e := range v.GetArray() {
		b, err := e.StringBytes()
		if err != nil {
			return errStopType()
		}
		r.callerStops = append(r.callerStops, b2s(b))
	}
	return nil
}

// appendUpstreamBody appends the body one attempt sends to client c routing
// on model: the caller's members in order, with the model rewrite, the
// max_tokens clamp, the stop merge, the stream usage ask and the
// preprocessed messages applied (SPEC §4.2-4.4). Every other member is
// copied as the caller sent it. It leaves r as it was, so each attempt
// starts from the caller's request.
func (r *request) appendUpstreamBody(dst []byte, c *configs.Client, model []byte) []byte {
	dst = append(dst, '{')
	for i := range r.members {
		m := &r.members[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, m.Key...)
		dst = append(dst, '"', ':')
		switch i {
		case r.iModel:
			switch {
			case c.Model != "":
				dst = jsonw.AppendString(dst, c.Model)
			case !bytes.Equal(model, r.model):
				dst = jsonw.AppendString(dst, b2s(model))
			default:
				dst = append(dst, m.Val...)
			}
		case r.iMaxTokens:
			dst = appendClamped(dst, m.Val, r.maxTokens, r.hasMaxTokens, c.MaxTokens)
		case r.iMaxCompletion:
			dst = appendClamped(dst, m.Val, r.maxCompletionTokens, r.hasMaxCompletionTokens, c.MaxTokens)
		case r.iStop:
			if len(c.Stop) > 0 {
				dst = r.appendStops(dst, c.Stop)
			} else {
				dst = append(dst, m.Val...)
			}
		case r.iStreamOptions:
			if r.hidesUsage(c) {
				dst = r.appendStreamOptions(dst)
			} else {
				dst = append(dst, m.Val...)
			}
		case r.iMessages:
			if r.rewritten {
				dst = jsonw.AppendValue(dst, r.messages)
			} else {
				dst = append(dst, m.Val...)
			}
		default:
			dst = append(dst, m.Val...)
		}
	}
	if r.iStop < 0 && len(c.Stop) > 0 && apis[r.endpoint].generates {
		dst = append(dst, `,"stop":`...)
		dst = r.appendStops(dst, c.Stop)
	}
	if r.iStreamOptions < 0 && r.hidesUsage(c) {
		dst = append(dst, `,"stream_options":`...)
		dst = r.appendStreamOptions(dst)
	}
	return append(dst, '}')
}

// appendStreamOptions appends the caller's stream_options (when an object)
// with include_usage set.
func (r *request) appendStreamOptions(dst []byte) []byte {
	dst = append(dst, '{')
	var kb [32]byte
	for _, m := range r.soMembers {
		if string(jsonw.Key(&kb, m.Key)) == "include_usage" {
			continue
		}
		dst = append(dst, '"')
		dst = append(dst, m.Key...)
		dst = append(dst, '"', ':')
		dst = append(dst, m.Val...)
		dst = append(dst, ',')
	}
	return append(dst, `"include_usage":true}`...)
}

// appendClamped appends the caller's token limit lowered to limit (0 =
// none) when it asked for more; else as the caller sent it.
func appendClamped(dst, raw []byte, n int64, ok bool, limit int) []byte {
	if ok && limit > 0 && n > int64(limit) {
		return strconv.AppendInt(dst, int64(limit), 10)
	}
	return append(dst, raw...)
}

// appendStops appends the caller's stops followed by the client's, each
// once, in order (SPEC §4.3), as a JSON array. A set keeps it linear in the
// number of stops.
func (r *request) appendStops(dst []byte, client []string) []byte {
	if r.stopSeen == nil {
		r.stopSeen = make(map[string]struct{}, len(r.callerStops)+len(client))
	}
	dst = append(dst, '[')
	n := 0
	add := func(s string) {
		if _, dup := r.stopSeen[s]; dup {
			return
		}
		r.stopSeen[s] = struct{}{}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, s)
		n++
	}
	for _, s := range r.callerStops {
		add(s)
	}
	for _, s := range client {
		add(s)
	}
	clear(r.stopSeen)
	return append(dst, ']')
}

// hidesUsage reports whether gptapi asks c for stream usage the caller did
// not want, and so must drop the usage-only chunk.
func (r *request) hidesUsage(c *configs.Client) bool {
	return r.stream && c.StreamUsage && !r.callerUsage
}
