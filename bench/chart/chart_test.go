package chart

import (
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

// elements parses svg and counts its elements by name.
func elements(t *testing.T, svg string) map[string]int {
	t.Helper()
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Fatalf("a NaN or Inf reached the SVG:\n%s", svg)
	}
	n := map[string]int{}
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			n[se.Name.Local]++
		}
	}
}

func TestSVG(t *testing.T) {
	nan := math.NaN()
	c := &Chart{Title: "a <b> & c", Series: []string{"x", "y"}, Panels: []Panel{
		{Title: "log", Log: true, Groups: []string{"p50", "p99\nopen loop"},
			Val: [][]float64{{120, 3400}, {nan, 900}}, Lo: [][]float64{{110, 3000}, {nan, 800}}, Hi: [][]float64{{130, 5000}, {nan, 1000}}},
		{Title: "linear", Groups: []string{"a"}, Val: [][]float64{{3, 4}}, Hi: [][]float64{{5, nan}}, Ref: 4.5, RefLabel: "ceiling"},
		{Title: "empty", Groups: []string{"a", "b"}},
	}}
	svg := c.SVG()
	n := elements(t, svg)
	// background + 2 legend keys + 5 bars (one is NaN)
	if n["rect"] != 1+2+5 {
		t.Fatalf("%d rects, want 8", n["rect"])
	}
	// whiskers: 3 in the log panel, 1 in the linear one (the bar's top to 5)
	if n["path"] != 4 {
		t.Fatalf("%d whiskers, want 4", n["path"])
	}
	for _, want := range []string{"a &lt;b&gt; &amp; c", ">ceiling<", ">open loop<", "stroke-dasharray"} {
		if !strings.Contains(svg, want) {
			t.Fatalf("SVG lacks %q", want)
		}
	}
	elements(t, (&Chart{}).SVG())
}

func TestAxis(t *testing.T) {
	// 110..5000 on a log axis: 10^2..10^4, with 2 and 5 in between.
	p := Panel{Log: true, Val: [][]float64{{120, 3400}}, Hi: [][]float64{{130, 5000}}, Lo: [][]float64{{110, 3000}}}
	y, ticks := p.axis()
	if len(ticks) != 7 || ticks[0] != 100 || ticks[6] != 10000 {
		t.Fatalf("log ticks %v", ticks)
	}
	if got := y(1000); math.Abs(got-plotH/2) > 1e-9 {
		t.Fatalf("1000 on a 100..10000 log axis is at %g, want %g", got, plotH/2.0)
	}
	// Three decades and more: decades only.
	p = Panel{Log: true, Val: [][]float64{{0.5, 900}}}
	if _, ticks := p.axis(); len(ticks) != 5 {
		t.Fatalf("log ticks over four decades: %v", ticks)
	}
	// 114 plus headroom is 120: a top of 200, steps of 40.
	p = Panel{Val: [][]float64{{114}}}
	y, ticks = p.axis()
	if len(ticks) != 6 || ticks[5] != 200 || ticks[1] != 40 || y(200) != plotH || y(0) != 0 {
		t.Fatalf("linear ticks %v", ticks)
	}
	// A reference line above every bar raises the top.
	p = Panel{Val: [][]float64{{5}}, Ref: 20, RefLabel: "r"}
	if _, ticks := p.axis(); ticks[5] != 25 {
		t.Fatalf("ticks %v do not reach the reference", ticks)
	}
}

func TestNiceCeil(t *testing.T) {
	f := func(v, want float64) {
		t.Helper()
		if got := niceCeil(v); got != want {
			t.Fatalf("niceCeil(%g) = %g, want %g", v, got, want)
		}
	}
	f(1, 1)
	f(1.2, 2)
	f(21, 25)
	f(300, 500)
	f(0.07, 0.1)
	f(600, 1000)
}

func TestLabel(t *testing.T) {
	f := func(v float64, want string) {
		t.Helper()
		if got := Label(v); got != want {
			t.Fatalf("Label(%g) = %q, want %q", v, got, want)
		}
	}
	f(0, "0")
	f(0.25, "0.25")
	f(12.34, "12.3")
	f(99.5, "99.5")
	f(1234.5, "1234")
	f(5000, "5000")
}
