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
