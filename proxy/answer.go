package proxy

import (
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
	"github.com/gptapi/gptapi/logsink"
)

// rewriteAnswer appends a non-streaming chat or completions answer with the
// client's special_prefix on every choice's text and, when model is set, the
// caller's model name. It reports false when body is not a JSON object; the
// answer then passes as it came.
func rewriteAnswer(dst []byte, p *fastjson.Parser, a *fastjson.Arena, strs *jsonStrings, body []byte, prefix string, model []byte) ([]byte, bool) {
	// An answer is parsed whole; one whose shape would make it cost far
	// more memory than its size is relayed as it came.
	if n, err := logsink.CountValues(body); err != nil || n > logsink.ValueBudget(len(body)) {
		return dst, false
	}
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return dst, false
	}
	if model != nil && v.Get("model") != nil {
		v.Set("model", strs.newString(a, b2s(model)))
	}
	if prefix != "" {
		for _, ch := range v.GetArray("choices") {
			target, key := ch.Get("message"), "content"
			if target == nil {
				target, key = ch, "text"
			}
			t := target.Get(key)
			if t == nil || t.Type() != fastjson.TypeString {
				continue
			}
			// A choice with no text (a tool call with "" content) gets
			// none, as in a stream, where the prefix goes with the first
			// text.
			if b, _ := t.StringBytes(); len(b) > 0 {
				target.Set(key, strs.newString(a, prefix, b2s(b)))
			}
		}
	}
	return jsonw.AppendValue(dst, v), true
}
