package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// knobs say how one answer misbehaves. Flags give the defaults; X-Mock-*
// headers override them; the body's "mock" object overrides both.
//
//	flag          header               body "mock" field  meaning
//	-chunks       X-Mock-Chunks        chunks             content chunks in a stream (words per chunk: -words)
//	-words        X-Mock-Words         words              content words per chunk
//	-chunk-delay  X-Mock-Chunk-Delay   chunk_delay        pause between content chunks
//	-ttfb         X-Mock-TTFB          ttfb               pause before the status line and headers
//	-stall        X-Mock-Stall         stall              hang this long before doing anything (every path but /health)
//	-fail-status  X-Mock-Status        status             answer this status with an OpenAI error body
//	-break-after  X-Mock-Break-After   break_after        close the connection after K SSE events, never sending [DONE]
//	-tool-calls   X-Mock-Tool-Calls    tool_calls         answer with a tool call instead of text (chat only)
//	-             X-Mock-Echo          echo               answer text is the request body as received
//
// Durations are Go durations ("150ms"); in the body a number is milliseconds.
// Booleans in headers are "1"/"true"/"0"/"false". The -fail-status flag
// applies to a -fail-ratio share of requests; a header or body status applies
// to that request always.
type knobs struct {
	chunks     int
	words      int
	chunkDelay time.Duration
	ttfb       time.Duration
	stall      time.Duration
	status     int  // 0: answer normally
	breakAfter int  // <0: never break
	toolCalls  bool // chat only
	echo       bool
}

// maxChunks bounds the knobs so that a typo cannot make a mock stream for hours.
const (
	maxChunks = 1 << 20
	maxWords  = 1 << 12
)

// errKnob marks a knob value that cannot be used; the caller gets a 400.
var errKnob = errors.New("mockllm: bad knob")

