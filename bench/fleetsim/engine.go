package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// request is one generation in an engine. The fields above the line belong
// to the engine and are touched only under its lock; the answering
// goroutine reads the atomics, and firstAt/doneAt/cached once generated or
// finished says they are set.
type request struct {
	at       time.Duration // arrival, simulated
	chain    []uint64      // chain hashes of the prompt's full blocks
	text     uint64        // hash of the whole prompt, picks the answer words
	prompt   int           // prompt tokens
	maxOut   int           // tokens to generate
	target   int           // tokens to compute before the next token
	computed int           // of target, cached ones included
	admitted bool          // has been running once (cached is set)
	blocks   []int32       // KV blocks held, in token order
	hashed   int           // leading blocks registered in the prefix cache
	sched    int           // tokens scheduled in the current step

	firstAt time.Duration // first token, simulated
	doneAt  time.Duration // last token, simulated
	cached  int           // prompt tokens found in the prefix cache at first admission

	generated atomic.Int32
	finished  atomic.Bool
	canceled  atomic.Bool
	notify    chan struct{} // a token was generated or the request finished
}

func newRequest(chain []uint64, text uint64, prompt, maxOut int) *request {
	return &request{chain: chain, text: text, prompt: prompt, maxOut: maxOut, target: prompt, notify: make(chan struct{}, 1)}
}

func (r *request) signal() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// engineStats is a snapshot of an engine's state and counters.
type engineStats struct {
	Running, Waiting int
	KVUsage          float64
	Queries, Hits    int64 // prefix cache lookups and hits, in tokens
	PromptTokens     int64
	GenTokens        int64
	Preemptions      int64
	QueuedPrefill    int64 // prompt tokens not yet computed, waiting and running
}

// engine is one simulated vLLM engine: a scheduler of continuous batching
// over a KV pool with prefix caching.
type engine struct {
	name  string
	cfg   Config
	clock *simClock
	wake  chan struct{}

	mu        sync.Mutex
	pool      *kvPool
	running   []*request // admission order
	waiting   []*request // arrival order; preempted requests go first
	busy      bool       // a step is in progress
	stepEnd   time.Duration
	watermark int // blocks kept free when admitting next to running requests
	st        engineStats
}

func newEngine(name string, cfg Config, clock *simClock) *engine {
	n := max(cfg.KVTokens/blockTokens, 1)
	return &engine{
		name:      name,
		cfg:       cfg,
		clock:     clock,
		wake:      make(chan struct{}, 1),
		pool:      newKVPool(n),
		watermark: n / 100, // vLLM's 1% watermark
	}
}

