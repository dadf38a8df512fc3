package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/selector"
)

// chatOfSize returns a chat body of about size bytes: a system prompt, then
// user and assistant turns of ~1.5 KB.
func chatOfSize(size int) string {
	var b strings.Builder
	b.WriteString(`{"model":"qwen-7b","messages":[{"role":"system","content":`)
	b.WriteString(strconv.Quote(strings.Repeat("You are a helpful assistant. ", min(size/2, 6000)/29+1)))
	b.WriteString(`}`)
	for i := 0; b.Len() < size; i++ {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		fmt.Fprintf(&b, `,{"role":%q,"content":%q}`, role, fmt.Sprint(i, " ")+strings.Repeat("some words of the turn ", 64))
	}
	b.WriteString(`]}`)
	return b.String()
}

// BenchmarkRoutePrompt is the prefix strategy's whole per-request work in
// the proxy for a parsed chat: walking the messages into block keys, then
// the decision among 8 upstreams that know the previous turn.
func BenchmarkRoutePrompt(b *testing.B) {
	for _, size := range []int{1 << 10, 48 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			var pr fastjson.Parser
			v, err := pr.Parse(chatOfSize(size))
			if err != nil {
				b.Fatal(err)
			}
			msgs := v.Get("messages")
			ups := make([]selector.Upstream, 8)
			for i := range ups {
				ups[i] = selector.Upstream{Name: fmt.Sprint("up", i), Values: []string{"qwen"}, Priority: 1 + i%3}
			}
			cfg := configs.Default()
			cfg.Routing.Strategy = configs.StrategyPrefix
			tb := selector.NewWith(ups, routingOptions(cfg, nil, nil, selector.NewIndex(cfg.Routing.IndexBytes)))
			x := new(exchange)
			feed := func() *selector.Prompt {
				p := &x.rt.prompt
				p.Reset(cfg.Routing.BlockBytes, cfg.Routing.KeyBytes, true)
				x.addMessages(p, msgs)
				p.Finish()
				return p
			}
			tb.Learn(2, feed(), time.Now())
			cands := make([]int, 0, 8)
			now := time.Now()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				p := feed()
				cands = tb.Match(cands[:0], "qwen-7b")
				tb.Route(cands, now, p)
			}
		})
	}
}
