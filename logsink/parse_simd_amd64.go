//go:build amd64

package logsink

import (
	"bytes"
	"math"
	"strconv"

	"github.com/minio/simdjson-go"

	"github.com/gptapi/gptapi/internal/jsonw"
)

func init() {
	parsers["simdjson+fastjson"] = func() parser { return &mixedParser{simdParser: newSIMDParser()} }
	if simdjson.SupportedCPU() {
		defaultParser = "simdjson+fastjson"
	}
}

// mixedParser is the writer's parser where simdjson-go runs: simdjson for a
// stream's chunks, where one ParseND over all of them beats a parse per
// chunk, and fastjson for single request and answer bodies, where it is the
// faster one because it never decodes the long content string.
// BenchmarkDerive measures both on each input.
type mixedParser struct {
	*simdParser
	fast fastParser
}

func (mp *mixedParser) request(body []byte, d *derived) { mp.fast.request(body, d) }
func (mp *mixedParser) answer(body []byte, d *derived)  { mp.fast.answer(body, d) }

// simdParser parses a stream's chunks in one ParseND call, on amd64 CPUs
// with AVX2 and CLMUL.
type simdParser struct {
	// arm is a ParsedJson that still links to simdjson-go's internal
	// buffers. ParseND returns one with that link cleared, so the result
	// cannot be passed back as reuse; arm keeps the link and takes the
	// result's grown tape and strings after every parse. Without it each
	// ParseND would allocate ~100 KB of fresh state.
	arm simdjson.ParsedJson
}

func newSIMDParser() *simdParser {
	sp := &simdParser{}
	if pj, err := simdjson.Parse([]byte(`{}`), nil); err == nil {
		sp.arm = *pj
	}
	return sp
}

var noCopy = simdjson.WithCopyStrings(false)

func (sp *simdParser) parse(b []byte, nd bool) *simdjson.ParsedJson {
	var (
		pj  *simdjson.ParsedJson
		err error
	)
	if nd {
		pj, err = simdjson.ParseND(b, &sp.arm, noCopy)
	} else {
		pj, err = simdjson.Parse(b, &sp.arm, noCopy)
	}
	if err != nil {
		return nil
	}
	sp.arm.Tape = pj.Tape
	sp.arm.Strings = pj.Strings
	sp.arm.Message = nil
	return pj
}

// tape reads a ParsedJson's tape directly. simdjson-go's Iter and Object
// copy the whole ParsedJson header at every step and make the walk's values
// escape; reading the tape words costs neither. The layout (simdjson's): a
// word is tag<<56 | value; a root
// or an object or array start holds the index just past its end; a string
// holds its offset (in Strings when STRINGBUFBIT is set, else in Message)
// and the next word its length; numbers keep their value in the next word.
type tape struct {
	t   []uint64
	str []byte
	msg []byte
}

func newTape(pj *simdjson.ParsedJson) tape {
	tp := tape{t: pj.Tape, msg: pj.Message}
	if pj.Strings != nil {
		tp.str = pj.Strings.B
	}
	return tp
}

func (tp *tape) tag(i int) simdjson.Tag {
	if i >= len(tp.t) {
		return simdjson.TagEnd
	}
	return simdjson.Tag(tp.t[i] >> simdjson.JSONTAGOFFSET)
}

func (tp *tape) val(i int) uint64 { return tp.t[i] & simdjson.JSONVALUEMASK }

// next is the index of the value after the one at i.
func (tp *tape) next(i int) int {
	switch tp.tag(i) {
	case simdjson.TagString, simdjson.TagInteger, simdjson.TagUint, simdjson.TagFloat:
		return i + 2
	case simdjson.TagObjectStart, simdjson.TagArrayStart:
		if end := int(tp.val(i)); end > i {
			return end
		}
		return len(tp.t)
	}
	return i + 1
}

func (tp *tape) string(i int) ([]byte, bool) {
	if tp.tag(i) != simdjson.TagString || i+1 >= len(tp.t) {
		return nil, false
	}
	off, n := tp.val(i), tp.t[i+1]
	src := tp.msg
	if off&simdjson.STRINGBUFBIT != 0 {
		off &= simdjson.STRINGBUFMASK
		src = tp.str
	}
	if off > uint64(len(src)) || n > uint64(len(src))-off {
		return nil, false
	}
	return src[off : off+n], true
}

// int returns an integer value; floats are not counts.
func (tp *tape) int(i int) (int64, bool) {
	if i+1 >= len(tp.t) {
		return 0, false
	}
	switch tp.tag(i) {
	case simdjson.TagInteger:
		return int64(tp.t[i+1]), true
	case simdjson.TagUint:
		if n := tp.t[i+1]; n <= math.MaxInt64 {
			return int64(n), true
		}
	}
	return 0, false
}

// members iterates the keys and values of the object at i.
type members struct {
	tp       *tape
	pos, end int
}

func (tp *tape) object(i int) (members, bool) {
	if tp.tag(i) != simdjson.TagObjectStart {
		return members{}, false
	}
	// the end index is one past the closing '}'
	return members{tp: tp, pos: i + 1, end: tp.next(i) - 1}, true
}

