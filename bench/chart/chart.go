// Package chart draws the grouped bar charts of the benchmark reports
// (bench/harness, bench/fleet) as one SVG file: panels two to a row, one
// colour per series, shared by every panel and named once in a legend.
package chart

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Chart is a titled grid of panels.
type Chart struct {
	Title  string
	Series []string // the legend: series i is drawn in colour i in every panel
	Panels []Panel
}

// Panel is one grouped bar chart: a group of bars per entry of Groups, one
// bar per series in each.
type Panel struct {
	Title  string
	Log    bool     // logarithmic value axis
	Groups []string // labels along the x axis; "\n" breaks a label
	// Val[g][s] is the bar of series s in group g; NaN draws none.
	Val [][]float64
	// Lo and Hi, when set, are whiskers from Lo[g][s] (the bar's top when
	// Lo is nil) to Hi[g][s]; NaN draws none.
	Lo, Hi [][]float64
	// RefLabel, when set, labels a dashed line drawn at Ref.
	Ref      float64
	RefLabel string
}

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#b07aa1", "#9c755f", "#59a14f"}

// Layout, in SVG user units.
const (
	panelW, panelH = 500, 290
	plotL, plotT   = 60, 36
	plotW, plotH   = panelW - plotL - 16, 190
	top            = 52 // title and legend above the panels
)

// SVG is the whole chart as an SVG document.
func (c *Chart) SVG() string {
	cols := min(2, max(1, len(c.Panels)))
	rows := (len(c.Panels) + cols - 1) / cols
	w, h := cols*panelW, top+rows*panelH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", w/2, esc(c.Title))
	for i, s := range c.Series {
		x := 20 + i*(w-40)/len(c.Series)
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="10" height="10" fill="%s"/><text x="%d" y="41">%s</text>`+"\n", x, color(i), x+14, esc(s))
	}
	for i := range c.Panels {
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", (i%cols)*panelW, top+(i/cols)*panelH)
		c.Panels[i].draw(&b)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func (p *Panel) draw(b *strings.Builder) {
	y, ticks := p.axis()
	base := float64(plotT + plotH)
	fmt.Fprintf(b, `<text x="%d" y="20" text-anchor="middle" font-size="12" font-weight="bold">%s</text>`+"\n", panelW/2, esc(p.Title))
	for _, t := range ticks {
		ty := base - y(t)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			plotL, plotL+plotW, ty, ty, plotL-4, ty+4, Label(t))
	}
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", plotL, plotL+plotW, base, base)
	groupW := float64(plotW) / float64(max(len(p.Groups), 1))
	for g, label := range p.Groups {
		var row []float64
		if g < len(p.Val) {
			row = p.Val[g]
		}
		barW := min(40, (groupW-12)/float64(max(len(row), 1)))
		x0 := float64(plotL) + float64(g)*groupW + (groupW-barW*float64(len(row)))/2
		for s, v := range row {
			if math.IsNaN(v) {
				continue
			}
			x, h := x0+float64(s)*barW, y(v)
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x+0.5, base-h, barW-1, h, color(s), Label(v))
			head := h
			if hi := at(p.Hi, g, s); !math.IsNaN(hi) {
				lo := at(p.Lo, g, s)
				if p.Lo == nil {
					lo = v
				}
				if hi > lo {
					cx, yl, yh := x+barW/2, base-y(lo), base-y(hi)
					fmt.Fprintf(b, `<path d="M%.1f %.1fV%.1fM%.1f %.1fh6" stroke="#222" fill="none"/>`+"\n", cx, yl, yh, cx-3, yh)
					head = max(head, y(hi))
				}
			}
			if barW >= 22 {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+barW/2, base-head-3, Label(v))
			}
		}
		for i, line := range strings.Split(label, "\n") {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", float64(plotL)+groupW*(float64(g)+0.5), base+15+13*float64(i), esc(line))
		}
	}
	if p.RefLabel != "" {
		ry := base - y(p.Ref)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="5,4"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			plotL, plotL+plotW, ry, ry, plotL+plotW, ry-4, esc(p.RefLabel))
	}
}

// axis returns the height of a value above the base line and the values
// to label: decades on a log axis (with 2 and 5 when it spans at most two),
// five even steps up to a round top on a linear one.
func (p *Panel) axis() (func(float64) float64, []float64) {
	lo, hi := math.Inf(1), 0.0
	for _, vs := range [][][]float64{p.Val, p.Lo, p.Hi} {
		for _, row := range vs {
			for _, v := range row {
				if v > 0 && !math.IsInf(v, 0) {
					lo, hi = min(lo, v), max(hi, v)
				}
			}
		}
	}
	if p.RefLabel != "" && p.Ref > 0 {
		lo, hi = min(lo, p.Ref), max(hi, p.Ref)
	}
	if hi == 0 {
		lo, hi = 1, 1
	}
	var ticks []float64
	if p.Log {
		e0, e1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi*1.05))
		e1 = max(e1, e0+1)
		for e := e0; e <= e1; e++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, e); (m == 1 || e1-e0 <= 2) && math.Log10(v) <= e1+1e-9 {
					ticks = append(ticks, v)
				}
			}
		}
		return func(v float64) float64 {
			if v <= 0 {
				return 0
			}
			return max(0, (math.Log10(v)-e0)/(e1-e0)) * plotH
		}, ticks
	}
	t := niceCeil(hi * 1.05)
	for i := range 6 {
		ticks = append(ticks, t*float64(i)/5)
	}
	return func(v float64) float64 { return max(0, v) / t * plotH }, ticks
}

// niceCeil is the smallest of 1, 2, 2.5, 5 and 10 times a power of ten that
// is at least v.
func niceCeil(v float64) float64 {
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*e >= v*(1-1e-12) {
			return m * e
		}
	}
	return 10 * e
}

// Label formats a value for an axis or a bar: three significant digits
// below 100, whole numbers from there.
func Label(v float64) string {
	if math.Abs(v) >= 100 || v == 0 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func at(v [][]float64, g, s int) float64 {
	if g >= len(v) || s >= len(v[g]) {
		return math.NaN()
	}
	return v[g][s]
}

func color(i int) string { return palette[i%len(palette)] }

func esc(s string) string { return html.EscapeString(s) }
