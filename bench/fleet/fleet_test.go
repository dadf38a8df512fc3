package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptapi/gptapi/bench/loadgen"
)

func fullReport() *report {
	r := &report{Plan: plan{Servers: 8, Speed: 20, Loads: []float64{0.5, 1}, KVs: []int{147456, 1179648}},
		Started: time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC), Requests: 10, Ceiling: 0.2}
	for _, kv := range r.Plan.KVs {
		for _, l := range r.Plan.Loads {
			for i, s := range strategies {
				sm := loadgen.ReplaySummary{Requests: 10, OK: 10, Upstreams: map[string]int{"s0": 10},
					TTFTms: loadgen.Percentiles{P50: 100 * float64(i+1), P90: 300, P99: 900}, ServerTTFTms: loadgen.Percentiles{P50: 90, P90: 250, P99: 800}, TPOTms: loadgen.Percentiles{P50: 20, P99: 40},
					E2Ems: loadgen.Percentiles{P50: 5000, P99: 9000}, HitShare: 0.05 * float64(i+1), OutputRate: 800}
				r.Runs = append(r.Runs, run{Strategy: s.Name, KV: kv, Load: l, Summary: sm})
			}
		}
	}
	return r
}

// A complete report passes; a failed request, a missing figure or a
// missing run is named.
func TestCheckNamesWhatIsMissing(t *testing.T) {
	r := fullReport()
	if p := r.check(strategies); len(p) != 0 {
		t.Fatalf("complete report: %v", p)
	}
	r.Runs[3].Summary.Failed, r.Runs[3].Summary.OK = 1, 9
	r.Runs[4].Summary.TPOTms.P50 = 0
	r.Runs = r.Runs[:len(r.Runs)-1]
	p := strings.Join(r.check(strategies), "\n")
	for _, want := range []string{"prefix x3 at kv 147456, load 0.5: 1 of 10 requests failed", "round robin at kv 147456, load 0.5: TPOT p50 missing", "precise at kv 1179648, load 1: no run"} {
		if !strings.Contains(p, want) {
			t.Errorf("check does not say %q:\n%s", want, p)
		}
	}
}

// The report's three files are written; the Markdown has every strategy
// at every load and the chart is well-formed SVG with the ceiling drawn.
func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	paths, err := fullReport().write(dir)
	if err != nil || len(paths) != 3 {
		t.Fatalf("%v %v", paths, err)
	}
	md, _ := os.ReadFile(paths[0])
	for _, s := range strategies {
		if !strings.Contains(string(md), "| "+s.Name+" | 0.5x |") || !strings.Contains(string(md), "| "+s.Name+" | 1x |") {
			t.Errorf("markdown lacks %s rows", s.Name)
		}
	}
	if !strings.Contains(string(md), "!["+"chart]("+filepath.Base(paths[2])+")") {
		t.Error("markdown does not show the chart")
	}
	svg, _ := os.ReadFile(paths[2])
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("svg: %s", err)
		}
	}
	if strings.Count(string(svg), "trace ceiling 20.0%") != 2 {
		t.Error("the ceiling is not drawn on both hit-share panels")
	}
}