// next returns the next key and the index of its value.
func (m *members) next() ([]byte, int, bool) {
	if m.pos >= m.end {
		return nil, 0, false
	}
	key, ok := m.tp.string(m.pos)
	if !ok {
		return nil, 0, false
	}
	v := m.pos + 2
	m.pos = m.tp.next(v)
	return key, v, true
}

// elements iterates the values of the array at i.
type elements struct {
	tp       *tape
	pos, end int
}

func (tp *tape) array(i int) (elements, bool) {
	if tp.tag(i) != simdjson.TagArrayStart {
		return elements{}, false
	}
	return elements{tp: tp, pos: i + 1, end: tp.next(i) - 1}, true
}

func (e *elements) next() (int, bool) {
	if e.pos >= e.end {
		return 0, false
	}
	v := e.pos
	e.pos = e.tp.next(v)
	return v, true
}

// root returns the tape of a document parsed with Parse and the index of its
// top-level object.
func (sp *simdParser) root(b []byte) (tape, int, bool) {
	if len(b) == 0 {
		return tape{}, 0, false
	}
	pj := sp.parse(b, false)
	if pj == nil {
		return tape{}, 0, false
	}
	tp := newTape(pj)
	if tp.tag(0) != simdjson.TagRoot || tp.tag(1) != simdjson.TagObjectStart {
		return tape{}, 0, false
	}
	return tp, 1, true
}

func (tp *tape) usage(i int) (usage, bool) {
	um, ok := tp.object(i)
	if !ok {
		return usage{}, false
	}
	var u usage
	for key, v, ok := um.next(); ok; key, v, ok = um.next() {
		if string(key) == "prompt_tokens_details" {
			if dm, ok := tp.object(v); ok {
				for key, v, ok := dm.next(); ok; key, v, ok = dm.next() {
					if n, ok := tp.int(v); ok {
						u.setDetail(key, n)
					}
				}
			}
			continue
		}
		if n, ok := tp.int(v); ok {
			u.setField(key, n)
		}
	}
	return u, true
}

// ndGroup is the most NDJSON one ParseND call gets (but for a longer single
// line). simdjson-go parses a larger input with a second goroutine, which
// costs more than it saves on a stream's chunks (BenchmarkDerive on the
// longer recorded streams).
const ndGroup = 8 << 10

func (sp *simdParser) stream(ndjson []byte, a *assembly) {
	for len(ndjson) > 0 {
		group := ndjson
		if len(group) > ndGroup {
			// whole lines up to ndGroup bytes, or one longer line
			cut := bytes.LastIndexByte(group[:ndGroup], '\n')
			if cut < 0 {
				cut = bytes.IndexByte(group, '\n')
			}
			if cut >= 0 {
				group = group[:cut+1]
			}
		}
		ndjson = ndjson[len(group):]
		sp.streamGroup(group, a)
	}
}

func (sp *simdParser) streamGroup(ndjson []byte, a *assembly) {
	if len(bytes.TrimSpace(ndjson)) == 0 {
		return
	}
	pj := sp.parse(ndjson, true)
	if pj == nil {
		// One bad line (a cut last chunk, say) fails the whole NDJSON:
		// parse line by line and skip what is not JSON.
		sp.streamLines(ndjson, a)
		return
	}
	tp := newTape(pj)
	// one root per line: 'r', the line's value, 'r'
	for i := 0; tp.tag(i) == simdjson.TagRoot; {
		end := int(tp.val(i))
		if end <= i {
			return
		}
		tp.chunk(i+1, a)
		i = end
	}
}

func (sp *simdParser) streamLines(ndjson []byte, a *assembly) {
	for len(ndjson) > 0 {
		line := ndjson
		if i := bytes.IndexByte(ndjson, '\n'); i >= 0 {
			line, ndjson = ndjson[:i], ndjson[i+1:]
		} else {
			ndjson = nil
		}
		if tp, o, ok := sp.root(bytes.TrimSpace(line)); ok {
			tp.chunk(o, a)
		}
	}
}

func (tp *tape) chunk(i int, a *assembly) {
	m, ok := tp.object(i)
	if !ok {
		return
	}
	for key, v, ok := m.next(); ok; key, v, ok = m.next() {
		switch string(key) {
		case "id":
			if s, ok := tp.string(v); ok {
				a.setID(s)
			}
		case "model":
			if s, ok := tp.string(v); ok {
				a.setModel(s)
			}
		case "created":
			if n, ok := tp.int(v); ok {
				a.setCreated(n)
			}
		case "choices":
			chs, ok := tp.array(v)
			if !ok {
				continue
			}
			for ch, ok := chs.next(); ok; ch, ok = chs.next() {
				tp.choice(ch, a)
			}
		case "usage":
			if u, ok := tp.usage(v); ok {
				a.usage = u
				a.usageJSON = tp.appendValue(a.usageJSON[:0], v)
			}
		case "error":
			if tp.tag(v) != simdjson.TagNull {
				a.hasErr = true
				a.errJSON = tp.appendValue(a.errJSON[:0], v)
			}
		}
	}
}

