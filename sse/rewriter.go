package sse

import (
	"bytes"

	"github.com/gptapi/gptapi/internal/jsonw"
)

var (
	doneData    = []byte("[DONE]")
	doneEvent   = []byte("data: [DONE]\n\n")
	dataField   = []byte("data: ")
	eventField  = []byte("event: ")
	nullLiteral = []byte("null")
)

// edit replaces payload[at:end] with the prefix (an insertion, at == end) or
// with the model name.
type edit struct {
	at, end int
	prefix  bool
	idx     int64 // choice index a prefix edit belongs to
}

// Rewriter applies the only changes gptapi makes to stream chunks (SPEC
// §4.4): the special prefix before the first content of each choice, the
// model name the caller asked for, and hiding the usage-only chunk. It works
// on the chunk's bytes and keeps every byte it does not change, so a chunk
// with nothing to change reaches the caller exactly as the upstream sent it.
//
// Keys are read the way encoding/json reads them into a map: escapes are
// decoded and, for a key given twice, the last one counts.
//
// A Rewriter holds per-stream state and is not safe for concurrent use. The
// zero value changes nothing.
type Rewriter struct {
	prefix    []byte // JSON-escaped, no quotes
	model     []byte // JSON string, quotes included
	hasPrefix bool
	hasModel  bool
	hideUsage bool

	done  []int64 // choice indices that already got the prefix
	edits []edit
	tmp   []byte

	// About the last event given to Append.
	data    []byte // its payload; aliases the Event
	content bool
	usage   bool // valid JSON object with a non-null top-level "usage"
	isError bool // the event is the upstream's own error: "event: error" or a top-level "error"
	empty   bool // valid JSON object whose last top-level "choices" is []
}

// Reset prepares rw for one stream. prefix is the client's special_prefix
// ("" = none); model is the name the caller asked for, written into each
// chunk's top-level "model" ("" = leave as is); hideUsage drops usage-only
// chunks ("choices":[] with a non-null "usage").
func (rw *Rewriter) Reset(prefix, model string, hideUsage bool) {
	rw.hasPrefix = prefix != ""
	rw.prefix = jsonw.AppendEscaped(rw.prefix[:0], prefix)
	rw.hasModel = model != ""
	rw.model = append(rw.model[:0], '"')
	rw.model = jsonw.AppendEscaped(rw.model, model)
	rw.model = append(rw.model, '"')
	rw.hideUsage = hideUsage
	rw.resetStream()
}

// resetStream forgets what the previous stream did, keeping the settings.
func (rw *Rewriter) resetStream() {
	rw.done = rw.done[:0]
	rw.edits = rw.edits[:0]
	rw.data = nil
	rw.content, rw.usage, rw.empty = false, false, false
}

// Append appends ev as the caller must receive it to dst and reports whether
// it is kept (false: a hidden usage chunk, nothing appended).
//
// An unchanged event is appended byte for byte (ev.Raw). A changed one is
// re-framed as "data: <payload>\n\n" (preceded by its "event:" line if it
// had one; other fields such as id: and comments inside it are not kept).
// Events without data, data: [DONE] and payloads that are not a JSON object
// pass untouched.
func (rw *Rewriter) Append(dst []byte, ev Event) ([]byte, bool) {
	rw.data = ev.Data
	rw.edits = rw.edits[:0]
	rw.content, rw.usage, rw.empty = false, false, false
	rw.isError = string(ev.Name) == "error"
	if ev.Data == nil || bytes.Equal(ev.Data, doneData) {
		return append(dst, ev.Raw...), true
	}
	if !rw.walk(ev.Data) {
		rw.edits = rw.edits[:0]
		rw.content, rw.usage, rw.empty = false, false, false
		return append(dst, ev.Raw...), true
	}
	for _, e := range rw.edits {
		if e.prefix {
			rw.done = append(rw.done, e.idx)
		}
	}
	if rw.hideUsage && rw.empty && rw.usage {
		return dst, false
	}
	if len(rw.edits) == 0 {
		return append(dst, ev.Raw...), true
	}
	if ev.Name != nil {
		dst = append(dst, eventField...)
		dst = append(dst, ev.Name...)
		dst = append(dst, '\n')
	}
	if bytes.IndexByte(ev.Data, '\n') < 0 {
		dst = append(dst, dataField...)
		dst = rw.appendEdited(dst)
		return append(dst, '\n', '\n'), true
	}
	// A payload of several data: lines keeps its line breaks (JSON
	// whitespace); each line becomes a data: line again.
	rw.tmp = rw.appendEdited(rw.tmp[:0])
	for p := rw.tmp; ; {
		i := bytes.IndexByte(p, '\n')
		dst = append(dst, dataField...)
		if i < 0 {
			dst = append(dst, p...)
			break
		}
		dst = append(dst, p[:i+1]...)
		p = p[i+1:]
	}
	return append(dst, '\n', '\n'), true
}

