package logsink

import (
	"slices"
	"strconv"
	"unsafe"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// usage is the token counts of an answer; a count the upstream did not give
// as an integer stays unset and is stored as NULL.
type usage struct {
	prompt, completion, total int64
	cached                    int64 // prompt_tokens_details.cached_tokens
	set                       uint8 // usagePrompt | usageCompletion | usageTotal | usageCached
}

const (
	usagePrompt = 1 << iota
	usageCompletion
	usageTotal
	usageCached
)

// setField stores one count of a usage object by its key.
func (u *usage) setField(key []byte, n int64) {
	switch string(key) {
	case "prompt_tokens":
		u.prompt, u.set = n, u.set|usagePrompt
	case "completion_tokens":
		u.completion, u.set = n, u.set|usageCompletion
	case "total_tokens":
		u.total, u.set = n, u.set|usageTotal
	}
}

// setDetail stores one count of usage.prompt_tokens_details by its key.
func (u *usage) setDetail(key []byte, n int64) {
	if string(key) == "cached_tokens" {
		u.cached, u.set = n, u.set|usageCached
	}
}

// derived is what the writer learns from a record's bodies.
type derived struct {
	usage
	hasTools   bool   // the request offered tools or functions
	multimodal bool   // a message of the request has a non-text part
	toolNames  []byte // JSON array of the names of the tools the answer called
	nTools     int
}

func (d *derived) reset() {
	d.usage = usage{}
	d.hasTools = false
	d.multimodal = false
	d.toolNames = d.toolNames[:0]
	d.nTools = 0
}

// addTool appends one called tool's name to toolNames.
func (d *derived) addTool(name []byte) {
	if len(d.toolNames) > maxToolNamesBytes {
		d.nTools++ // has_tools still holds; the column keeps what fits
		return
	}
	if d.nTools == 0 {
		d.toolNames = append(d.toolNames[:0], '[')
	} else {
		d.toolNames = append(d.toolNames, ',')
	}
	d.nTools++
	d.toolNames = jsonw.AppendString(d.toolNames, name)
}

// maxToolNamesBytes bounds the tool_calls column: an answer with a million
// tool calls keeps the first names that fit.
const maxToolNamesBytes = 64 << 10

// toolNamesJSON is the tool_calls column: "[]" when no tool was called.
func (d *derived) toolNamesJSON() []byte {
	if d.nTools == 0 {
		return append(d.toolNames[:0], '[', ']')
	}
	return append(d.toolNames, ']')
}

// assembly collects the chunks of one stream into the answer object a
// non-streaming request would have got. Both parsers feed it through the same
// methods, so they produce the same bytes; it is reused from record to
// record.
type assembly struct {
	chat      bool // chat.completion, else text_completion
	id, model []byte
	created   int64
	choices   []choice
	nChoices  int

	usage     usage
	usageJSON []byte // the last non-null usage object, re-encoded
	errJSON   []byte // a mid-stream error value, re-encoded
	hasErr    bool
}

type choice struct {
	index            int64
	content          []byte
	hasContent       bool
	reasoningContent []byte
	reasoning        []byte
	refusal          []byte
	text             []byte
	finishReason     []byte
	hasFinish        bool
	calls            []toolCall
	nCalls           int
}

type toolCall struct {
	index    int64
	id       []byte
	typ      []byte
	name     []byte
	args     []byte
	hasIndex bool
}

// maxChoices bounds the choices of one stream, so that a hostile stream
// cannot make the linear look-up quadratic.
const maxChoices = 256

func (a *assembly) reset(chat bool) {
	a.chat = chat
	a.id = a.id[:0]
	a.model = a.model[:0]
	a.created = 0
	a.nChoices = 0
	a.usage = usage{}
	a.usageJSON = a.usageJSON[:0]
	a.errJSON = reuse(a.errJSON)
	a.hasErr = false
}

// setID keeps the first non-empty id: some upstreams open with an empty one.
func (a *assembly) setID(v []byte) {
	if len(a.id) == 0 {
		a.id = append(a.id[:0], v...)
	}
}

func (a *assembly) setModel(v []byte) {
	if len(a.model) == 0 {
		a.model = append(a.model[:0], v...)
	}
}

func (a *assembly) setCreated(n int64) {
	if a.created == 0 {
		a.created = n
	}
}

// choice returns the choice with the given index, adding it if new; nil when
// the stream has too many.
func (a *assembly) choice(index int64) *choice {
	for i := range a.choices[:a.nChoices] {
		if a.choices[i].index == index {
			return &a.choices[i]
		}
	}
	if a.nChoices == maxChoices {
		return nil
	}
	if a.nChoices == len(a.choices) {
		a.choices = append(a.choices, choice{})
	}
	c := &a.choices[a.nChoices]
	a.nChoices++
	c.reset(index)
	return c
}

func (c *choice) reset(index int64) {
	c.index = index
	c.content = reuse(c.content)
	c.hasContent = false
	c.reasoningContent = reuse(c.reasoningContent)
	c.reasoning = reuse(c.reasoning)
	c.refusal = reuse(c.refusal)
	c.text = reuse(c.text)
	c.finishReason = c.finishReason[:0]
	c.hasFinish = false
	c.nCalls = 0
}

// reuse empties b for the next record, unless one huge answer grew it: that
// memory is let go rather than kept for the life of the writer.
func reuse(b []byte) []byte {
	if cap(b) > maxPooledBytes {
		return nil
	}
	return b[:0]
}

func (c *choice) setFinish(v []byte) {
	c.finishReason = append(c.finishReason[:0], v...)
	c.hasFinish = true
}

// call returns the tool call a delta continues. Deltas carry an index
// (OpenAI, vLLM); without one, a new id starts a call and anything else
// continues the last.
func (c *choice) call(index int64, hasIndex bool, id []byte) *toolCall {
	if hasIndex {
		for i := range c.calls[:c.nCalls] {
			if c.calls[i].hasIndex && c.calls[i].index == index {
				return &c.calls[i]
			}
		}
	} else if c.nCalls > 0 {
		last := &c.calls[c.nCalls-1]
		if len(id) == 0 || string(last.id) == string(id) {
			return last
		}
	}
	if c.nCalls == maxChoices {
		return nil
	}
	if c.nCalls == len(c.calls) {
		c.calls = append(c.calls, toolCall{})
	}
	tc := &c.calls[c.nCalls]
	c.nCalls++
	*tc = toolCall{
		index:    index,
		hasIndex: hasIndex,
		id:       tc.id[:0],
		typ:      tc.typ[:0],
		name:     tc.name[:0],
		args:     reuse(tc.args),
	}
	if !hasIndex {
		tc.index = int64(c.nCalls - 1)
	}
	return tc
}

// The setters keep id, type and name from the delta that carried them;
// arguments are appended by the parsers.
func (tc *toolCall) setID(v []byte) {
	if len(v) > 0 && len(tc.id) == 0 {
		tc.id = append(tc.id, v...)
	}
}

func (tc *toolCall) setType(v []byte) {
	if len(v) > 0 && len(tc.typ) == 0 {
		tc.typ = append(tc.typ, v...)
	}
}

func (tc *toolCall) setName(v []byte) {
	if len(v) > 0 && len(tc.name) == 0 {
		tc.name = append(tc.name, v...)
	}
}

// sort puts choices and their tool calls in index order; stable, so calls
// without an index keep the order they came in.
func (a *assembly) sort() {
	chs := a.choices[:a.nChoices]
	slices.SortStableFunc(chs, func(x, y choice) int { return cmpInt64(x.index, y.index) })
	for i := range chs {
		calls := chs[i].calls[:chs[i].nCalls]
		slices.SortStableFunc(calls, func(x, y toolCall) int { return cmpInt64(x.index, y.index) })
	}
}

// addTools appends the names of the tools the assembled answer called.
func (a *assembly) addTools(d *derived) {
	a.sort()
	for i := range a.choices[:a.nChoices] {
		c := &a.choices[i]
		for j := range c.calls[:c.nCalls] {
			d.addTool(c.calls[j].name)
		}
	}
}

// appendJSON appends the assembled object. Choices and tool calls are in
// index order.
func (a *assembly) appendJSON(dst []byte) []byte {
	a.sort()
	chs := a.choices[:a.nChoices]
	dst = append(dst, `{"id":`...)
	dst = jsonw.AppendString(dst, a.id)
	if a.chat {
		dst = append(dst, `,"object":"chat.completion","created":`...)
	} else {
		dst = append(dst, `,"object":"text_completion","created":`...)
	}
	dst = strconv.AppendInt(dst, a.created, 10)
	dst = append(dst, `,"model":`...)
	dst = jsonw.AppendString(dst, a.model)
	dst = append(dst, `,"choices":[`...)
	for i := range chs {
		c := &chs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = strconv.AppendInt(dst, c.index, 10)
		if a.chat {
			dst = c.appendMessage(dst)
		} else {
			dst = append(dst, `,"text":`...)
			dst = jsonw.AppendString(dst, c.text)
		}
		dst = append(dst, `,"finish_reason":`...)
		if c.hasFinish {
			dst = jsonw.AppendString(dst, c.finishReason)
		} else {
			dst = append(dst, "null"...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if len(a.usageJSON) > 0 {
		dst = append(dst, `,"usage":`...)
		dst = append(dst, a.usageJSON...)
	}
	if a.hasErr {
		dst = append(dst, `,"error":`...)
		dst = append(dst, a.errJSON...)
	}
	return append(dst, '}')
}

func (c *choice) appendMessage(dst []byte) []byte {
	dst = append(dst, `,"message":{"role":"assistant","content":`...)
	if c.hasContent {
		dst = jsonw.AppendString(dst, c.content)
	} else {
		dst = append(dst, "null"...)
	}
	// Upstreams name the reasoning text reasoning_content (DeepSeek, vLLM)
	// or reasoning (OpenRouter, Groq); the record keeps one name.
	reasoning := c.reasoningContent
	if len(reasoning) == 0 {
		reasoning = c.reasoning
	}
	if len(reasoning) > 0 {
		dst = append(dst, `,"reasoning_content":`...)
		dst = jsonw.AppendString(dst, reasoning)
	}
	if len(c.refusal) > 0 {
		dst = append(dst, `,"refusal":`...)
		dst = jsonw.AppendString(dst, c.refusal)
	}
	if c.nCalls > 0 {
		calls := c.calls[:c.nCalls]
		dst = append(dst, `,"tool_calls":[`...)
		for i := range calls {
			tc := &calls[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"id":`...)
			dst = jsonw.AppendString(dst, tc.id)
			dst = append(dst, `,"type":`...)
			if len(tc.typ) > 0 {
				dst = jsonw.AppendString(dst, tc.typ)
			} else {
				dst = append(dst, `"function"`...)
			}
			dst = append(dst, `,"function":{"name":`...)
			dst = jsonw.AppendString(dst, tc.name)
			dst = append(dst, `,"arguments":`...)
			dst = jsonw.AppendString(dst, tc.args)
			dst = append(dst, `}}`...)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func cmpInt64(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// b2s views b as a string without copying; b must not change while the
// string is in use.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