// submit queues r, arrived now.
func (e *engine) submit(r *request) {
	e.mu.Lock()
	e.submitAt(e.clock.now(), r)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// submitAt queues r as arrived at simulated time at; at must not be earlier
// than the last time advance was given. Caller holds e.mu.
func (e *engine) submitAt(at time.Duration, r *request) {
	r.at = at
	e.waiting = append(e.waiting, r)
}

// run drives the engine on the clock until ctx is done: it runs every step
// that has ended before now, then sleeps until the next one ends (at least
// gran of wall time, so that a fast clock costs a bounded number of
// wake-ups; late steps are caught up, results do not depend on it), or
// until an arrival wakes an idle engine.
func (e *engine) run(ctx context.Context, gran time.Duration) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		e.mu.Lock()
		e.advance(e.clock.now())
		next := time.Duration(-1)
		switch {
		case e.busy:
			next = e.stepEnd
		case len(e.waiting) > 0:
			next = max(e.stepEnd, e.waiting[0].at)
		}
		e.mu.Unlock()
		if next < 0 {
			select {
			case <-e.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		t.Reset(max(e.clock.wallUntil(next)+time.Microsecond, gran))
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// advance runs the engine up to simulated time now: every step that ends
// before now is finished and the next one started at its end; an idle
// engine starts at the first arrival. A step starting at t takes every
// arrival up to t, and is only started once now is past t, when no more
// arrivals at or before t can come: so what happens depends only on the
// arrival times and the requests, never on when advance is called, and
// arrivals at the same instant are scheduled together. Caller holds e.mu.
func (e *engine) advance(now time.Duration) {
	for {
		if e.busy {
			if e.stepEnd >= now {
				return
			}
			e.finishStep()
		}
		e.dropCanceled()
		t := e.stepEnd
		if len(e.running) == 0 {
			if len(e.waiting) == 0 {
				return
			}
			t = max(t, e.waiting[0].at)
			if t >= now {
				return
			}
		}
		if !e.startStep(t) {
			return
		}
	}
}

// startStep schedules one step starting at t and reports whether it has any
// work: a decode token for every running request that has its prompt, then
// the prefill of running requests, then new ones from the waiting queue in
// arrival order, while the token budget and the KV pool allow.
func (e *engine) startStep(t time.Duration) bool {
	budget := e.cfg.StepTokens
	decodes, prefill := 0, 0
	for i := 0; i < len(e.running) && budget > 0; i++ {
		r := e.running[i]
		if r.computed < r.target {
			continue
		}
		if !e.reserve(r, r.prompt+int(r.generated.Load())+1) {
			break // r itself was preempted: it was the last one
		}
		r.sched = 1
		budget--
		decodes++
	}
	for _, r := range e.running {
		if r.computed < r.target && budget > 0 {
			r.sched = min(r.target-r.computed, budget)
			budget -= r.sched
			prefill += r.sched
		}
	}
	for budget > 0 && len(e.waiting) > 0 && len(e.running) < e.cfg.MaxSeqs {
		r := e.waiting[0]
		if r.at > t || !e.admit(r) {
			break
		}
		e.waiting[0] = nil
		e.waiting = e.waiting[1:]
		e.running = append(e.running, r)
		r.sched = min(r.target-r.computed, budget)
		budget -= r.sched
		prefill += r.sched
	}
	if decodes == 0 && prefill == 0 {
		return false
	}
	e.busy = true
	e.stepEnd = t + e.cfg.Cost.step(prefill, decodes)
	return true
}

// admit gives r the KV blocks for what it has to compute plus one token:
// the cached leading blocks of its prompt and new ones for the rest. It
// refuses when that would leave fewer than the watermark free next to
// running requests.
func (e *engine) admit(r *request) bool {
	hit := min(e.pool.match(r.chain), (r.target-1)/blockTokens) // one token is always computed
	need := blocksFor(r.target+1) - hit
	floor := 0
	if len(e.running) > 0 {
		floor = e.watermark
	}
	if e.pool.freeAfterPin(r.chain, hit)-need < floor {
		return false
	}
	r.blocks = e.pool.pin(r.blocks[:0], r.chain, hit)
	for range need {
		r.blocks, _ = e.pool.alloc(r.blocks)
	}
	r.computed, r.hashed = hit*blockTokens, hit
	if !r.admitted {
		r.admitted = true
		r.cached = hit * blockTokens
		e.st.Queries += int64(r.prompt)
		e.st.Hits += int64(r.cached)
		e.st.PromptTokens += int64(r.prompt)
	}
	return true
}

// reserve makes r hold blocks for tokens tokens, preempting the newest
// running requests when the pool is full. It reports false when r itself
// had to go.
func (e *engine) reserve(r *request, tokens int) bool {
	for len(r.blocks)*blockTokens < tokens {
		var ok bool
		if r.blocks, ok = e.pool.alloc(r.blocks); ok {
			continue
		}
		victim := e.running[len(e.running)-1]
		e.preempt(victim)
		if victim == r {
			return false
		}
	}
	return true
}

// preempt sends the last running request back to the head of the queue
// with its blocks freed (their cached prompt blocks stay findable until
// evicted); it will recompute its prompt and what it generated, as vLLM's
// recompute preemption does.
func (e *engine) preempt(r *request) {
	e.running[len(e.running)-1] = nil
	e.running = e.running[:len(e.running)-1]
	e.pool.release(r.blocks)
	r.blocks = r.blocks[:0]
	r.computed, r.hashed, r.sched = 0, 0, 0
	r.target = r.prompt + int(r.generated.Load())
	e.waiting = append(e.waiting, nil)
	copy(e.waiting[1:], e.waiting)
	e.waiting[0] = r
	e.st.Preemptions++
}

// finishStep applies the step that ends at e.stepEnd: prefill progress
// (completed prompt blocks enter the prefix cache), one token for every
// request that decoded or completed its prefill, and the end of requests
// that have all their tokens.
func (e *engine) finishStep() {
	t := e.stepEnd
	e.busy = false
	keep := e.running[:0]
	for _, r := range e.running {
		if r.sched > 0 {
			if r.computed < r.target {
				r.computed += r.sched
				full := min(min(r.computed, r.prompt)/blockTokens, len(r.chain))
				for ; r.hashed < full; r.hashed++ {
					e.pool.remember(r.blocks[r.hashed], r.chain[r.hashed])
				}
				if r.computed == r.target {
					e.emit(r, t)
				}
			} else {
				e.emit(r, t)
			}
			r.sched = 0
		}
		if int(r.generated.Load()) >= r.maxOut {
			e.finish(r, t)
			continue
		}
		keep = append(keep, r)
	}
	clear(e.running[len(keep):])
	e.running = keep
}

func (e *engine) emit(r *request, t time.Duration) {
	g := r.generated.Load() + 1
	if g == 1 {
		r.firstAt = t
	}
	e.st.GenTokens++
	r.generated.Store(g)
	r.signal()
}

func (e *engine) finish(r *request, t time.Duration) {
	e.pool.release(r.blocks)
	r.blocks = nil
	r.doneAt = t
	r.finished.Store(true)
	r.signal()
}

// dropCanceled removes requests whose caller went away.
func (e *engine) dropCanceled() {
	keep := e.running[:0]
	for _, r := range e.running {
		if r.canceled.Load() {
			e.finish(r, e.stepEnd)
			continue
		}
		keep = append(keep, r)
	}
	clear(e.running[len(keep):])
	e.running = keep
	wk := e.waiting[:0]
	for _, r := range e.waiting {
		if r.canceled.Load() {
			e.finish(r, e.stepEnd)
			continue
		}
		wk = append(wk, r)
	}
	clear(e.waiting[len(wk):])
	e.waiting = wk
}

// stats is a snapshot; caller holds e.mu.
func (e *engine) stats() engineStats {
	s := e.st
	s.Running, s.Waiting = len(e.running), len(e.waiting)
	s.KVUsage = e.pool.used()
	for _, r := range e.running {
		s.QueuedPrefill += int64(r.target - r.computed)
	}
	for _, r := range e.waiting {
		s.QueuedPrefill += int64(r.target - r.computed)
	}
	return s
}

func blocksFor(tokens int) int { return (tokens + blockTokens - 1) / blockTokens }
