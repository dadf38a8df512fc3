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
	merge := p.MergeUser == "merge" || p.MergeUser == "last"
	if !p.Strip && !p.StripThink && !p.DropEmpty && !merge {
		return true
	}
	msgs := r.obj.Get("messages").GetArray()
	out := a.NewArray()
	n := 0
	var prev *fastjson.Value // last kept message, when it is a user one
	for _, m := range msgs {
		content := m.Get("content")
		if content != nil {
			assistant := string(m.GetStringBytes("role")) == "assistant"
			content = cleanContent(r, a, content, p, assistant)
			m.Set("content", content)
		}
		if p.DropEmpty && isEmptyContent(content) && !hasToolCalls(m) && !isToolResult(m) {
			continue
		}
		isUser := string(m.GetStringBytes("role")) == "user"
		if merge && isUser && prev != nil {
			if p.MergeUser == "last" {
				out.SetArrayItem(n-1, m)
				prev = m
			} else {
				prev.Set("content", mergeContent(r, a, prev.Get("content"), m.Get("content")))
			}
			continue
		}
		out.SetArrayItem(n, m)
		n++
		prev = nil
		if isUser {
			prev = m
		}
	}
	r.obj.Set("messages", out)
	return n > 0
}

// cleanContent strips a message's text: a string content, or the text parts
// of a parts array (non-text parts are kept as they are).
func cleanContent(r *request, a *fastjson.Arena, c *fastjson.Value, p *configs.Preprocess, assistant bool) *fastjson.Value {
	switch c.Type() {
	case fastjson.TypeString:
		b, _ := c.StringBytes()
		if s, changed := cleanText(r, b2s(b), p, assistant); changed {
			return a.NewString(s)
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
						part.Set("text", a.NewString(s))
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

// mergeContent joins two consecutive user contents: two strings with a blank
// line between; otherwise a parts array, a string becoming a text part.
func mergeContent(r *request, a *fastjson.Arena, x, y *fastjson.Value) *fastjson.Value {
	xs, xok := textOf(x)
	ys, yok := textOf(y)
	if xok && yok {
		switch {
		case xs == "":
			return a.NewString(ys)
		case ys == "":
			return a.NewString(xs)
		}
		return a.NewString(r.newText(xs, "\n\n", ys))
	}
	parts := a.NewArray()
	n := 0
	add := func(v *fastjson.Value) {
		if v == nil {
			return
		}
		switch v.Type() {
		case fastjson.TypeArray:
			for _, p := range v.GetArray() {
				parts.SetArrayItem(n, p)
				n++
			}
		case fastjson.TypeString:
			b, _ := v.StringBytes()
			if len(b) == 0 {
				return
			}
			p := a.NewObject()
			p.Set("type", a.NewString("text"))
			p.Set("text", v)
			parts.SetArrayItem(n, p)
			n++
		}
	}
	add(x)
	add(y)
	return parts
}

// textOf returns a string or null content as text.
func textOf(v *fastjson.Value) (string, bool) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return "", true
	}
	if v.Type() == fastjson.TypeString {
		b, _ := v.StringBytes()
		return string(b), true
	}
	return "", false
}
