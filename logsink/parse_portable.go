package logsink

import (
	"bytes"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// fastParser is the portable parser, built everywhere: the only one off
// amd64 and the fallback on amd64 CPUs without AVX2.
type fastParser struct {
	p       fastjson.Parser
	num     []byte   // scratch for a number's text
	members []Member // an answer's top-level members
	built   int      // values parsed for the current answer
	// and the bytes they came from, which the parser copies
	builtBytes int
}

// fastjson's typed accessors (Object, Array, StringBytes, Int64) build an
// error with fmt.Errorf on a type mismatch, and null is everywhere in chunks
// ("usage": null, "content": null, "finish_reason": null): the parser checks
// types first with GetObject, GetArray and these, which allocate nothing.
func stringBytes(v *fastjson.Value) ([]byte, bool) {
	if v.Type() != fastjson.TypeString {
		return nil, false
	}
	return v.GetStringBytes(), true
}

func int64Of(v *fastjson.Value) (int64, bool) {
	if v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	n, err := v.Int64() // errs only for a number that is not an integer
	return n, err == nil
}

func (fp *fastParser) object(b []byte) *fastjson.Object {
	v, err := fp.p.ParseBytes(b)
	if err != nil {
		return nil
	}
	o := v.GetObject()
	if o == nil {
		return nil
	}
	return o
}

func (fp *fastParser) request(body []byte, d *derived) {
	if o := fp.object(body); o != nil {
		d.hasTools, d.multimodal = RequestOffers(o)
	}
}

// RequestOffers reads a chat request's has_tools and multimodal columns
// (SPEC §4.5): a non-empty tools or functions array, and a message content
// part whose type is not "text". The proxy calls it on the request it has
// parsed anyway and hands the answer over with the record
// (Record.RequestScanned), so the writer does not parse the body again.
func RequestOffers(o *fastjson.Object) (tools, multimodal bool) {
	o.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "tools", "functions":
			tools = tools || len(v.GetArray()) > 0
		case "messages":
			multimodal = multimodal || fastMultimodal(v)
		}
	})
	return tools, multimodal
}

// MessagesMultimodal reports whether a chat's messages array has a content
// part that is not text (SPEC §4.5 multimodal): the proxy's half of
// RequestOffers, for a request it parsed member by member.
func MessagesMultimodal(msgs *fastjson.Value) bool {
	return msgs != nil && fastMultimodal(msgs)
}

// fastMultimodal reports whether a message of the array v has a content
// part whose type is not "text".
func fastMultimodal(v *fastjson.Value) bool {
	msgs := v.GetArray()
	if msgs == nil {
		return false
	}
	for _, m := range msgs {
		mo := m.GetObject()
		if mo == nil {
			continue
		}
		found := false
		mo.Visit(func(key []byte, v *fastjson.Value) {
			if found || string(key) != "content" {
				return
			}
			parts := v.GetArray()
			if parts == nil {
				return
			}
			for _, p := range parts {
				po := p.GetObject()
				if po == nil {
					continue
				}
				if fastPartNotText(po) {
					found = true
					return
				}
			}
		})
		if found {
			return true
		}
	}
	return false
}

func fastPartNotText(po *fastjson.Object) bool {
	text := false
	po.Visit(func(key []byte, v *fastjson.Value) {
		if string(key) == "type" {
			t, ok := stringBytes(v)
			text = ok && string(t) == "text"
		}
	})
	return !text
}

