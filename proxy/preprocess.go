package proxy

import (
	"strings"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
)

// preprocess applies SPEC §4.2 to the chat request's messages, in order:
// strip → strip_think (assistant only) → drop_empty → merge_user. It reports
// false when nothing is left to send.
func preprocess(r *request, a *fastjson.Arena, p *configs.Preprocess) bool {
	merge := p.MergeUser == configs.MergeUserMerge || p.MergeUser == configs.MergeUserLast
	if !p.Strip && !p.StripThink && !p.DropEmpty && !merge {
		return true
	}
	msgs := r.messages.GetArray()
	out := a.NewArray()
	n := 0
	mg := &r.merge
	for _, m := range msgs {
		content := m.Get("content")
		role := m.GetStringBytes("role")
		if content != nil {
			content = cleanContent(r, a, content, p, string(role) == "assistant")
			m.Set("content", content)
		}
		if p.DropEmpty && isEmptyContent(content) && !hasToolCalls(m) && !isToolResult(m) {
			continue
		}
		isUser := string(role) == "user"
		if merge && isUser && mg.msg != nil {
			if p.MergeUser == configs.MergeUserLast {
				out.SetArrayItem(n-1, m)
				mg.start(m, content)
			} else {
				mg.add(r, a, content)
			}
			continue
		}
		mg.finish(r, a)
		out.SetArrayItem(n, m)
		n++
		if merge && isUser {
			mg.start(m, content)
		}
	}
	mg.finish(r, a)
	r.messages, r.rewritten = out, true
	return n > 0
}

// merger joins a run of consecutive user messages into the first one, in
// one pass: texts are appended to one buffer and turned into a string once
// the run ends, parts are appended to one array. Re-joining the text so far
// at each message would make a run of n messages cost O(n²).
//
// Two plain texts join with a blank line between them; once a parts array
// has joined, the run's content is a parts array and each plain text after
// it becomes a text part of its own (SPEC §4.2).
type merger struct {
	msg    *fastjson.Value // the run's first message, which receives the content; nil outside a run
	first  *fastjson.Value // its content, read only once a second message joins
	merged bool            // more than one message joined
	text   bool            // every content so far is plain text: buf holds the join
	buf    []byte
	parts  *fastjson.Value // the parts array once text is false
	n      int             // items in parts
}

func (mg *merger) start(m, content *fastjson.Value) {
	mg.msg, mg.first, mg.merged = m, content, false
}

func (mg *merger) add(r *request, a *fastjson.Arena, content *fastjson.Value) {
	if !mg.merged {
		mg.merged, mg.n = true, 0
		mg.buf = mg.buf[:0]
		if s, ok := textOf(mg.first); ok {
			mg.text = true
			mg.buf = append(mg.buf, s...)
		} else {
			mg.text = false
			mg.parts = a.NewArray()
			mg.addParts(a, mg.first)
		}
	}
	if mg.text {
		if s, ok := textOf(content); ok {
			if len(s) > 0 {
				if len(mg.buf) > 0 {
					mg.buf = append(mg.buf, "\n\n"...)
				}
				mg.buf = append(mg.buf, s...)
			}
			return
		}
		// A parts array joins: the text so far becomes the first part.
		mg.text = false
		mg.parts = a.NewArray()
		if len(mg.buf) > 0 {
			mg.addText(a, r.strs.newString(a, b2s(mg.buf)))
		}
	}
	mg.addParts(a, content)
}

func (mg *merger) addParts(a *fastjson.Arena, v *fastjson.Value) {
	if v == nil {
		return
	}
	switch v.Type() {
	case fastjson.TypeArray:
		for _, p := range v.GetArray() {
			mg.parts.SetArrayItem(mg.n, p)
			mg.n++
		}
	case fastjson.TypeString:
		if b, _ := v.StringBytes(); len(b) > 0 {
			mg.addText(a, v)
		}
	}
}

func (mg *merger) addText(a *fastjson.Arena, s *fastjson.Value) {
	p := a.NewObject()
	p.Set("type", a.NewString("text"))
	p.Set("text", s)
	mg.parts.SetArrayItem(mg.n, p)
	mg.n++
}

// finish ends the run, if any: its first message gets the joined content.
func (mg *merger) finish(r *request, a *fastjson.Arena) {
	if mg.msg == nil {
		return
	}
	if mg.merged {
		if mg.text {
			mg.msg.Set("content", r.strs.newString(a, b2s(mg.buf)))
		} else {
			mg.msg.Set("content", mg.parts)
		}
	}
	mg.msg, mg.first, mg.parts = nil, nil, nil
}

