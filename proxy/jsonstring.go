package proxy

import (
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// jsonStrings makes the string values gptapi writes into a parsed request
// or answer: cleaned, merged and prefixed texts, the caller's model name.
//
// fastjson's Arena.NewString escapes with strconv.AppendQuote, Go syntax
// that is not JSON for control characters other than \b \f \n \r \t, for
// bytes that are not UTF-8 and for non-printable runes past U+FFFF (\x1b
// of a terminal colour, \U000e0067 of a flag emoji); fastjson then neither
// reads such a string back as it was nor writes it as JSON, and the
// upstream gets a body it refuses. A string parsed from JSON text keeps that
// text, so each one is escaped by jsonw and parsed, by a parser of its own
// (a parser's values last until its next parse).
type jsonStrings struct {
	parsers []*fastjson.Parser
	held    []int // the longest text each parser has copied, which it keeps
	n       int   // parsers in use
	scr     []byte
	cat     []byte
}

// newString returns a string value holding the concatenation of parts,
// valid until reset.
func (js *jsonStrings) newString(a *fastjson.Arena, parts ...string) *fastjson.Value {
	s := parts[0]
	if len(parts) > 1 {
		js.cat = js.cat[:0]
		for _, p := range parts {
			js.cat = append(js.cat, p...)
		}
		s = b2s(js.cat)
	}
	if js.n == len(js.parsers) {
		js.parsers = append(js.parsers, new(fastjson.Parser))
		js.held = append(js.held, 0)
	}
	js.scr = jsonw.AppendString(js.scr[:0], s)
	js.held[js.n] = max(js.held[js.n], len(js.scr))
	v, err := js.parsers[js.n].ParseBytes(js.scr)
	js.n++
	if err != nil {
		return a.NewString(s) // not reached: AppendString writes valid JSON
	}
	return v
}

// reset forgets the strings made. Parsers that hold more text between them
// than a pooled request keeps are let go.
func (js *jsonStrings) reset() {
	js.n = 0
	held := 0
	for _, h := range js.held {
		held += h
	}
	if held > maxKeptText || len(js.parsers) > maxKeptStrings {
		js.parsers, js.held = nil, nil
	}
	if cap(js.scr) > maxKeptText {
		js.scr = nil
	}
	if cap(js.cat) > maxKeptText {
		js.cat = nil
	}
}
