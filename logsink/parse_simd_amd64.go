//go:build amd64

package logsink

import (
	"bytes"
	"math"
	"strconv"

	"github.com/minio/simdjson-go"
)

func init() {
	parsers["simdjson"] = func() parser { return newSIMDParser() }
	if simdjson.SupportedCPU() {
		defaultParser = "simdjson"
	}
}

// simdParser is the parser on amd64 CPUs with AVX2 and CLMUL. A stream's
// chunks are parsed in one ParseND call.
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

func (sp *simdParser) name() string { return "simdjson" }

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

// root returns the top-level object of a document parsed with Parse.
func (sp *simdParser) root(b []byte, dst *simdjson.Object) *simdjson.Object {
	if len(b) == 0 {
		return nil
	}
	pj := sp.parse(b, false)
	if pj == nil {
		return nil
	}
	it := pj.Iter()
	if it.Advance() != simdjson.TypeRoot {
		return nil
	}
	var in simdjson.Iter
	typ, _, err := it.Root(&in)
	if err != nil || typ != simdjson.TypeObject {
		return nil
	}
	o, err := in.Object(dst)
	if err != nil {
		return nil
	}
	return o
}

// simdInt returns an integer value; floats are not counts.
func simdInt(it *simdjson.Iter, t simdjson.Type) (int64, bool) {
	switch t {
	case simdjson.TypeInt:
		n, err := it.Int()
		return n, err == nil
	case simdjson.TypeUint:
		n, err := it.Uint()
		if err != nil || n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

func simdString(it *simdjson.Iter, t simdjson.Type) ([]byte, bool) {
	if t != simdjson.TypeString {
		return nil, false
	}
	s, err := it.StringBytes()
	return s, err == nil
}

// each calls fn for every element of the array it holds.
func each(it *simdjson.Iter, fn func(el *simdjson.Iter, t simdjson.Type)) {
	var arr simdjson.Array
	a, err := it.Array(&arr)
	if err != nil {
		return
	}
	ai := a.Iter()
	for {
		t := ai.Advance()
		if t == simdjson.TypeNone {
			return
		}
		fn(&ai, t)
	}
}

// fields calls fn for every key of the object it holds, in order.
func fields(it *simdjson.Iter, fn func(key []byte, v *simdjson.Iter, t simdjson.Type)) {
	var obj simdjson.Object
	o, err := it.Object(&obj)
	if err != nil {
		return
	}
	walk(o, fn)
}

func walk(o *simdjson.Object, fn func(key []byte, v *simdjson.Iter, t simdjson.Type)) {
	var v simdjson.Iter
	for {
		key, t, err := o.NextElementBytes(&v)
		if err != nil || t == simdjson.TypeNone {
			return
		}
		fn(key, &v, t)
	}
}

// arrayLen counts the elements of the array it holds.
func arrayLen(it *simdjson.Iter, t simdjson.Type) int {
	if t != simdjson.TypeArray {
		return 0
	}
	n := 0
	each(it, func(*simdjson.Iter, simdjson.Type) { n++ })
	return n
}

func (sp *simdParser) request(body []byte, d *derived) {
	var obj simdjson.Object
	o := sp.root(body, &obj)
	if o == nil {
		return
	}
	walk(o, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "tools", "functions":
			if arrayLen(v, t) > 0 {
				d.hasTools = true
			}
		case "messages":
			if t == simdjson.TypeArray && !d.multimodal {
				d.multimodal = simdMultimodal(v)
			}
		}
	})
}

func simdMultimodal(v *simdjson.Iter) bool {
	found := false
	each(v, func(m *simdjson.Iter, t simdjson.Type) {
		if found || t != simdjson.TypeObject {
			return
		}
		fields(m, func(key []byte, c *simdjson.Iter, t simdjson.Type) {
			if found || string(key) != "content" || t != simdjson.TypeArray {
				return
			}
			each(c, func(p *simdjson.Iter, t simdjson.Type) {
				if found || t != simdjson.TypeObject {
					return
				}
				text := false
				fields(p, func(key []byte, tv *simdjson.Iter, t simdjson.Type) {
					if string(key) == "type" {
						s, ok := simdString(tv, t)
						text = ok && string(s) == "text"
					}
				})
				found = !text
			})
		})
	})
	return found
}