// cleanContent strips a message's text: a string content, or the text parts
// of a parts array (non-text parts are kept as they are).
func cleanContent(r *request, a *fastjson.Arena, c *fastjson.Value, p *configs.Preprocess, assistant bool) *fastjson.Value {
	switch c.Type() {
	case fastjson.TypeString:
		b, _ := c.StringBytes()
		if s, changed := cleanText(r, b2s(b), p, assistant); changed {
			return r.strs.newString(a, s)
		}
	case fastjson.TypeArray:
		parts := c.GetArray()
		kept := a.NewArray()
		n := 0
		for _, part := range parts {
			if string(part.GetStringBytes("type")) == "text" {
				if t := part.Get("text"); t != nil && t.Type() == fastjson.TypeString {
					b, _ := t.StringBytes()
					s, changed := cleanText(r, b2s(b), p, assistant)
					if changed {
						part.Set("text", r.strs.newString(a, s))
					}
					if s == "" && p.DropEmpty {
						continue
					}
				}
			}
			kept.SetArrayItem(n, part)
			n++
		}
		if n != len(parts) {
			return kept
		}
	}
	return c
}

// cleanText trims s and, for assistant history, removes reasoning blocks and
// tool-call tags. It reports whether s changed.
func cleanText(r *request, s string, p *configs.Preprocess, assistant bool) (string, bool) {
	out := s
	if p.Strip {
		out = strings.TrimSpace(out)
	}
	if p.StripThink && assistant {
		out = stripThink(r, out)
		if p.Strip {
			out = strings.TrimSpace(out)
		}
	}
	return out, len(out) != len(s)
}

const (
	thinkOpen  = "<think>"
	thinkClose = "</think>"
)

// stripThink removes whole <think>…</think> blocks, a leading unclosed
// "…</think>" prefix (reasoning models often omit the opening tag), an
// unclosed trailing "<think>…" (a cut generation), and the literal tool-call
// tags, keeping what is between them.
func stripThink(r *request, s string) string {
	if !strings.Contains(s, "think>") && !strings.Contains(s, "tool_call>") {
		return s
	}
	start := len(r.text)
	// A closing tag before any opening one ends a leading unclosed block.
	if c := strings.Index(s, thinkClose); c >= 0 {
		if o := strings.Index(s, thinkOpen); o < 0 || o > c {
			s = s[c+len(thinkClose):]
		}
	}
	for {
		o := strings.Index(s, thinkOpen)
		if o < 0 {
			r.appendWithoutToolTags(s)
			break
		}
		r.appendWithoutToolTags(s[:o])
		rest := s[o+len(thinkOpen):]
		c := strings.Index(rest, thinkClose)
		if c < 0 {
			break // unclosed: the rest is reasoning
		}
		s = rest[c+len(thinkClose):]
	}
	return b2s(r.text[start:])
}

// appendWithoutToolTags appends s to r.text less the literal <tool_call>
// and </tool_call> tags.
func (r *request) appendWithoutToolTags(s string) {
	const tag = "tool_call>"
	for {
		i := strings.Index(s, tag)
		if i < 0 {
			r.text = append(r.text, s...)
			return
		}
		switch {
		case i >= 2 && s[i-2:i] == "</":
			r.text = append(r.text, s[:i-2]...)
		case i >= 1 && s[i-1] == '<':
			r.text = append(r.text, s[:i-1]...)
		default:
			r.text = append(r.text, s[:i+len(tag)]...)
		}
		s = s[i+len(tag):]
	}
}

func isEmptyContent(c *fastjson.Value) bool {
	if c == nil {
		return true
	}
	switch c.Type() {
	case fastjson.TypeNull:
		return true
	case fastjson.TypeString:
		b, _ := c.StringBytes()
		return len(b) == 0
	case fastjson.TypeArray:
		return len(c.GetArray()) == 0
	}
	return false
}

func hasToolCalls(m *fastjson.Value) bool {
	if tc := m.Get("tool_calls"); tc != nil && tc.Type() == fastjson.TypeArray && len(tc.GetArray()) > 0 {
		return true
	}
	fc := m.Get("function_call")
	return fc != nil && fc.Type() == fastjson.TypeObject
}

// isToolResult keeps tool answers even when empty: dropping one would leave
// its tool call unanswered, which upstreams reject.
func isToolResult(m *fastjson.Value) bool {
	role := string(m.GetStringBytes("role"))
	return role == "tool" || role == "function"
}

// textOf returns a string or null content as text; the bytes are the
// value's own, valid while the request lives.
func textOf(v *fastjson.Value) ([]byte, bool) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return nil, true
	}
	if v.Type() == fastjson.TypeString {
		b, _ := v.StringBytes()
		return b, true
	}
	return nil, false
}
