package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// A request waits on its upstream before its answer starts: a plain one
// while the whole answer is generated, a stream until its first event
// (a long prompt's prefill on a busy server can take seconds). fasthttp
// does not read the caller's connection meanwhile, and nothing is written
// to it: a caller that leaves, or shutdown running out of time, would go
// unnoticed until the upstream answered (SPEC §1, §4.4). One goroutine per
// server looks, every watchEvery, at the callers of the requests waiting
// on an upstream, with one non-blocking peek each (callerConn.gone), and
// cancels the request whose caller left by closing its upstream
// connection; shutdown's cut cancels them all at once. Once a stream
// flows, a caller that leaves fails the next write instead. A request pays for
// this with two uncontended lock pairs, no goroutine, timer or allocation;
// the watcher's cost grows with the requests waiting (one recv syscall
// each per pass), not with the request rate.
const watchEvery = 250 * time.Millisecond

// waitingSet is the server's requests waiting on an upstream.
type waitingSet struct {
	mu sync.Mutex
	xs []*exchange

	checking sync.Mutex // held by check, which owns scr
	scr      []watched  // check's snapshot of xs
}

// watched is one exchange as the watcher saw it.
type watched struct {
	x      *exchange
	seq    uint64
	caller *callerConn
}

func (ws *waitingSet) add(x *exchange) {
	ws.mu.Lock()
	x.waitIdx = len(ws.xs)
	ws.xs = append(ws.xs, x)
	ws.mu.Unlock()
}

func (ws *waitingSet) remove(x *exchange) {
	ws.mu.Lock()
	last := len(ws.xs) - 1
	moved := ws.xs[last]
	ws.xs[x.waitIdx] = moved
	moved.waitIdx = x.waitIdx
	ws.xs[last] = nil
	ws.xs = ws.xs[:last]
	ws.mu.Unlock()
}

// watch checks the callers every watchEvery until stop is closed.
func (ws *waitingSet) watch(stop <-chan struct{}) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ws.check(nil)
		}
	}
}

// check cancels, with reason, every waiting request, or when reason is
// nil those whose caller has left. It returns how many it cancelled.
func (ws *waitingSet) check(reason error) int {
	ws.checking.Lock()
	defer ws.checking.Unlock()
	ws.mu.Lock()
	ws.scr = ws.scr[:0]
	for _, x := range ws.xs {
		x.mu.Lock()
		ws.scr = append(ws.scr, watched{x: x, seq: x.watchSeq, caller: x.caller})
		x.mu.Unlock()
	}
	scr := ws.scr
	ws.mu.Unlock()
	n := 0
	for _, w := range scr {
		why := reason
		if why == nil {
			if w.caller == nil || !w.caller.gone() {
				continue
			}
			why = errCallerGone
		}
		if w.x.cancelWait(w.seq, why) {
			n++
		}
	}
	// The snapshot must not keep exchanges alive once their requests end:
	// a pooled exchange holds its last request's buffers.
	clear(scr)
	return n
}

// beginWait registers x, a request about to ask upstreams, with the
// watcher.
func (x *exchange) beginWait(ctx *fasthttp.RequestCtx) {
	c, _ := ctx.Conn().(*callerConn)
	x.mu.Lock()
	x.watchSeq++
	x.caller, x.cancel, x.held = c, nil, nil
	x.mu.Unlock()
	x.s.waiting.add(x)
}

// endWait takes x out of the watcher's set.
func (x *exchange) endWait() {
	x.s.waiting.remove(x)
	x.mu.Lock()
	x.watchSeq++
	x.caller, x.held = nil, nil
	x.mu.Unlock()
}

// hold marks c as the connection x now waits on. It returns the reason x
// was cancelled meanwhile, if it was: then c is not waited on.
func (x *exchange) hold(c *heldConn) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cancel == nil {
		x.held = c
	}
	return x.cancel
}

// unhold ends the wait on the held connection; it returns the reason x
// was cancelled, if it was.
func (x *exchange) unhold() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.held = nil
	return x.cancel
}

// cancelledWith is the reason x was cancelled, nil if it was not.
func (x *exchange) cancelledWith() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.cancel
}

// cancelWait cancels x with why if it is still the wait seq and not
// cancelled yet: the connection it waits on is closed, so its read fails
// at once. It reports whether it did.
func (x *exchange) cancelWait(seq uint64, why error) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.watchSeq != seq || x.cancel != nil {
		return false
	}
	x.cancel = why
	if x.held != nil {
		x.held.interrupt()
	}
	return true
}

// count is the number of requests waiting.
func (ws *waitingSet) count() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.xs)
}
