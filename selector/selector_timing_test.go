package selector

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Sink keeps benchmark results alive so the compiler cannot drop the work.
var Sink int

// sinkMu guards Sink in parallel benchmarks.
var sinkMu sync.Mutex

// benchTable returns n upstreams that all match "Qwen2.5-72B-Instruct": half
// by exact name (listed after another name), half by keyword, with mixed
// priorities and every eighth a standby.
func benchTable(n int) *Table {
	ups := make([]Upstream, n)
	for i := range ups {
		u := Upstream{Name: fmt.Sprint("fleet-", i), Priority: 1 + i%5}
		if i%8 == 7 {
			u.Priority = 0
		}
		if i%2 == 0 {
			u.Exact = true
			u.Values = []string{"llama-3-70b", "Qwen2.5-72B-Instruct"}
		} else {
			u.Values = []string{"deepseek", "QWEN"}
		}
		ups[i] = u
	}
	return New(ups, nil)
}

func BenchmarkMatchOrder(b *testing.B) {
	for _, n := range []int{3, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tb := benchTable(n)
			cands := make([]int, 0, n)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				cands = tb.Match(cands[:0], "Qwen2.5-72B-Instruct")
				tb.Order(cands, now)
				Sink += cands[0]
			}
		})
	}
}

func BenchmarkMatchOrderParallel(b *testing.B) {
	for _, n := range []int{3, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tb := benchTable(n)
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				cands := make([]int, 0, n)
				s := 0
				for pb.Next() {
					cands = tb.Match(cands[:0], "Qwen2.5-72B-Instruct")
					tb.Order(cands, now)
					s += cands[0]
				}
				sinkMu.Lock()
				Sink += s
				sinkMu.Unlock()
			})
		})
	}
}
