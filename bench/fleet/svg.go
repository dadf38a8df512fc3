package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#b07aa1", "#9c755f", "#59a14f"}

const (
	panelW, panelH = 520, 300
	plotL, plotT   = 60, 40
	plotW, plotH   = panelW - plotL - 20, 190
)

// svg draws, for each KV capacity, the servers' TTFT by load and strategy (bar: p50,
// whisker: p99, log scale) and the cache hit share with the trace's
// ceiling as a dashed line.
func (r *report) svg() string {
	sts := strategiesIn(r)
	rows := len(r.Plan.KVs)
	w, h := 2*panelW, rows*panelH+70
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", w, h)
	title := fmt.Sprintf("Routing on a simulated 8-server vLLM fleet, Mooncake conversation trace, %s", r.Started.Format("2006-01-02"))
	if r.Plan.Quick {
		title += " (QUICK MODE, not a measurement)"
	}
	fmt.Fprintf(&b, `<text x="%d" y="20" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", w/2, html.EscapeString(title))
	for i, s := range sts {
		x := 20 + i*(w-40)/len(sts)
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="10" height="10" fill="%s"/><text x="%d" y="41">%s</text>`+"\n", x, palette[i%len(palette)], x+14, html.EscapeString(s))
	}
	for row, kv := range r.Plan.KVs {
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
		p50 := get(func(x *run) float64 { return x.Summary.ServerTTFTms.P50 / 1000 })
		p99 := get(func(x *run) float64 { return x.Summary.ServerTTFTms.P99 / 1000 })
		hit := get(func(x *run) float64 { return 100 * x.Summary.HitShare })
		y := 55 + row*panelH
		fmt.Fprintf(&b, `<g transform="translate(0,%d)">`+"\n", y)
		r.panel(&b, "Server TTFT, s (bar p50, whisker p99), KV "+kvShort(kv), true, p50, p99, -1)
		b.WriteString("</g>\n")
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", panelW, y)
		r.panel(&b, "Prompt tokens served from cache, %, KV "+kvShort(kv), false, hit, nil, 100*r.Ceiling)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
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

// panel draws grouped bars: groups are loads, one bar per strategy; hi,
// when set, are whiskers; ref, when not negative, a dashed reference line.
func (r *report) panel(b *strings.Builder, title string, log bool, val, hi [][]float64, ref float64) {
	top := 0.0
	bottom := math.Inf(1)
	for g := range val {
		for s := range val[g] {
			for _, v := range []float64{val[g][s], at(hi, g, s)} {
				if v > 0 {
					top = max(top, v)
					bottom = min(bottom, v)
				}
			}
		}
	}
	top = max(top, ref)
	if top <= 0 {
		top = 1
	}
	var scale func(float64) float64
	var ticks []float64
	if log {
		lo := math.Pow(10, math.Floor(math.Log10(max(bottom, 1e-3))))
		hiE := math.Pow(10, math.Ceil(math.Log10(top)))
		for t := lo; t <= hiE*1.0001; t *= 10 {
			ticks = append(ticks, t)
		}
		scale = func(v float64) float64 {
			if v <= lo {
				return 0
			}
			return math.Log10(v/lo) / math.Log10(hiE/lo) * plotH
		}
	} else {
		top = niceCeil(top)
		for i := range 5 {
			ticks = append(ticks, top*float64(i)/4)
		}
		scale = func(v float64) float64 { return v / top * plotH }
	}
	fmt.Fprintf(b, `<text x="%d" y="22" text-anchor="middle" font-size="12" font-weight="bold">%s</text>`+"\n", panelW/2, html.EscapeString(title))
	base := plotT + plotH
	for _, t := range ticks {
		y := float64(base) - scale(t)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			plotL, plotL+plotW, y, y, plotL-4, y+4, fmtTick(t))
	}
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>`+"\n", plotL, plotL+plotW, base, base)
	groupW := float64(plotW) / float64(max(len(val), 1))
	for g := range val {
		n := len(val[g])
		barW := (groupW - 16) / float64(max(n, 1))
		x0 := float64(plotL) + float64(g)*groupW + 8
		for s := range val[g] {
			v := val[g][s]
			if math.IsNaN(v) {
				continue
			}
			hgt := scale(v)
			x := x0 + float64(s)*barW
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x, float64(base)-hgt, barW-1, hgt, palette[s%len(palette)], fmtTick(v))
			if w := at(hi, g, s); w > 0 {
				cx := x + (barW-1)/2
				fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333"/><line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n",
					cx, cx, float64(base)-hgt, float64(base)-scale(w), cx-3, cx+3, float64(base)-scale(w), float64(base)-scale(w))
			}
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">load %gx</text>`+"\n", x0+groupW/2-8, base+16, r.Plan.Loads[g])
	}
	if ref >= 0 {
		y := float64(base) - scale(ref)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="5,4"/><text x="%d" y="%.1f" text-anchor="end">trace ceiling %.1f%%</text>`+"\n",
			plotL, plotL+plotW, y, y, plotL+plotW, y-4, ref)
	}
}

func at(v [][]float64, g, s int) float64 {
	if v == nil || math.IsNaN(v[g][s]) {
		return 0
	}
	return v[g][s]
}

func niceCeil(v float64) float64 {
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func fmtTick(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 0.1:
		return fmt.Sprintf("%.3g", v)
	case v < 10:
		return fmt.Sprintf("%.2g", v)
	}
	return fmt.Sprintf("%.0f", v)
}
