package main

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

type endpoint uint8

const (
	epChat endpoint = iota
	epCompletions
	epEmbeddings
	epRerank
)

// maxChoices bounds the request's n.
const maxChoices = 4

// errBreak ends a stream on purpose: fasthttp closes the connection without
// the terminating chunk, as an upstream that dies mid-answer would.
var errBreak = errors.New("mockllm: connection broken on purpose")

// stream phases, in order.
const (
	phContent = iota
	phFinish
	phUsage
	phDone
	phEnd
)

// answer is one request's answer. It is pooled: it holds copies of what the
// request said (the request body is gone once the handler returns) and, for
// streams, is the io.Reader fasthttp drains; fasthttp writes and flushes one
// HTTP chunk per Read, so each Read hands out one SSE event, after the pause
// the knobs ask for. fasthttp calls Close when the answer is written, which
// puts it back in the pool.
type answer struct {
	m  *mock
	ep endpoint
	k  knobs

	stream       bool
	includeUsage bool // the request asked for a usage chunk
	n            int  // choices
	seq          uint64
	created      int64
	model        []byte
	tool         []byte // name of the tool to call
	echo         []byte // request body, when echoing
	prompt       int    // prompt tokens reported in usage
	total        int    // words per choice
	rounds       int    // content events per choice
	finish       string // finish_reason

	buf []byte // the whole body, or the pending SSE event
	off int    // bytes of buf already read
	cut int    // non-stream break: bytes of buf to send before breaking; <0 none

	phase, round, choice, events int

	timer   *time.Timer
	scores  []scored
	raw     []byte // scratch
	pending bool   // handed to fasthttp as a body stream; Close releases it
}

var answerPool sync.Pool

func acquireAnswer(m *mock, ep endpoint) *answer {
	a, _ := answerPool.Get().(*answer)
	if a == nil {
		a = &answer{}
	}
	a.m = m
	a.ep = ep
	a.k = m.defaults()
	a.seq = m.seq.Add(1)
	a.created = time.Now().Unix()
	a.n = 1
	a.cut = -1
	return a
}

func releaseAnswer(a *answer) {
	timer, buf, model, tool, echo, scores, raw := a.timer, a.buf, a.model, a.tool, a.echo, a.scores, a.raw
	*a = answer{
		timer:  timer,
		raw:    raw,
		buf:    buf[:0],
		model:  model[:0],
		tool:   tool[:0],
		echo:   echo[:0],
		scores: scores[:0],
	}
	answerPool.Put(a)
}

// parse reads the request body, applies its "mock" knobs and, for answers
// that are not streams, builds the body. What it keeps is copied: the parser
// and the request body are reused once the handler returns.
func (a *answer) parse(p *fastjson.Parser, body []byte) error {
	v, err := p.ParseBytes(body)
	if err != nil {
		return fmt.Errorf("request body is not valid JSON: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return fmt.Errorf("request body must be a JSON object, got %s", v.Type())
	}
	if err := a.k.fromBody(v.Get("mock")); err != nil {
		return err
	}
	a.k.words = max(a.k.words, 1)
	if mv := v.Get("model"); mv != nil {
		s, err := mv.StringBytes()
		if err != nil {
			return fmt.Errorf("model: must be a string, got %s", mv.Type())
		}
		a.model = append(a.model[:0], s...)
	}
	if len(a.model) == 0 {
		a.model = append(a.model[:0], "mock-model"...)
	}
	a.prompt = len(body)/4 + 1
	switch a.ep {
	case epChat, epCompletions:
		err = a.parseGenerate(v, body)
	case epEmbeddings:
		err = a.parseEmbeddings(v)
	case epRerank:
		err = a.parseRerank(v)
	}
	if err != nil {
		return err
	}
	if !a.stream && a.k.breakAfter >= 0 {
		a.cut = len(a.buf) / 2
	}
	return nil
}

// send hands the answer to fasthttp. Unless it is a stream or a broken
// answer, a is released before send returns.
func (a *answer) send(ctx *fasthttp.RequestCtx) {
	switch {
	case a.stream:
		ctx.Response.Header.SetContentTypeBytes(ctSSE)
		ctx.Response.Header.SetCanonical(hdrCacheControl, noCache)
		// A stream broken before its first event still shows its headers,
		// so the caller sees a stream that began and died.
		ctx.Response.ImmediateHeaderFlush = a.k.breakAfter == 0
		a.pending = true
		ctx.SetBodyStream(a, -1)
	case a.cut >= 0:
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.Response.ImmediateHeaderFlush = true
		a.pending = true
		ctx.SetBodyStream(a, len(a.buf))
	default:
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.SetBody(a.buf)
		releaseAnswer(a)
	}
}

// Read hands out the answer: for streams one SSE event per call, for a
// broken answer the first a.cut bytes and then errBreak.
func (a *answer) Read(p []byte) (int, error) {
	if a.cut >= 0 {
		if a.off >= a.cut {
			return 0, errBreak
		}
		n := copy(p, a.buf[a.off:a.cut])
		a.off += n
		return n, nil
	}
	for a.off >= len(a.buf) {
		if err := a.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, a.buf[a.off:])
	a.off += n
	return n, nil
}

// Close puts a back in the pool once fasthttp is done with it.
func (a *answer) Close() error {
	if a.pending {
		releaseAnswer(a)
	}
	return nil
}

// next builds the next SSE event into a.buf.
func (a *answer) next() error {
	if a.k.breakAfter >= 0 && (a.events >= a.k.breakAfter || a.phase == phDone) {
		return errBreak
	}
	a.buf = a.buf[:0]
	a.off = 0
	for {
		switch a.phase {
		case phContent:
			if a.round >= a.rounds {
				a.phase = phFinish
				continue
			}
			if a.choice == 0 && a.round > 0 {
				a.sleep(a.k.chunkDelay)
			}
			a.buf = a.appendContentEvent(a.buf, a.round, a.choice)
			if a.choice++; a.choice == a.n {
				a.choice = 0
				a.round++
			}
		case phFinish:
			a.buf = a.appendFinishEvent(a.buf, a.choice)
			if a.choice++; a.choice == a.n {
				a.choice = 0
				a.phase = phUsage
			}
		case phUsage:
			a.phase = phDone
			if !a.includeUsage || !a.m.o.usage {
				continue
			}
			a.buf = a.appendUsageEvent(a.buf)
		case phDone:
			a.buf = append(a.buf, "data: [DONE]\n\n"...)
			a.phase = phEnd
		default:
			return io.EOF
		}
		a.events++
		return nil
	}
}

// sleep pauses for d, or less if the mock shuts down.
func (a *answer) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	if a.timer == nil {
		a.timer = time.NewTimer(d)
	} else {
		a.timer.Reset(d)
	}
	select {
	case <-a.timer.C:
	case <-a.m.stop:
		a.timer.Stop()
	}
}

// Interface guards: fasthttp closes a body stream that is an io.Closer.
var _ io.ReadCloser = (*answer)(nil)
