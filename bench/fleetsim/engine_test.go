package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/valyala/fasthttp"
)

// textOf is a prompt text of exactly tokens tokens (4 bytes each) made of
// words picked by seed; texts of different seeds share no block.
func textOf(seed uint64, tokens int) []byte {
	b := make([]byte, 0, tokens*bytesPerToken)
	for i := range tokens {
		x := splitmix(seed<<32 | uint64(i))
		b = append(b, byte('a'+x%26), byte('a'+(x>>8)%26), byte('a'+(x>>16)%26), ' ')
	}
	return b
}

func reqOf(text []byte, maxOut int) *request {
	return newRequest(appendChain(nil, text), fnvAdd(fnvOffset, text), promptTokens(text), maxOut)
}

// startEngine runs an engine on a clock of the given speed until the test
// ends; call inside a synctest bubble.
func startEngine(t *testing.T, cfg Config, speed float64) *engine {
	t.Helper()
	e := newEngine("s0", cfg, newSimClock(speed))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go e.run(ctx, testGran)
	return e
}

const testGran = 500 * time.Microsecond

func wait(r *request) {
	for !r.finished.Load() {
		<-r.notify
	}
}

// A request alone takes the cost model's time: its prefill in chunks of the
// step budget, then one step per further token; the caller sees it within
// one scheduler granularity of that.
func TestAloneTakesCostModelTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := defaultConfig()
		const speed = 10
		e := startEngine(t, cfg, speed)
		r := reqOf(textOf(1, 10000), 50)
		t0 := time.Now()
		e.submit(r)
		wait(r)
		wall := time.Since(t0)

		c := cfg.Cost
		first := c.step(8192, 0) + c.step(10000-8192, 0)
		done := first + 49*c.step(0, 1)
		if got := r.firstAt - r.at; got != first {
			t.Errorf("first token after %s, want %s (two prefill steps)", got, first)
		}
		if got := r.doneAt - r.at; got != done {
			t.Errorf("done after %s, want %s (prefill + 49 decode steps)", got, done)
		}
		if lo, hi := done/speed, done/speed+testGran; wall < lo || wall > hi {
			t.Errorf("the caller saw the end after %s of wall time, want %s..%s", wall, lo, hi)
		}
		if r.cached != 0 {
			t.Errorf("cached %d tokens on an empty cache", r.cached)
		}
	})
}

// The same prompt twice: the second finds all its full blocks cached and
// its first token comes after one short step instead of the whole prefill.
func TestSamePromptTwiceIsCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := defaultConfig()
		e := startEngine(t, cfg, 1)
		text := textOf(2, 1002) // 62 full blocks and 10 tokens
		a, b := reqOf(text, 4), reqOf(text, 4)
		e.submit(a)
		wait(a)
		e.submit(b)
		wait(b)
		if a.cached != 0 || b.cached != 62*blockTokens {
			t.Errorf("cached %d then %d tokens, want 0 then %d", a.cached, b.cached, 62*blockTokens)
		}
		ttftA, ttftB := a.firstAt-a.at, b.firstAt-b.at
		if want := cfg.Cost.step(1002, 0); ttftA != want {
			t.Errorf("first TTFT %s, want %s", ttftA, want)
		}
		if want := cfg.Cost.step(1002-62*blockTokens, 0); ttftB != want {
			t.Errorf("second TTFT %s, want %s", ttftB, want)
		}
		if ttftB >= ttftA {
			t.Errorf("cached TTFT %s is not shorter than %s", ttftB, ttftA)
		}
	})
}

// A prompt that shares the first half of its blocks with an earlier one
// gets half of them cached.
func TestHalfSharedPromptGetsHalf(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startEngine(t, defaultConfig(), 1)
		first := textOf(3, 64*blockTokens)
		second := append(append([]byte(nil), first[:32*blockBytes]...), textOf(4, 32*blockTokens)...)
		a, b := reqOf(first, 1), reqOf(second, 1)
		e.submit(a)
		wait(a)
		e.submit(b)
		wait(b)
		if b.cached != 32*blockTokens {
			t.Errorf("cached %d tokens, want %d (32 of 64 blocks)", b.cached, 32*blockTokens)
		}
	})
}

