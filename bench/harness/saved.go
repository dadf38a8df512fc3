package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// saved is a report as JSON, written next to the Markdown, so that the
// report and the chart can be drawn again (-render) without measuring again,
// and runs on different commits can be compared.
type saved struct {
	Started  time.Time   `json:"started"`
	Elapsed  string      `json:"elapsed"`
	Plan     savedPlan   `json:"plan"`
	GenCPUs  string      `json:"gen_cpus"`
	SUTCPUs  string      `json:"sut_cpus"`
	Machine  [][2]string `json:"machine"`
	Versions [][2]string `json:"versions"`
	Runs     []savedRun  `json:"runs"`
}

type savedPlan struct {
	Quick         bool    `json:"quick"`
	Phase         string  `json:"phase"`
	Warm          string  `json:"warm"`
	Conns         int     `json:"conns"`
	StreamWorkers int     `json:"stream_workers"`
	Rate          float64 `json:"rate"`
	StreamRate    float64 `json:"stream_rate"`
	ChunkDelayMs  int     `json:"chunk_delay_ms"`
	OLConns       int     `json:"open_loop_conns"`
}

type savedRun struct {
	Figures  map[string]map[string]float64 `json:"figures"`
	Notes    []string                      `json:"notes"`
	Failures []string                      `json:"failures"`
	Records  string                        `json:"records"`
	Load     [2]string                     `json:"load"`
}

func (r *report) toSaved() saved {
	p := r.plan
	s := saved{
		Started: r.started, Elapsed: r.elapsed.String(), GenCPUs: r.setup.genCPUs, SUTCPUs: r.setup.sutCPUs,
		Machine: r.machine, Versions: r.versions,
		Plan: savedPlan{Quick: p.quick, Phase: p.phase.String(), Warm: p.warm.String(), Conns: p.conns,
			StreamWorkers: p.streamWorkers, Rate: p.rate, StreamRate: p.streamRate, ChunkDelayMs: p.chunkDelayMs, OLConns: p.olConns},
	}
	for _, rd := range r.runs {
		s.Runs = append(s.Runs, savedRun{Figures: rd.figures, Notes: rd.notes, Failures: rd.failures, Records: rd.records, Load: rd.load})
	}
	return s
}

// loadReport reads a report saved by an earlier run.
func loadReport(path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var s saved
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	phase, err1 := time.ParseDuration(s.Plan.Phase)
	warm, err2 := time.ParseDuration(s.Plan.Warm)
	elapsed, err3 := time.ParseDuration(s.Elapsed)
	if err1 != nil || err2 != nil || err3 != nil || len(s.Runs) == 0 {
		return nil, fmt.Errorf("cannot use %s: missing durations or runs", path)
	}
	r := &report{
		plan: plan{quick: s.Plan.Quick, runs: len(s.Runs), phase: phase, warm: warm, conns: s.Plan.Conns,
			streamWorkers: s.Plan.StreamWorkers, rate: s.Plan.Rate, streamRate: s.Plan.StreamRate,
			chunkDelayMs: s.Plan.ChunkDelayMs, olConns: s.Plan.OLConns},
		setup:   &setup{genCPUs: s.GenCPUs, sutCPUs: s.SUTCPUs},
		started: s.Started, elapsed: elapsed, machine: s.Machine, versions: s.Versions,
	}
	for _, sr := range s.Runs {
		if sr.Figures == nil {
			sr.Figures = map[string]map[string]float64{}
		}
		r.runs = append(r.runs, &runData{figures: sr.Figures, notes: sr.Notes, failures: sr.Failures, records: sr.Records, load: sr.Load})
	}
	return r, nil
}
