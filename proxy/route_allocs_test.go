//go:build !race

package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/selector"
)

// The prefix strategy's work per request allocates nothing once the
// exchange's buffers have grown: hashing the parsed chat, deciding,
// teaching the index.
func TestAllocsRoutePrompt(t *testing.T) {
	for _, size := range []int{1 << 10, 48 << 10, 2 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var pr fastjson.Parser
			v, err := pr.Parse(chatOfSize(size))
			if err != nil {
				t.Fatal(err)
			}
			msgs := v.Get("messages")
			ups := []selector.Upstream{{Name: "a", Values: []string{"qwen"}, Priority: 1}, {Name: "b", Values: []string{"qwen"}, Priority: 2}}
			cfg := configs.Default()
			cfg.Routing.Strategy = configs.StrategyPrefix
			tb := selector.NewWith(ups, routingOptions(cfg, nil, nil, selector.NewIndex(1<<20)))
			x := new(exchange)
			cands := make([]int, 0, 2)
			run := func() {
				p := &x.rt.prompt
				p.Reset(cfg.Routing.BlockBytes, cfg.Routing.KeyBytes, true)
				x.addMessages(p, msgs)
				p.Finish()
				cands = tb.Match(cands[:0], "qwen-7b")
				tb.Route(cands, time.Now(), p)
				tb.Learn(cands[0], p, time.Now())
			}
			run()
			if n := testing.AllocsPerRun(20, run); n != 0 {
				t.Fatalf("%d-byte chat: %.1f allocations per request, want 0", size, n)
			}
		})
	}
}