// AppendData appends the data payload of the last event given to Append as
// rewritten, without SSE framing; for a hidden usage chunk, the payload it
// would have had. It appends nothing for an event without data, and
// "[DONE]" for data: [DONE]. It reads the event's bytes, so call it before
// the next Scanner.Next.
func (rw *Rewriter) AppendData(dst []byte) []byte {
	if len(rw.edits) == 0 {
		return append(dst, rw.data...)
	}
	return rw.appendEdited(dst)
}

// HasContent reports whether the last event given to Append carried answer
// tokens: a non-empty delta.content, text, delta.reasoning_content or
// delta.reasoning, or a delta.tool_calls. It times the first token.
func (rw *Rewriter) HasContent() bool { return rw.content }

// IsError reports whether the last event given to Append was the upstream's
// own error ("event: error", or a non-null top-level "error").
func (rw *Rewriter) IsError() bool { return rw.isError }

func (rw *Rewriter) appendEdited(dst []byte) []byte {
	last := 0
	for _, e := range rw.edits {
		dst = append(dst, rw.data[last:e.at]...)
		if e.prefix {
			dst = append(dst, rw.prefix...)
		} else {
			dst = append(dst, rw.model...)
		}
		last = e.end
	}
	return append(dst, rw.data[last:]...)
}

// prefixed reports whether choice idx already got the prefix, in an earlier
// chunk or earlier in this one.
func (rw *Rewriter) prefixed(idx int64) bool {
	for _, d := range rw.done {
		if d == idx {
			return true
		}
	}
	for _, e := range rw.edits {
		if e.prefix && e.idx == idx {
			return true
		}
	}
	return false
}

// walk finds the edits for payload p and the facts about it; false if p is
// not a JSON object.
//
// walk, walkChoice and walkDelta (and skipValue) each write out the loop
// over an object's members. It runs for every member of every chunk, and a
// shared member step, a function call per member that Go does not inline,
// made BenchmarkRewriter measurably slower.
func (rw *Rewriter) walk(p []byte) bool {
	var kb [32]byte
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return false
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return skipSpace(p, i+1) == len(p)
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return false
		}
		ke := skipString(p, i)
		if ke < 0 {
			return false
		}
		key := jsonw.Key(&kb, p[i+1:ke-1])
		i = skipSpace(p, ke)
		if i >= len(p) || p[i] != ':' {
			return false
		}
		vs := skipSpace(p, i+1)
		switch string(key) {
		case "choices":
			// The last "choices" counts: forget what an earlier one gave.
			rw.dropPrefixEdits()
			rw.content, rw.empty = false, false
			i = rw.walkChoices(p, vs)
		case "model":
			i = skipValue(p, vs, 1)
			if i >= 0 && rw.hasModel && !bytes.Equal(p[vs:i], rw.model) {
				rw.edits = append(rw.edits, edit{at: vs, end: i})
			}
		case "usage":
			i = skipValue(p, vs, 1)
			rw.usage = i >= 0 && !bytes.Equal(p[vs:i], nullLiteral)
		case "error":
			i = skipValue(p, vs, 1)
			rw.isError = rw.isError || (i >= 0 && !bytes.Equal(p[vs:i], nullLiteral))
		default:
			i = skipValue(p, vs, 1)
		}
		if i < 0 {
			return false
		}
		i = skipSpace(p, i)
		if i >= len(p) {
			return false
		}
		if p[i] == '}' {
			return skipSpace(p, i+1) == len(p)
		}
		if p[i] != ',' {
			return false
		}
		i = skipSpace(p, i+1)
	}
}

func (rw *Rewriter) dropPrefixEdits() {
	n := 0
	for _, e := range rw.edits {
		if !e.prefix {
			rw.edits[n] = e
			n++
		}
	}
	rw.edits = rw.edits[:n]
}

