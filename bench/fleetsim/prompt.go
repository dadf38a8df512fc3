package main

import (
	"errors"
	"fmt"

	"github.com/valyala/fastjson"
)

// The chat template the simulated server renders messages with before it
// counts tokens and cuts blocks (Llama 3's).
const (
	tmplBegin     = "<|begin_of_text|>"
	tmplHeadOpen  = "<|start_header_id|>"
	tmplHeadClose = "<|end_header_id|>\n\n"
	tmplEnd       = "<|eot_id|>"
	tmplAssistant = tmplHeadOpen + "assistant" + tmplHeadClose
)

// errPrompt is a request the server cannot render; its text is the 400's.
type errPrompt struct{ msg string }

func (e *errPrompt) Error() string { return e.msg }

func badPrompt(format string, args ...any) error { return &errPrompt{fmt.Sprintf(format, args...)} }

// appendChat renders chat messages with the template.
func appendChat(dst []byte, msgs *fastjson.Value) ([]byte, error) {
	arr, err := msgs.Array()
	if err != nil {
		return dst, badPrompt("'messages' must be an array")
	}
	if len(arr) == 0 {
		return dst, badPrompt("'messages' must not be empty")
	}
	dst = append(dst, tmplBegin...)
	for i, m := range arr {
		if m.Type() != fastjson.TypeObject {
			return dst, badPrompt("messages[%d] must be an object", i)
		}
		role := m.GetStringBytes("role")
		if len(role) == 0 {
			return dst, badPrompt("messages[%d].role must be a non-empty string", i)
		}
		dst = append(dst, tmplHeadOpen...)
		dst = append(dst, role...)
		dst = append(dst, tmplHeadClose...)
		c := m.Get("content")
		switch {
		case c == nil || c.Type() == fastjson.TypeNull:
		case c.Type() == fastjson.TypeString:
			dst = append(dst, c.GetStringBytes()...)
		case c.Type() == fastjson.TypeArray:
			for _, p := range c.GetArray() {
				if t := p.GetStringBytes("type"); string(t) == "text" {
					dst = append(dst, p.GetStringBytes("text")...)
				} else {
					dst = append(dst, "<|media|>"...)
				}
			}
		default:
			return dst, badPrompt("messages[%d].content must be a string or an array of parts", i)
		}
		dst = append(dst, tmplEnd...)
	}
	return append(dst, tmplAssistant...), nil
}

// appendCompletion renders a completions prompt: a string, or an array of
// strings joined.
func appendCompletion(dst []byte, p *fastjson.Value) ([]byte, error) {
	switch p.Type() {
	case fastjson.TypeString:
		return append(dst, p.GetStringBytes()...), nil
	case fastjson.TypeArray:
		for i, s := range p.GetArray() {
			b, err := s.StringBytes()
			if err != nil {
				return dst, badPrompt("prompt[%d] must be a string", i)
			}
			dst = append(dst, b...)
		}
		return dst, nil
	}
	return dst, errors.New("'prompt' must be a string or an array of strings")
}

// promptTokens is how many tokens text counts as, about 4 bytes each.
func promptTokens(text []byte) int {
	return max(1, (len(text)+bytesPerToken-1)/bytesPerToken)
}

// FNV-1a, 64 bits.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// appendChain appends the chain hash of every full block of text: the hash
// goes on from the previous block's, so a block's hash covers every byte
// before its end and equal hashes mean equal prompts up to there.
func appendChain(dst []uint64, text []byte) []uint64 {
	var h uint64 = fnvOffset
	for len(text) >= blockBytes {
		h = fnvAdd(h, text[:blockBytes])
		dst = append(dst, h)
		text = text[blockBytes:]
	}
	return dst
}

// words are the answer's tokens, 4 bytes each.
var syllables = [...]string{"ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "da", "fu", "go", "hi", "ju", "pe", "so"}

// appendWords appends answer tokens from..to of the answer to prompt hash
// text under seed; the same three always give the same words.
func appendWords(dst []byte, seed, text uint64, from, to int) []byte {
	for i := from; i < to; i++ {
		x := splitmix(seed ^ text ^ uint64(i)*0x9e3779b97f4a7c15)
		dst = append(dst, syllables[x&15]...)
		dst = append(dst, syllables[(x>>4)&15][0], ' ')
	}
	return dst
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
