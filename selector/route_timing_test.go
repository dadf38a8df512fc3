package selector

import (
	"fmt"
	"testing"
	"time"
)

// chatPrompt writes a chat of about size bytes to p the way the proxy does:
// role, separator, content, per message; a 6 KB system prompt, then user and
// assistant turns of 1.5 KB.
func chatPrompt(p *Prompt, msgs [][]byte) {
	p.Reset(1024, 4096, true)
	for i, m := range msgs {
		switch {
		case i == 0:
			p.AddString("system\x1e")
		case i%2 == 1:
			p.AddString("user\x1e")
		default:
			p.AddString("assistant\x1e")
		}
		if i == 1 {
			p.StartKey()
		}
		p.Add(m)
		if i == 1 {
			p.EndKey()
		}
		p.AddString("\x1f")
	}
	p.Finish()
}

func chatMessages(size int) [][]byte {
	msgs := [][]byte{text(1, min(6000, size/2))}
	for n, i := len(msgs[0]), 2; n < size; i++ {
		m := text(i, min(1500, size-n))
		msgs = append(msgs, m)
		n += len(m)
	}
	return msgs
}

// BenchmarkRoute is the whole routing decision for one request: hashing the
// prompt (prefix only) and ordering 8 candidates, for a 1 KB and a 48 KB
// (the Mooncake conversation trace's mean) chat prompt. For prefix the index
// holds the conversation's previous turn, so the decision walks the binary
// search of a hit.
func BenchmarkRoute(b *testing.B) {
	for _, s := range []Strategy{Weighted, LeastLoaded, Prefix} {
		for _, size := range []int{1 << 10, 48 << 10} {
			b.Run(fmt.Sprintf("%s/%dKB", []string{"weighted", "least_loaded", "prefix"}[s], size>>10), func(b *testing.B) {
				tb := benchRouted(s, 8)
				msgs := chatMessages(size)
				p := new(Prompt)
				chatPrompt(p, msgs[:len(msgs)-1])
				tb.Learn(3, p, t0)
				cands := make([]int, 0, 8)
				now := time.Now()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if s == Prefix {
						chatPrompt(p, msgs)
					}
					cands = tb.Match(cands[:0], "Qwen2.5-72B-Instruct")
					tb.Route(cands, now, p)
					Sink += cands[0]
				}
			})
		}
	}
}

// BenchmarkLearn is what an answered prefix-routed request costs after its
// answer: teaching the index every block key of its prompt.
func BenchmarkLearn(b *testing.B) {
	for _, size := range []int{1 << 10, 48 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			tb := benchRouted(Prefix, 8)
			p := new(Prompt)
			chatPrompt(p, chatMessages(size))
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				tb.Learn(3, p, now)
			}
		})
	}
}

// BenchmarkPromptHuge hashes a 16 MB prompt: linear up to MaxPromptBlocks,
// then only counted.
func BenchmarkPromptHuge(b *testing.B) {
	big := text(5, 16<<20)
	p := new(Prompt)
	b.SetBytes(int64(len(big)))
	b.ReportAllocs()
	for b.Loop() {
		p.Reset(1024, 4096, false)
		for c := big; len(c) > 0; c = c[min(len(c), 64<<10):] {
			p.Add(c[:min(len(c), 64<<10)])
		}
		p.Finish()
		Sink += len(p.Keys())
	}
}

func benchRouted(s Strategy, n int) *Table {
	base := benchTable(n)
	ups := make([]Upstream, n)
	for i := range ups {
		ups[i] = *base.Upstream(i)
		ups[i].Priority = 1 + i%3 // all weighted
	}
	o := Options{Strategy: s, Stale: 3 * time.Second, BalanceAbs: 8, BalanceRel: 1.5}
	if s == Prefix {
		o.Index = NewIndex(32 << 20)
	}
	tb := NewWith(ups, o)
	for i := range n {
		for range i % 4 {
			tb.Load(i).Begin()
		}
		tb.Load(i).SetWaiting(int64(i%3), time.Now())
	}
	return tb
}