// answer reads only the members it needs, each parsed alone and within
// its value budget: an answer of 64 MiB of embedding floats costs a scan,
// not a value per number, and usage is found wherever it is.
func (fp *fastParser) answer(body []byte, d *derived) {
	var err error
	fp.members, err = ScanObject(fp.members[:0], body, maxAnswerMembers)
	if err != nil {
		return
	}
	var kb [32]byte
	for i := range fp.members {
		m := &fp.members[i]
		switch string(jsonw.Key(&kb, m.Key)) {
		case "usage":
			if uo := fp.member(m); uo != nil {
				if o := uo.GetObject(); o != nil {
					d.usage = fastUsage(o)
				}
			}
		case "choices":
			v := fp.member(m)
			if v == nil {
				continue
			}
			for _, ch := range v.GetArray() {
				cho := ch.GetObject()
				if cho == nil {
					continue
				}
				cho.Visit(func(key []byte, v *fastjson.Value) {
					if string(key) == "message" {
						if mo := v.GetObject(); mo != nil {
							fastMessageTools(mo, d)
						}
					}
				})
			}
		}
	}
	if cap(fp.members) > maxKeptMembers {
		fp.members = nil
	}
	if fp.built > maxKeptValues || fp.builtBytes > maxPooledBytes {
		fp.p = fastjson.Parser{} // let a huge answer's values, and its copy of the text, go
	}
	fp.built, fp.builtBytes = 0, 0
}

// Bounds on the members of one answer the writer looks at.
const (
	maxAnswerMembers = 4096
	maxKeptMembers   = 256
	maxKeptValues    = 1 << 16
)

// member parses one member's value, or returns nil when it holds more
// values than its size allows. The value is valid until the next parse.
func (fp *fastParser) member(m *Member) *fastjson.Value {
	if m.Values > ValueBudget(len(m.Val)) {
		return nil
	}
	fp.built += m.Values
	fp.builtBytes += len(m.Val)
	v, err := fp.p.ParseBytes(m.Val)
	if err != nil {
		return nil
	}
	return v
}

func fastMessageTools(mo *fastjson.Object, d *derived) {
	mo.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "tool_calls":
			calls := v.GetArray()
			for _, c := range calls {
				co := c.GetObject()
				if co == nil {
					continue
				}
				co.Visit(func(key []byte, v *fastjson.Value) {
					if string(key) == "function" {
						if fo := v.GetObject(); fo != nil {
							fastAddName(fo, d)
						}
					}
				})
			}
		case "function_call":
			if fo := v.GetObject(); fo != nil {
				fastAddName(fo, d)
			}
		}
	})
}

func fastAddName(fo *fastjson.Object, d *derived) {
	fo.Visit(func(key []byte, v *fastjson.Value) {
		if string(key) == "name" {
			if s, ok := stringBytes(v); ok {
				d.addTool(s)
			}
		}
	})
}

func fastUsage(uo *fastjson.Object) usage {
	var u usage
	uo.Visit(func(key []byte, v *fastjson.Value) {
		if string(key) == "prompt_tokens_details" {
			if do := v.GetObject(); do != nil {
				do.Visit(func(key []byte, v *fastjson.Value) {
					if n, ok := int64Of(v); ok {
						u.setDetail(key, n)
					}
				})
			}
			return
		}
		if v.Type() != fastjson.TypeNumber {
			return
		}
		if n, ok := int64Of(v); ok {
			u.setField(key, n)
		}
	})
	return u
}

func (fp *fastParser) stream(ndjson []byte, a *assembly) {
	for len(ndjson) > 0 {
		line := ndjson
		if i := bytes.IndexByte(ndjson, '\n'); i >= 0 {
			line, ndjson = ndjson[:i], ndjson[i+1:]
		} else {
			ndjson = nil
		}
		if o := fp.object(line); o != nil {
			fp.chunk(o, a)
		}
	}
}

