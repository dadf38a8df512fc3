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
			content = cleanContent(a, content, p, assistant)
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
				prev.Set("content", mergeContent(a, prev.Get("content"), m.Get("content")))
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
func cleanContent(a *fastjson.Arena, c *fastjson.Value, p *configs.Preprocess, assistant bool) *fastjson.Value {
	switch c.Type() {
	case fastjson.TypeString:
		b, _ := c.StringBytes()
		if s, changed := cleanText(b2s(b), p, assistant); changed {
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
					s, changed := cleanText(b2s(b), p, assistant)
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
func cleanText(s string, p *configs.Preprocess, assistant bool) (string, bool) {
	out := s
	if p.Strip {
		out = strings.TrimSpace(out)
	}
	if p.StripThink && assistant {
		out = stripThink(out)
		if p.Strip {
			out = strings.TrimSpace(out)
		}
	}
	return out, len(out) != len(s)
}

const (
	thinkOpen     = "<think>"
	thinkClose    = "</think>"
	toolCallOpen  = "<tool_call>"
	toolCallClose = "</tool_call>"
)

// stripThink removes whole <think>…</think> blocks, a leading unclosed
// "…</think>" prefix (reasoning models often omit the opening tag), an
// unclosed trailing "<think>…" (a cut generation), and the literal tool-call
// tags, keeping what is between them.
func stripThink(s string) string {
	if !strings.Contains(s, "<think>") && !strings.Contains(s, "</think>") && !strings.Contains(s, "tool_call>") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	// A closing tag before any opening one ends a leading unclosed block.
	if c := strings.Index(s, thinkClose); c >= 0 {
		if o := strings.Index(s, thinkOpen); o < 0 || o > c {
			s = s[c+len(thinkClose):]
		}
	}
	for {
		o := strings.Index(s, thinkOpen)
		if o < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:o])
		rest := s[o+len(thinkOpen):]
		c := strings.Index(rest, thinkClose)
		if c < 0 {
			break // unclosed: the rest is reasoning
		}
		s = rest[c+len(thinkClose):]
	}
	out := b.String()
	out = strings.ReplaceAll(out, toolCallOpen, "")
	out = strings.ReplaceAll(out, toolCallClose, "")
	return out
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
func mergeContent(a *fastjson.Arena, x, y *fastjson.Value) *fastjson.Value {
	xs, xok := textOf(x)
	ys, yok := textOf(y)
	if xok && yok {
		switch {
		case xs == "":
			return a.NewString(ys)
		case ys == "":
			return a.NewString(xs)
		}
		return a.NewString(xs + "\n\n" + ys)
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
