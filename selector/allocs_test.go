//go:build !race

package selector

import (
	"fmt"
	"testing"
)

func TestAllocsMatchOrder(t *testing.T) {
	for _, n := range []int{3, 16, stackCands} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tb := benchTable(n)
			coolDown(tb, 1)
			cands := make([]int, 0, n)
			allocs := testing.AllocsPerRun(100, func() {
				cands = tb.Match(cands[:0], "Qwen2.5-72B-Instruct")
				tb.Order(cands, t0)
			})
			if len(cands) != n {
				t.Fatalf("matched %d of %d upstreams", len(cands), n)
			}
			if allocs != 0 {
				t.Fatalf("Match+Order allocates %.1f times, want 0", allocs)
			}
		})
	}
}

func TestAllocsHealth(t *testing.T) {
	var h Health
	allocs := testing.AllocsPerRun(100, func() {
		h.Fail(t0, 3, 1)
		h.Cooling(t0)
		h.Succeed()
	})
	if allocs != 0 {
		t.Fatalf("Health allocates %.1f times, want 0", allocs)
	}
}

func TestAllocsRoute(t *testing.T) {
	for _, s := range []Strategy{Weighted, LeastLoaded, Prefix} {
		for _, size := range []int{1 << 10, 48 << 10, 4 << 20} {
			t.Run(fmt.Sprint(s, "/", size), func(t *testing.T) {
				tb := benchRouted(s, 8)
				msgs := chatMessages(size)
				p := new(Prompt)
				chatPrompt(p, msgs)
				tb.Learn(1, p, t0)
				cands := make([]int, 0, 8)
				allocs := testing.AllocsPerRun(20, func() {
					chatPrompt(p, msgs)
					cands = tb.Match(cands[:0], "Qwen2.5-72B-Instruct")
					tb.Route(cands, t0, p)
					tb.Learn(cands[0], p, t0)
				})
				if allocs != 0 {
					t.Fatalf("routing allocates %.1f times, want 0", allocs)
				}
			})
		}
	}
}