func (sp *simdParser) answer(body []byte, d *derived) {
	var obj simdjson.Object
	o := sp.root(body, &obj)
	if o == nil {
		return
	}
	walk(o, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "usage":
			if t == simdjson.TypeObject {
				d.usage = simdUsage(v)
			}
		case "choices":
			if t != simdjson.TypeArray {
				return
			}
			each(v, func(ch *simdjson.Iter, t simdjson.Type) {
				if t != simdjson.TypeObject {
					return
				}
				fields(ch, func(key []byte, m *simdjson.Iter, t simdjson.Type) {
					if string(key) == "message" && t == simdjson.TypeObject {
						simdMessageTools(m, d)
					}
				})
			})
		}
	})
}

func simdMessageTools(m *simdjson.Iter, d *derived) {
	fields(m, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "tool_calls":
			if t != simdjson.TypeArray {
				return
			}
			each(v, func(c *simdjson.Iter, t simdjson.Type) {
				if t != simdjson.TypeObject {
					return
				}
				fields(c, func(key []byte, f *simdjson.Iter, t simdjson.Type) {
					if string(key) == "function" && t == simdjson.TypeObject {
						simdAddName(f, d)
					}
				})
			})
		case "function_call":
			if t == simdjson.TypeObject {
				simdAddName(v, d)
			}
		}
	})
}

func simdAddName(f *simdjson.Iter, d *derived) {
	fields(f, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		if string(key) == "name" {
			if s, ok := simdString(v, t); ok {
				d.addTool(s)
			}
		}
	})
}

func simdUsage(v *simdjson.Iter) usage {
	var u usage
	fields(v, func(key []byte, n *simdjson.Iter, t simdjson.Type) {
		if x, ok := simdInt(n, t); ok {
			u.setField(key, x)
		}
	})
	return u
}

func (sp *simdParser) stream(ndjson []byte, a *assembly) {
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
	it := pj.Iter()
	var root simdjson.Iter
	for {
		t, err := it.AdvanceIter(&root)
		if err != nil || t != simdjson.TypeRoot {
			return
		}
		if root.AdvanceInto().Type() == simdjson.TypeObject {
			sp.chunk(&root, a)
		}
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
		var obj simdjson.Object
		if o := sp.root(bytes.TrimSpace(line), &obj); o != nil {
			walk(o, func(key []byte, v *simdjson.Iter, t simdjson.Type) { sp.chunkField(key, v, t, a) })
		}
	}
}

func (sp *simdParser) chunk(it *simdjson.Iter, a *assembly) {
	fields(it, func(key []byte, v *simdjson.Iter, t simdjson.Type) { sp.chunkField(key, v, t, a) })
}

func (sp *simdParser) chunkField(key []byte, v *simdjson.Iter, t simdjson.Type, a *assembly) {
	switch string(key) {
	case "id":
		if s, ok := simdString(v, t); ok {
			a.setID(s)
		}
	case "model":
		if s, ok := simdString(v, t); ok {
			a.setModel(s)
		}
	case "created":
		if n, ok := simdInt(v, t); ok {
			a.setCreated(n)
		}
	case "choices":
		if t != simdjson.TypeArray {
			return
		}
		each(v, func(ch *simdjson.Iter, t simdjson.Type) {
			if t == simdjson.TypeObject {
				simdChoice(ch, a)
			}
		})
	case "usage":
		if t == simdjson.TypeObject {
			a.usage = simdUsage(v)
			a.usageJSON = appendSIMDValue(a.usageJSON[:0], v, t)
		}
	case "error":
		if t != simdjson.TypeNull {
			a.hasErr = true
			a.errJSON = appendSIMDValue(a.errJSON[:0], v, t)
		}
	}
}