func (tp *tape) choice(i int, a *assembly) {
	cm, ok := tp.object(i)
	if !ok {
		return
	}
	var index int64
	for key, v, ok := cm.next(); ok; key, v, ok = cm.next() {
		if string(key) == "index" {
			if n, ok := tp.int(v); ok {
				index = n
			}
		}
	}
	c := a.choice(index)
	if c == nil {
		return
	}
	cm, _ = tp.object(i)
	for key, v, ok := cm.next(); ok; key, v, ok = cm.next() {
		switch string(key) {
		case "delta":
			tp.delta(v, c)
		case "text":
			if s, ok := tp.string(v); ok {
				c.text = append(c.text, s...)
			}
		case "finish_reason":
			if s, ok := tp.string(v); ok {
				c.setFinish(s)
			}
		}
	}
}

func (tp *tape) delta(i int, c *choice) {
	dm, ok := tp.object(i)
	if !ok {
		return
	}
	for key, v, ok := dm.next(); ok; key, v, ok = dm.next() {
		switch string(key) {
		case "content":
			if s, ok := tp.string(v); ok {
				c.content = append(c.content, s...)
				c.hasContent = true
			}
		case "reasoning_content":
			if s, ok := tp.string(v); ok {
				c.reasoningContent = append(c.reasoningContent, s...)
			}
		case "reasoning":
			if s, ok := tp.string(v); ok {
				c.reasoning = append(c.reasoning, s...)
			}
		case "refusal":
			if s, ok := tp.string(v); ok {
				c.refusal = append(c.refusal, s...)
			}
		case "tool_calls":
			calls, ok := tp.array(v)
			if !ok {
				continue
			}
			for tc, ok := calls.next(); ok; tc, ok = calls.next() {
				tp.toolCall(tc, c)
			}
		case "function_call":
			if _, ok := tp.object(v); ok {
				if tc := c.call(0, true, nil); tc != nil {
					tp.function(v, tc)
				}
			}
		}
	}
}

func (tp *tape) toolCall(i int, c *choice) {
	tm, ok := tp.object(i)
	if !ok {
		return
	}
	var (
		index    int64
		hasIndex bool
		id       []byte
	)
	for key, v, ok := tm.next(); ok; key, v, ok = tm.next() {
		switch string(key) {
		case "index":
			if n, ok := tp.int(v); ok {
				index, hasIndex = n, true
			}
		case "id":
			if s, ok := tp.string(v); ok && len(s) > 0 {
				id = s
			}
		}
	}
	tc := c.call(index, hasIndex, id)
	if tc == nil {
		return
	}
	tc.setID(id)
	tm, _ = tp.object(i)
	for key, v, ok := tm.next(); ok; key, v, ok = tm.next() {
		switch string(key) {
		case "type":
			if s, ok := tp.string(v); ok {
				tc.setType(s)
			}
		case "function":
			tp.function(v, tc)
		}
	}
}

func (tp *tape) function(i int, tc *toolCall) {
	fm, ok := tp.object(i)
	if !ok {
		return
	}
	for key, v, ok := fm.next(); ok; key, v, ok = fm.next() {
		switch string(key) {
		case "name":
			if s, ok := tp.string(v); ok {
				tc.setName(s)
			}
		case "arguments":
			if s, ok := tp.string(v); ok {
				tc.args = append(tc.args, s...)
			}
		}
	}
}

// appendValue re-encodes the value at i in the canonical form both parsers
// share (see fastParser.appendValue).
func (tp *tape) appendValue(dst []byte, i int) []byte {
	switch tp.tag(i) {
	case simdjson.TagObjectStart:
		m, _ := tp.object(i)
		dst = append(dst, '{')
		n := 0
		for key, v, ok := m.next(); ok; key, v, ok = m.next() {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = jsonw.AppendString(dst, key)
			dst = append(dst, ':')
			dst = tp.appendValue(dst, v)
		}
		return append(dst, '}')
	case simdjson.TagArrayStart:
		e, _ := tp.array(i)
		dst = append(dst, '[')
		n := 0
		for v, ok := e.next(); ok; v, ok = e.next() {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = tp.appendValue(dst, v)
		}
		return append(dst, ']')
	case simdjson.TagString:
		s, _ := tp.string(i)
		return jsonw.AppendString(dst, s)
	case simdjson.TagInteger:
		if i+1 < len(tp.t) {
			return strconv.AppendInt(dst, int64(tp.t[i+1]), 10)
		}
	case simdjson.TagUint:
		if i+1 < len(tp.t) {
			return strconv.AppendUint(dst, tp.t[i+1], 10)
		}
	case simdjson.TagFloat:
		if i+1 < len(tp.t) {
			return appendJSONFloat(dst, math.Float64frombits(tp.t[i+1]))
		}
	case simdjson.TagBoolTrue:
		return append(dst, "true"...)
	case simdjson.TagBoolFalse:
		return append(dst, "false"...)
	}
	return append(dst, "null"...)
}

var _ parser = (*mixedParser)(nil)