// With room for three prompts, a fourth evicts the least recently used
// one, from its tail: a prompt used again keeps its blocks.
func TestLRUEvictionUnderSmallCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := defaultConfig()
		cfg.KVTokens = 64 * blockTokens // 64 blocks; each prompt needs 21
		e := startEngine(t, cfg, 1)
		texts := map[string][]byte{}
		run := func(name string) *request {
			if texts[name] == nil {
				texts[name] = textOf(uint64(name[0]), 20*blockTokens+8)
			}
			r := reqOf(texts[name], 1)
			e.submit(r)
			wait(r)
			return r
		}
		held := func(name string) int {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.pool.match(appendChain(nil, texts[name]))
		}
		run("A")
		run("B")
		run("C")
		if r := run("A"); r.cached != 20*blockTokens {
			t.Fatalf("A again: cached %d, want %d", r.cached, 20*blockTokens)
		}
		run("D") // needs 21 blocks: B is now the least recently used
		if got := held("B"); got != 1 {
			t.Errorf("B holds %d blocks, want 1 (its tail evicted first)", got)
		}
		for _, n := range []string{"A", "C", "D"} {
			if got := held(n); got != 20 {
				t.Errorf("%s holds %d blocks, want 20", n, got)
			}
		}
		e.mu.Lock()
		if e.pool.free != e.pool.size() || len(e.pool.byHash) > e.pool.size() {
			t.Errorf("idle pool: %d of %d free, %d hashes", e.pool.free, e.pool.size(), len(e.pool.byHash))
		}
		e.mu.Unlock()
	})
}

// The KV pool bounds the batch: requests that do not fit wait, and a
// decode that finds no free block preempts the newest running request.
func TestKVCapacityBoundsTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := defaultConfig()
		cfg.KVTokens = 100 * blockTokens
		e := startEngine(t, cfg, 1)
		var rs []*request
		for i := range 4 {
			r := reqOf(textOf(uint64(10+i), 30*blockTokens), 300) // 30 blocks of prompt, ~19 more to decode
			rs = append(rs, r)
			e.submit(r)
		}
		time.Sleep(200 * time.Millisecond) // after the first step: three prefilled
		e.mu.Lock()
		st := e.stats()
		e.mu.Unlock()
		if st.Running != 3 || st.Waiting != 1 {
			t.Errorf("running %d, waiting %d; want 3 and 1 (a fourth prompt does not fit)", st.Running, st.Waiting)
		}
		for _, r := range rs {
			wait(r)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.st.Preemptions == 0 {
			t.Error("three decoding requests outgrew 100 blocks without a preemption")
		}
		if e.pool.free != e.pool.size() {
			t.Errorf("%d blocks still held after every request finished", e.pool.size()-e.pool.free)
		}
	})
}

// Arrivals faster than the engine serves them: the waiting count grows and
// /metrics shows it with vLLM's names.
func TestQueueingShowsOnMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startEngine(t, defaultConfig(), 1)
		s := newServer("s0", e, 0)
		var waiting []int
		for i := range 30 { // 10 per second of 4000 tokens: 40k tokens/s against 9.7k
			e.submit(reqOf(textOf(uint64(100+i), 4000), 10))
			time.Sleep(100 * time.Millisecond)
			if i%10 == 9 {
				e.mu.Lock()
				waiting = append(waiting, e.stats().Waiting)
				e.mu.Unlock()
			}
		}
		if !(0 < waiting[0] && waiting[0] < waiting[1] && waiting[1] < waiting[2]) {
			t.Errorf("waiting after 1, 2, 3 s: %v; want it growing", waiting)
		}
		var ctx fasthttp.RequestCtx
		s.metrics(&ctx)
		body := string(ctx.Response.Body())
		want := fmt.Sprintf("vllm:num_requests_waiting{engine=\"0\",model_name=%q} %d\n", defaultModel, waiting[2])
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
		for _, name := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"} {
			if !strings.Contains(body, "# HELP "+name+" ") || !strings.Contains(body, "# TYPE "+name+" ") {
				t.Errorf("/metrics lacks HELP or TYPE of %s", name)
			}
		}
	})
}
