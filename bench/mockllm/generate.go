package main

import (
	"github.com/gptapi/gptapi/internal/jsonw"

	"fmt"
	"strconv"

	"github.com/valyala/fastjson"
)

// vocab is the text every mock speaks after its own name. A choice c starts
// 7*c words further on, so the choices of one answer differ.
var vocab = [...]string{
	"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
	"while", "seven", "tired", "servers", "stream", "tokens", "through",
	"one", "small", "proxy", "that", "never", "blocks", "and", "always",
	"keeps", "every", "request", "in", "its", "log", "so", "nothing",
	"is", "lost", "when", "an", "upstream", "breaks", "or", "goes",
	"silent", "for", "too", "long", "then", "another", "answers", "instead",
}

// parseGenerate reads a chat or completions request.
func (a *answer) parseGenerate(v *fastjson.Value, body []byte) error {
	if a.ep == epChat {
		msgs := v.Get("messages")
		if msgs == nil || msgs.Type() != fastjson.TypeArray || len(msgs.GetArray()) == 0 {
			return fmt.Errorf("messages: must be a non-empty array")
		}
	} else if v.Get("prompt") == nil {
		return fmt.Errorf("prompt: is required")
	}
	if sv := v.Get("stream"); sv != nil {
		switch sv.Type() {
		case fastjson.TypeTrue:
			a.stream = true
		case fastjson.TypeFalse, fastjson.TypeNull:
		default:
			return fmt.Errorf("stream: must be a boolean, got %s", sv.Type())
		}
	}
	if nv := v.Get("n"); nv != nil && nv.Type() != fastjson.TypeNull {
		n, err := nv.Int()
		if err != nil || n < 1 {
			return fmt.Errorf("n: must be a positive integer, got %s", nv)
		}
		a.n = min(n, maxChoices)
	}
	a.includeUsage = v.GetBool("stream_options", "include_usage")
	limit := v.GetInt("max_completion_tokens")
	if limit <= 0 {
		limit = v.GetInt("max_tokens")
	}

	a.finish = "stop"
	switch {
	case a.k.echo:
		a.echo = append(a.echo[:0], body...)
		a.rounds = max(a.k.chunks, 1)
		a.total = len(body)/4 + 1
	case a.k.toolCalls && a.ep == epChat:
		name := v.GetStringBytes("tools", "0", "function", "name")
		if len(name) == 0 {
			name = []byte("get_weather")
		}
		a.tool = append(a.tool[:0], name...)
		a.rounds = max(a.k.chunks, 1)
		a.total = a.rounds
		a.finish = "tool_calls"
	default:
		a.k.toolCalls = false
		a.total = a.k.chunks * a.k.words
		if limit > 0 && limit < a.total {
			a.total = limit
			a.finish = "length"
		}
		a.rounds = (a.total + a.k.words - 1) / a.k.words
	}
	if !a.stream {
		a.buf = a.appendBody(a.buf[:0])
	}
	return nil
}

// appendWords appends words [from, to) of choice c; word 0 is the mock's name.
func (a *answer) appendWords(dst []byte, c, from, to int) []byte {
	for p := from; p < to; p++ {
		if p == 0 {
			dst = append(dst, a.m.name...)
			continue
		}
		dst = append(dst, ' ')
		dst = append(dst, vocab[(p-1+7*c)%len(vocab)]...)
	}
	return dst
}

// runeStart moves i back to the start of the UTF-8 sequence it falls in, so
// that echoed pieces never split a character.
func runeStart(b []byte, i int) int {
	for i > 0 && i < len(b) && b[i]&0xC0 == 0x80 {
		i--
	}
	return i
}

// appendPiece appends the escaped text of content round r of choice c.
func (a *answer) appendPiece(dst []byte, r, c int) []byte {
	if a.k.echo {
		l := len(a.echo)
		from := runeStart(a.echo, l*r/a.rounds)
		to := runeStart(a.echo, l*(r+1)/a.rounds)
		return jsonw.AppendEscaped(dst, a.echo[from:to])
	}
	w := a.k.words
	return a.appendWords(dst, c, r*w, min((r+1)*w, a.total))
}

// appendArgsPiece appends the escaped tool-call arguments sent in round r:
// round 0 names the function with empty arguments, the others split the
// arguments evenly; a one-round answer sends them whole.
func (a *answer) appendArgsPiece(dst []byte, r int) []byte {
	args := a.m.toolArgs
	if a.rounds == 1 {
		return jsonw.AppendEscaped(dst, args)
	}
	if r == 0 {
		return dst
	}
	l, parts := len(args), a.rounds-1
	return jsonw.AppendEscaped(dst, args[l*(r-1)/parts:l*r/parts])
}

func (a *answer) appendID(dst []byte) []byte {
	if a.ep == epChat {
		dst = append(dst, "chatcmpl-"...)
	} else {
		dst = append(dst, "cmpl-"...)
	}
	dst = append(dst, a.m.port...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, a.seq, 10)
}

func (a *answer) appendCallID(dst []byte, c int) []byte {
	dst = append(dst, "call_"...)
	dst = append(dst, a.m.port...)
	dst = append(dst, '_')
	dst = strconv.AppendUint(dst, a.seq, 10)
	dst = append(dst, '_')
	return appendInt(dst, c)
}