// walkChoices walks the value of "choices" at p[i:] and returns the index
// after it, or -1.
func (rw *Rewriter) walkChoices(p []byte, i int) int {
	if i >= len(p) || p[i] != '[' {
		return skipValue(p, i, 1)
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == ']' {
		rw.empty = true
		return i + 1
	}
	for pos := int64(0); ; pos++ {
		if i < len(p) && p[i] == '{' {
			i = rw.walkChoice(p, i, pos)
		} else {
			i = skipValue(p, i, 2)
		}
		if i < 0 {
			return -1
		}
		i = skipSpace(p, i)
		if i >= len(p) {
			return -1
		}
		if p[i] == ']' {
			return i + 1
		}
		if p[i] != ',' {
			return -1
		}
		i = skipSpace(p, i+1)
	}
}

// span is the inside of a string value (between the quotes); ok is false
// when the value was not a string.
type span struct {
	at, end int
	ok      bool
}

func stringSpan(p []byte, vs, ve int) span {
	if p[vs] != '"' {
		return span{}
	}
	return span{at: vs + 1, end: ve - 1, ok: true}
}

func (s span) nonEmpty() bool { return s.ok && s.end > s.at }

// walkChoice walks the choice object at p[i:], at position pos of the array,
// and adds the prefix edit if this is the first content of its index.
func (rw *Rewriter) walkChoice(p []byte, i int, pos int64) int {
	var kb [32]byte
	idx := pos
	var content, text span // delta.content, text
	var other bool         // tool calls or reasoning in the delta
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return -1
		}
		ke := skipString(p, i)
		if ke < 0 {
			return -1
		}
		key := jsonw.Key(&kb, p[i+1:ke-1])
		i = skipSpace(p, ke)
		if i >= len(p) || p[i] != ':' {
			return -1
		}
		vs := skipSpace(p, i+1)
		switch string(key) {
		case "delta":
			if vs < len(p) && p[vs] == '{' {
				i, content, other = walkDelta(p, vs)
			} else {
				i, content, other = skipValue(p, vs, 2), span{}, false
			}
		case "text":
			if i = skipValue(p, vs, 2); i >= 0 {
				text = stringSpan(p, vs, i)
			}
		case "index":
			if i = skipValue(p, vs, 2); i >= 0 {
				n, ok := parseIndex(p[vs:i])
				idx = pos
				if ok {
					idx = n
				}
			}
		default:
			i = skipValue(p, vs, 2)
		}
		if i < 0 {
			return -1
		}
		i = skipSpace(p, i)
		if i >= len(p) {
			return -1
		}
		if p[i] == '}' {
			i++
			break
		}
		if p[i] != ',' {
			return -1
		}
		i = skipSpace(p, i+1)
	}
	target := content
	if !target.nonEmpty() {
		target = text
	}
	if target.nonEmpty() || other {
		rw.content = true
	}
	if rw.hasPrefix && target.nonEmpty() && !rw.prefixed(idx) {
		rw.edits = append(rw.edits, edit{at: target.at, end: target.at, prefix: true, idx: idx})
	}
	return i
}

// walkDelta walks the delta object at p[i:]. It returns the index after it,
// the span of its "content" string and whether it carries tool calls or
// reasoning.
func walkDelta(p []byte, i int) (int, span, bool) {
	var kb [32]byte
	var content span
	var tools, reasoning bool
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return i + 1, content, false
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return -1, content, false
		}
		ke := skipString(p, i)
		if ke < 0 {
			return -1, content, false
		}
		key := jsonw.Key(&kb, p[i+1:ke-1])
		i = skipSpace(p, ke)
		if i >= len(p) || p[i] != ':' {
			return -1, content, false
		}
		vs := skipSpace(p, i+1)
		if i = skipValue(p, vs, 3); i < 0 {
			return -1, content, false
		}
		switch string(key) {
		case "content":
			content = stringSpan(p, vs, i)
		case "tool_calls":
			v := p[vs:i]
			tools = !bytes.Equal(v, nullLiteral) && !isEmptyArray(v)
		case "reasoning_content", "reasoning":
			reasoning = stringSpan(p, vs, i).nonEmpty()
		}
		i = skipSpace(p, i)
		if i >= len(p) {
			return -1, content, false
		}
		if p[i] == '}' {
			return i + 1, content, tools || reasoning
		}
		if p[i] != ',' {
			return -1, content, false
		}
		i = skipSpace(p, i+1)
	}
}

// isEmptyArray reports whether the JSON value v is [] (spaces allowed).
func isEmptyArray(v []byte) bool {
	return len(v) >= 2 && v[0] == '[' && skipSpace(v, 1) == len(v)-1
}