func simdChoice(ch *simdjson.Iter, a *assembly) {
	var index int64
	fields(ch, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		if string(key) == "index" {
			if n, ok := simdInt(v, t); ok {
				index = n
			}
		}
	})
	c := a.choice(index)
	if c == nil {
		return
	}
	fields(ch, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "delta":
			if t == simdjson.TypeObject {
				simdDelta(v, c)
			}
		case "text":
			if s, ok := simdString(v, t); ok {
				c.text = append(c.text, s...)
			}
		case "finish_reason":
			if s, ok := simdString(v, t); ok {
				c.setFinish(s)
			}
		}
	})
}

func simdDelta(d *simdjson.Iter, c *choice) {
	fields(d, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "content":
			if s, ok := simdString(v, t); ok {
				c.content = append(c.content, s...)
				c.hasContent = true
			}
		case "reasoning_content":
			if s, ok := simdString(v, t); ok {
				c.reasoningContent = append(c.reasoningContent, s...)
			}
		case "reasoning":
			if s, ok := simdString(v, t); ok {
				c.reasoning = append(c.reasoning, s...)
			}
		case "refusal":
			if s, ok := simdString(v, t); ok {
				c.refusal = append(c.refusal, s...)
			}
		case "tool_calls":
			if t != simdjson.TypeArray {
				return
			}
			each(v, func(tv *simdjson.Iter, t simdjson.Type) {
				if t == simdjson.TypeObject {
					simdToolCall(tv, c)
				}
			})
		case "function_call":
			if t == simdjson.TypeObject {
				if tc := c.call(0, true, nil); tc != nil {
					simdFunction(v, tc)
				}
			}
		}
	})
}

func simdToolCall(tv *simdjson.Iter, c *choice) {
	var (
		index    int64
		hasIndex bool
		id       []byte
	)
	fields(tv, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "index":
			if n, ok := simdInt(v, t); ok {
				index, hasIndex = n, true
			}
		case "id":
			if s, ok := simdString(v, t); ok && len(s) > 0 {
				id = s
			}
		}
	})
	tc := c.call(index, hasIndex, id)
	if tc == nil {
		return
	}
	tc.setID(id)
	fields(tv, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "type":
			if s, ok := simdString(v, t); ok {
				tc.setType(s)
			}
		case "function":
			if t == simdjson.TypeObject {
				simdFunction(v, tc)
			}
		}
	})
}

func simdFunction(f *simdjson.Iter, tc *toolCall) {
	fields(f, func(key []byte, v *simdjson.Iter, t simdjson.Type) {
		switch string(key) {
		case "name":
			if s, ok := simdString(v, t); ok {
				tc.setName(s)
			}
		case "arguments":
			if s, ok := simdString(v, t); ok {
				tc.args = append(tc.args, s...)
			}
		}
	})
}

// appendSIMDValue re-encodes a value in the canonical form both parsers
// share (see fastParser.appendValue).
func appendSIMDValue(dst []byte, v *simdjson.Iter, t simdjson.Type) []byte {
	switch t {
	case simdjson.TypeObject:
		dst = append(dst, '{')
		n := 0
		fields(v, func(key []byte, e *simdjson.Iter, t simdjson.Type) {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendJSONString(dst, key)
			dst = append(dst, ':')
			dst = appendSIMDValue(dst, e, t)
		})
		return append(dst, '}')
	case simdjson.TypeArray:
		dst = append(dst, '[')
		n := 0
		each(v, func(e *simdjson.Iter, t simdjson.Type) {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendSIMDValue(dst, e, t)
		})
		return append(dst, ']')
	case simdjson.TypeString:
		s, _ := v.StringBytes()
		return appendJSONString(dst, s)
	case simdjson.TypeInt:
		n, _ := v.Int()
		return strconv.AppendInt(dst, n, 10)
	case simdjson.TypeUint:
		n, _ := v.Uint()
		return strconv.AppendUint(dst, n, 10)
	case simdjson.TypeFloat:
		f, _ := v.Float()
		return appendJSONFloat(dst, f)
	case simdjson.TypeBool:
		b, _ := v.Bool()
		if b {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	}
	return append(dst, "null"...)
}

var _ parser = (*simdParser)(nil)