// fromHeaders overrides k with the X-Mock-* request headers.
func (k *knobs) fromHeaders(h *fasthttp.RequestHeader) error {
	var err error
	if v := h.Peek("X-Mock-Chunks"); len(v) > 0 {
		if k.chunks, err = knobInt("X-Mock-Chunks", v, maxChunks); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Words"); len(v) > 0 {
		if k.words, err = knobInt("X-Mock-Words", v, maxWords); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Chunk-Delay"); len(v) > 0 {
		if k.chunkDelay, err = knobDuration("X-Mock-Chunk-Delay", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-TTFB"); len(v) > 0 {
		if k.ttfb, err = knobDuration("X-Mock-TTFB", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Stall"); len(v) > 0 {
		if k.stall, err = knobDuration("X-Mock-Stall", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Status"); len(v) > 0 {
		if k.status, err = knobStatus("X-Mock-Status", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Break-After"); len(v) > 0 {
		if k.breakAfter, err = knobBreak("X-Mock-Break-After", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Tool-Calls"); len(v) > 0 {
		if k.toolCalls, err = knobBool("X-Mock-Tool-Calls", v); err != nil {
			return err
		}
	}
	if v := h.Peek("X-Mock-Echo"); len(v) > 0 {
		if k.echo, err = knobBool("X-Mock-Echo", v); err != nil {
			return err
		}
	}
	return nil
}

// fromBody overrides k with the fields of the body's "mock" object.
func (k *knobs) fromBody(mock *fastjson.Value) error {
	if mock == nil {
		return nil
	}
	if mock.Type() != fastjson.TypeObject {
		return fmt.Errorf("%w: mock: must be an object, got %s", errKnob, mock.Type())
	}
	var err error
	if v := mock.Get("chunks"); v != nil {
		if k.chunks, err = bodyInt("mock.chunks", v, 0, maxChunks); err != nil {
			return err
		}
	}
	if v := mock.Get("words"); v != nil {
		if k.words, err = bodyInt("mock.words", v, 1, maxWords); err != nil {
			return err
		}
	}
	if v := mock.Get("chunk_delay"); v != nil {
		if k.chunkDelay, err = bodyDuration("mock.chunk_delay", v); err != nil {
			return err
		}
	}
	if v := mock.Get("ttfb"); v != nil {
		if k.ttfb, err = bodyDuration("mock.ttfb", v); err != nil {
			return err
		}
	}
	if v := mock.Get("stall"); v != nil {
		if k.stall, err = bodyDuration("mock.stall", v); err != nil {
			return err
		}
	}
	if v := mock.Get("status"); v != nil {
		if k.status, err = bodyInt("mock.status", v, 0, 599); err != nil {
			return err
		}
		if k.status != 0 && k.status < 200 {
			return fmt.Errorf("%w: mock.status: must be 0 or 200..599, got %d", errKnob, k.status)
		}
	}
	if v := mock.Get("break_after"); v != nil {
		if k.breakAfter, err = bodyInt("mock.break_after", v, -1, maxChunks); err != nil {
			return err
		}
	}
	if v := mock.Get("tool_calls"); v != nil {
		if k.toolCalls, err = bodyBool("mock.tool_calls", v); err != nil {
			return err
		}
	}
	if v := mock.Get("echo"); v != nil {
		if k.echo, err = bodyBool("mock.echo", v); err != nil {
			return err
		}
	}
	return nil
}

// b2s views b as a string for parsing only; the string must not outlive b.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func knobInt(name string, v []byte, hi int) (int, error) {
	n, err := strconv.Atoi(b2s(v))
	if err != nil || n < 0 || n > hi {
		return 0, fmt.Errorf("%w: %s: want an integer in 0..%d, got %q", errKnob, name, hi, v)
	}
	return n, nil
}

// knobBreak reads a break-after count; -1 turns breaking off.
func knobBreak(name string, v []byte) (int, error) {
	n, err := strconv.Atoi(b2s(v))
	if err != nil || n < -1 || n > maxChunks {
		return 0, fmt.Errorf("%w: %s: want an integer in -1..%d, got %q", errKnob, name, maxChunks, v)
	}
	return n, nil
}

func knobStatus(name string, v []byte) (int, error) {
	n, err := strconv.Atoi(b2s(v))
	if err != nil || (n != 0 && (n < 200 || n > 599)) {
		return 0, fmt.Errorf("%w: %s: want 0 or a status in 200..599, got %q", errKnob, name, v)
	}
	return n, nil
}

func knobDuration(name string, v []byte) (time.Duration, error) {
	d, err := time.ParseDuration(b2s(v))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: %s: want a non-negative duration such as 150ms, got %q", errKnob, name, v)
	}
	return d, nil
}

func knobBool(name string, v []byte) (bool, error) {
	switch b2s(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s: want 1 or 0, got %q", errKnob, name, v)
}

func bodyInt(name string, v *fastjson.Value, lo, hi int) (int, error) {
	n, err := v.Int()
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s: want an integer in %d..%d, got %s", errKnob, name, lo, hi, v)
	}
	return n, nil
}

func bodyDuration(name string, v *fastjson.Value) (time.Duration, error) {
	switch v.Type() {
	case fastjson.TypeString:
		return knobDuration(name, v.GetStringBytes())
	case fastjson.TypeNumber:
		ms := v.GetFloat64()
		if ms >= 0 && ms <= float64(24*time.Hour/time.Millisecond) {
			return time.Duration(ms * float64(time.Millisecond)), nil
		}
	}
	return 0, fmt.Errorf("%w: %s: want a duration string or milliseconds, got %s", errKnob, name, v)
}

func bodyBool(name string, v *fastjson.Value) (bool, error) {
	switch v.Type() {
	case fastjson.TypeTrue:
		return true, nil
	case fastjson.TypeFalse, fastjson.TypeNull:
		return false, nil
	case fastjson.TypeNumber:
		return v.GetInt() != 0, nil
	}
	return false, fmt.Errorf("%w: %s: want true or false, got %s", errKnob, name, v)
}
