package main

import (
	"fmt"
	"math"

	"github.com/gptapi/gptapi/bench/chart"
)

// svg draws, for each KV capacity, the servers' TTFT by load and strategy
// (bar: p50, whisker: p99, log scale) and the cache hit share with the
// trace's ceiling as a dashed line.
func (r *report) svg() string {
	sts := strategiesIn(r)
	c := chart.Chart{
		Title:  fmt.Sprintf("Routing on a simulated 8-server vLLM fleet, Mooncake conversation trace, %s", r.Started.Format("2006-01-02")),
		Series: sts,
	}
	if r.Plan.Quick {
		c.Title += " (QUICK MODE, not a measurement)"
	}
	var loads []string
	for _, l := range r.Plan.Loads {
		loads = append(loads, fmt.Sprintf("load %gx", l))
	}
	for _, kv := range r.Plan.KVs {
		get := func(f func(*run) float64) [][]float64 {
			v := make([][]float64, len(r.Plan.Loads))
			for g, l := range r.Plan.Loads {
				for _, s := range sts {
					x := r.find(s, kv, l)
					if x == nil {
						v[g] = append(v[g], math.NaN())
					} else {
						v[g] = append(v[g], f(x))
					}
				}
			}
			return v
		}
		c.Panels = append(c.Panels,
			chart.Panel{Title: "Server TTFT, s (bar p50, whisker p99), KV " + kvShort(kv), Log: true, Groups: loads,
				Val: get(func(x *run) float64 { return x.Summary.ServerTTFTms.P50 / 1000 }),
				Hi:  get(func(x *run) float64 { return x.Summary.ServerTTFTms.P99 / 1000 })},
			chart.Panel{Title: "Prompt tokens served from cache, %, KV " + kvShort(kv), Groups: loads,
				Val: get(func(x *run) float64 { return 100 * x.Summary.HitShare }),
				Ref: 100 * r.Ceiling, RefLabel: fmt.Sprintf("trace ceiling %.1f%%", 100*r.Ceiling)})
	}
	return c.SVG()
}

func kvShort(kv int) string {
	if kv%147456 == 0 {
		if kv == 147456 {
			return "1 GPU (147k tokens)"
		}
		return fmt.Sprintf("%dx (%dk tokens)", kv/147456, kv/1000)
	}
	return fmt.Sprintf("%dk tokens", kv/1000)
}
