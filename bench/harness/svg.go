package main

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// panel is one grouped bar chart of the figure.
type panel struct {
	title  string
	unit   string
	log    bool     // logarithmic value axis
	groups []string // along the x axis
	series []string // one bar per series in each group
	// val[g][s] is the median; lo and hi the range over runs (error bar).
	val, lo, hi [][]float64
}

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759"}

// Layout of one panel, in SVG user units.
const (
	panelW   = 440
	panelH   = 320
	plotLeft = 62
	plotTop  = 48
	plotW    = panelW - plotLeft - 16
	plotH    = 200
)

// svg draws four panels in a 2×2 grid: non-stream latency and stream TTFT
// by target, and the proxies' CPU per request and per stream.
func (r *report) svg() string {
	ps := []panel{
		r.panel(fmt.Sprintf("Non-stream latency, %.0f req/s open loop", r.plan.rate), "µs", true,
			targetNames, []string{"p50", "p99", "p99.9"}, []string{"ol_p50", "ol_p99", "ol_p999"}, false),
		r.panel(fmt.Sprintf("Stream time to first event, %.0f streams/s", r.plan.streamRate), "µs", true,
			targetNames, []string{"p50", "p99"}, []string{"ttft_p50", "ttft_p99"}, false),
		r.panel("Proxy CPU per non-stream request", "µs per request", false,
			[]string{"saturated\n(wrk)", fmt.Sprintf("%.0f req/s\n(open loop)", r.plan.rate)},
			[]string{gptapi, nginx}, []string{"cpu_wrk", "cpu_ol"}, true),
		r.panel("Proxy CPU per 20-chunk stream", "µs per stream", false,
			[]string{"saturated\n(closed loop)", fmt.Sprintf("%.0f streams/s\n(%d ms chunks)", r.plan.streamRate, r.plan.chunkDelayMs)},
			[]string{gptapi, nginx}, []string{"cpu_stream", "cpu_paced"}, true),
	}
	const cols = 2
	rows := (len(ps) + cols - 1) / cols
	w, h := panelW*cols, panelH*rows+40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
	title := fmt.Sprintf("gptapi vs nginx vs direct (mock upstream), %s", r.started.Format("2006-01-02"))
	if len(r.runs) > 1 {
		title += fmt.Sprintf(", median of %d runs, whiskers min–max", len(r.runs))
	}
	if r.plan.quick {
		title += " — QUICK MODE, not a measurement"
	}
	fmt.Fprintf(&b, `<text x="%d" y="24" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", w/2, esc(title))
	for i, p := range ps {
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", (i%cols)*panelW, 36+(i/cols)*panelH)
		p.draw(&b)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// panel builds a panel from the report; byGroup says keys follow groups
// (one key per group, series are targets) rather than series (one key per
// series, groups are targets).
func (r *report) panel(title, unit string, log bool, groups, series, keys []string, byGroup bool) panel {
	p := panel{title: title, unit: unit, log: log, groups: groups, series: series}
	for gi := range groups {
		var v, lo, hi []float64
		for si := range series {
			var s stat
			if byGroup {
				s = r.stat(series[si], keys[gi])
			} else {
				s = r.stat(groups[gi], keys[si])
			}
			if !s.ok() {
				v, lo, hi = append(v, math.NaN()), append(lo, math.NaN()), append(hi, math.NaN())
				continue
			}
			v, lo, hi = append(v, s.med), append(lo, s.lo), append(hi, s.hi)
		}
		p.val, p.lo, p.hi = append(p.val, v), append(p.lo, lo), append(p.hi, hi)
	}
	return p
}

// scale maps values to the plot's height.
type scale struct {
	log    bool
	lo, hi float64 // value range (log: of log10)
	step   float64 // linear: between ticks
}

func (p *panel) scale() scale {
	mn, mx := math.Inf(1), math.Inf(-1)
	for gi := range p.val {
		for si := range p.val[gi] {
			for _, v := range []float64{p.val[gi][si], p.hi[gi][si], p.lo[gi][si]} {
				if !math.IsNaN(v) && v > 0 {
					mn, mx = math.Min(mn, v), math.Max(mx, v)
				}
			}
		}
	}
	if math.IsInf(mx, -1) {
		mn, mx = 1, 10
	}
	if !p.log {
		step := niceStep(mx * 1.08)
		return scale{hi: math.Ceil(mx*1.08/step) * step, step: step}
	}
	return scale{log: true, lo: math.Floor(math.Log10(mn)), hi: math.Ceil(math.Log10(mx * 1.05))}
}

// y is the pixel height of v above the axis.
func (s scale) y(v float64) float64 {
	if s.log {
		if v <= 0 {
			return 0
		}
		f := (math.Log10(v) - s.lo) / (s.hi - s.lo)
		return math.Max(0, f) * plotH
	}
	return v / s.hi * plotH
}

// ticks are the labelled values of the axis: 1-2-5 steps on a log axis,
// five even steps on a linear one.
func (s scale) ticks() []float64 {
	var t []float64
	if s.log {
		for e := s.lo; e <= s.hi; e++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, e)
				if math.Log10(v) <= s.hi+1e-9 {
					t = append(t, v)
				}
			}
		}
		return t
	}
	for v := 0.0; v <= s.hi+s.step/2; v += s.step {
		t = append(t, v)
	}
	return t
}

// niceStep is the smallest 1-2-5 step that spans v in at most six ticks.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v))-1)
	for {
		for _, m := range []float64{1, 2, 5} {
			if math.Ceil(v/(m*e)) <= 6 {
				return m * e
			}
		}
		e *= 10
	}
}

func (p *panel) draw(b *strings.Builder) {
	sc := p.scale()
	base := float64(plotTop + plotH)
	fmt.Fprintf(b, `<text x="%d" y="16" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`+"\n", panelW/2, esc(p.title))
	axis := p.unit
	if p.log {
		axis += " (log scale)"
	}
	fmt.Fprintf(b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle" fill="#555">%s</text>`+"\n", plotTop+plotH/2, plotTop+plotH/2, esc(axis))
	for _, t := range sc.ticks() {
		y := base - sc.y(t)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>`+"\n", plotLeft, y, plotLeft+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555" font-size="10">%s</text>`+"\n", plotLeft-4, y+3, strconv.FormatFloat(t, 'f', -1, 64))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#333"/>`+"\n", plotLeft, base, plotLeft+plotW, base)

	groupW := float64(plotW) / float64(len(p.groups))
	barW := math.Min(28, groupW*0.8/float64(len(p.series)))
	for gi, g := range p.groups {
		x0 := float64(plotLeft) + groupW*float64(gi) + (groupW-barW*float64(len(p.series)))/2
		for si := range p.series {
			v := p.val[gi][si]
			x := x0 + barW*float64(si)
			if math.IsNaN(v) {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#999" font-size="9">n/a</text>`+"\n", x+barW/2, base-4)
				continue
			}
			h := sc.y(v)
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				x+1, base-h, barW-2, h, palette[si%len(palette)], esc(strings.ReplaceAll(g, "\n", " ")), esc(p.series[si]), num(v), esc(p.unit))
			top := h
			if lo, hi := p.lo[gi][si], p.hi[gi][si]; hi > lo {
				top = math.Max(top, sc.y(hi))
				cx := x + barW/2
				yl, yh := base-sc.y(lo), base-sc.y(hi)
				fmt.Fprintf(b, `<path d="M%.1f %.1fV%.1fM%.1f %.1fh6M%.1f %.1fh6" stroke="#222" fill="none"/>`+"\n", cx, yl, yh, cx-3, yl, cx-3, yh)
			}
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+barW/2, base-top-4, num(v))
		}
		for li, line := range strings.Split(g, "\n") {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", float64(plotLeft)+groupW*(float64(gi)+0.5), base+16+14*float64(li), esc(line))
		}
	}
	// legend
	lx := float64(plotLeft)
	ly := base + 52
	for si, s := range p.series {
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/>`, lx, ly-9, palette[si%len(palette)])
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+14, ly, esc(s))
		lx += 20 + 8*float64(len(s)) + 14
	}
}

func esc(s string) string { return html.EscapeString(s) }