func (fp *fastParser) chunk(o *fastjson.Object, a *assembly) {
	o.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "id":
			if s, ok := stringBytes(v); ok {
				a.setID(s)
			}
		case "model":
			if s, ok := stringBytes(v); ok {
				a.setModel(s)
			}
		case "created":
			if n, ok := int64Of(v); ok {
				a.setCreated(n)
			}
		case "choices":
			chs := v.GetArray()
			for _, ch := range chs {
				if cho := ch.GetObject(); cho != nil {
					fastChoice(cho, a)
				}
			}
		case "usage":
			if uo := v.GetObject(); uo != nil {
				a.usage = fastUsage(uo)
				a.usageJSON = fp.appendValue(a.usageJSON[:0], v)
			}
		case "error":
			if v.Type() != fastjson.TypeNull {
				a.hasErr = true
				a.errJSON = fp.appendValue(a.errJSON[:0], v)
			}
		}
	})
}

func fastChoice(cho *fastjson.Object, a *assembly) {
	var index int64
	cho.Visit(func(key []byte, v *fastjson.Value) {
		if string(key) == "index" {
			if n, ok := int64Of(v); ok {
				index = n
			}
		}
	})
	c := a.choice(index)
	if c == nil {
		return
	}
	cho.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "delta":
			if do := v.GetObject(); do != nil {
				fastDelta(do, c)
			}
		case "text":
			if s, ok := stringBytes(v); ok {
				c.text = append(c.text, s...)
			}
		case "finish_reason":
			if s, ok := stringBytes(v); ok {
				c.setFinish(s)
			}
		}
	})
}

func fastDelta(do *fastjson.Object, c *choice) {
	do.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "content":
			if s, ok := stringBytes(v); ok {
				c.content = append(c.content, s...)
				c.hasContent = true
			}
		case "reasoning_content":
			if s, ok := stringBytes(v); ok {
				c.reasoningContent = append(c.reasoningContent, s...)
			}
		case "reasoning":
			if s, ok := stringBytes(v); ok {
				c.reasoning = append(c.reasoning, s...)
			}
		case "refusal":
			if s, ok := stringBytes(v); ok {
				c.refusal = append(c.refusal, s...)
			}
		case "tool_calls":
			calls := v.GetArray()
			for _, tv := range calls {
				if to := tv.GetObject(); to != nil {
					fastToolCall(to, c)
				}
			}
		case "function_call":
			if fo := v.GetObject(); fo != nil {
				if tc := c.call(0, true, nil); tc != nil {
					fastFunction(fo, tc)
				}
			}
		}
	})
}

func fastToolCall(to *fastjson.Object, c *choice) {
	var (
		index    int64
		hasIndex bool
		id       []byte
	)
	to.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "index":
			if n, ok := int64Of(v); ok {
				index, hasIndex = n, true
			}
		case "id":
			if s, ok := stringBytes(v); ok && len(s) > 0 {
				id = s
			}
		}
	})
	tc := c.call(index, hasIndex, id)
	if tc == nil {
		return
	}
	tc.setID(id)
	to.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "type":
			if s, ok := stringBytes(v); ok {
				tc.setType(s)
			}
		case "function":
			if fo := v.GetObject(); fo != nil {
				fastFunction(fo, tc)
			}
		}
	})
}

func fastFunction(fo *fastjson.Object, tc *toolCall) {
	fo.Visit(func(key []byte, v *fastjson.Value) {
		switch string(key) {
		case "name":
			if s, ok := stringBytes(v); ok {
				tc.setName(s)
			}
		case "arguments":
			if s, ok := stringBytes(v); ok {
				tc.args = append(tc.args, s...)
			}
		}
	})
}

// appendValue re-encodes v in the canonical form both parsers share: keys in
// their order, strings through jsonw.AppendString, numbers through
// appendJSONNumber.
func (fp *fastParser) appendValue(dst []byte, v *fastjson.Value) []byte {
	return jsonw.AppendValueWith(dst, v, fp.appendNumber)
}

func (fp *fastParser) appendNumber(dst []byte, v *fastjson.Value) []byte {
	fp.num = v.MarshalTo(fp.num[:0])
	if out, ok := appendJSONNumber(dst, fp.num); ok {
		return out
	}
	return append(dst, "null"...)
}

var _ parser = (*fastParser)(nil)