// appendHead appends the fields every chunk and answer start with, up to and
// including `"choices":[`.
func (a *answer) appendHead(dst []byte, object string) []byte {
	dst = append(dst, `{"id":"`...)
	dst = a.appendID(dst)
	dst = append(dst, `","object":"`...)
	dst = append(dst, object...)
	dst = append(dst, `","created":`...)
	dst = strconv.AppendInt(dst, a.created, 10)
	dst = append(dst, `,"model":`...)
	dst = jsonw.AppendString(dst, a.model)
	if a.ep == epChat {
		dst = append(dst, `,"system_fingerprint":"`...)
		dst = append(dst, a.m.name...)
		dst = append(dst, '"')
	}
	return append(dst, `,"choices":[`...)
}

func (a *answer) chunkObject() string {
	if a.ep == epChat {
		return "chat.completion.chunk"
	}
	return "text_completion"
}

// appendEventTail closes a chunk; like OpenAI, a stream that asked for usage
// carries "usage":null in every chunk but the usage one.
func (a *answer) appendEventTail(dst []byte) []byte {
	dst = append(dst, ']')
	if a.includeUsage && a.m.o.usage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

func (a *answer) appendContentEvent(dst []byte, r, c int) []byte {
	dst = append(dst, "data: "...)
	dst = a.appendHead(dst, a.chunkObject())
	switch {
	case a.ep != epChat:
		dst = append(dst, `{"text":"`...)
		dst = a.appendPiece(dst, r, c)
		dst = append(dst, `","index":`...)
		dst = appendInt(dst, c)
		dst = append(dst, `,"logprobs":null,"finish_reason":null}`...)
	case a.k.toolCalls:
		dst = append(dst, `{"index":`...)
		dst = appendInt(dst, c)
		if r == 0 {
			dst = append(dst, `,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"`...)
			dst = a.appendCallID(dst, c)
			dst = append(dst, `","type":"function","function":{"name":`...)
			dst = jsonw.AppendString(dst, a.tool)
			dst = append(dst, `,"arguments":"`...)
		} else {
			dst = append(dst, `,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"`...)
		}
		dst = a.appendArgsPiece(dst, r)
		dst = append(dst, `"}}]},"logprobs":null,"finish_reason":null}`...)
	default:
		dst = append(dst, `{"index":`...)
		dst = appendInt(dst, c)
		if r == 0 {
			dst = append(dst, `,"delta":{"role":"assistant","content":"`...)
		} else {
			dst = append(dst, `,"delta":{"content":"`...)
		}
		dst = a.appendPiece(dst, r, c)
		dst = append(dst, `"},"logprobs":null,"finish_reason":null}`...)
	}
	return a.appendEventTail(dst)
}

func (a *answer) appendFinishEvent(dst []byte, c int) []byte {
	dst = append(dst, "data: "...)
	dst = a.appendHead(dst, a.chunkObject())
	if a.ep == epChat {
		dst = append(dst, `{"index":`...)
		dst = appendInt(dst, c)
		dst = append(dst, `,"delta":{},"logprobs":null,"finish_reason":"`...)
	} else {
		dst = append(dst, `{"text":"","index":`...)
		dst = appendInt(dst, c)
		dst = append(dst, `,"logprobs":null,"finish_reason":"`...)
	}
	dst = append(dst, a.finish...)
	dst = append(dst, `"}`...)
	return a.appendEventTail(dst)
}

// appendUsageEvent appends the usage-only chunk OpenAI sends last when the
// request set stream_options.include_usage.
func (a *answer) appendUsageEvent(dst []byte) []byte {
	dst = append(dst, "data: "...)
	dst = a.appendHead(dst, a.chunkObject())
	dst = append(dst, `],"usage":`...)
	dst = appendUsage(dst, a.prompt, a.total*a.n)
	return append(dst, "}\n\n"...)
}

// appendBody appends the whole answer of a request that is not a stream.
// Its text equals what the stream of the same request would carry.
func (a *answer) appendBody(dst []byte) []byte {
	if a.ep == epChat {
		dst = a.appendHead(dst, "chat.completion")
	} else {
		dst = a.appendHead(dst, "text_completion")
	}
	for c := 0; c < a.n; c++ {
		if c > 0 {
			dst = append(dst, ',')
		}
		switch {
		case a.ep != epChat:
			dst = append(dst, `{"text":"`...)
			for r := 0; r < a.rounds; r++ {
				dst = a.appendPiece(dst, r, c)
			}
			dst = append(dst, `","index":`...)
			dst = appendInt(dst, c)
			dst = append(dst, `,"logprobs":null,"finish_reason":"`...)
		case a.k.toolCalls:
			dst = append(dst, `{"index":`...)
			dst = appendInt(dst, c)
			dst = append(dst, `,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"`...)
			dst = a.appendCallID(dst, c)
			dst = append(dst, `","type":"function","function":{"name":`...)
			dst = jsonw.AppendString(dst, a.tool)
			dst = append(dst, `,"arguments":`...)
			dst = jsonw.AppendString(dst, a.m.toolArgs)
			dst = append(dst, `}}]},"logprobs":null,"finish_reason":"`...)
		default:
			dst = append(dst, `{"index":`...)
			dst = appendInt(dst, c)
			dst = append(dst, `,"message":{"role":"assistant","content":"`...)
			for r := 0; r < a.rounds; r++ {
				dst = a.appendPiece(dst, r, c)
			}
			dst = append(dst, `"},"logprobs":null,"finish_reason":"`...)
		}
		dst = append(dst, a.finish...)
		dst = append(dst, `"}`...)
	}
	dst = append(dst, ']')
	if a.m.o.usage {
		dst = append(dst, `,"usage":`...)
		dst = appendUsage(dst, a.prompt, a.total*a.n)
	}
	return append(dst, '}')
}
