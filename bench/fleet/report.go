package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// report is one invocation's results.
type report struct {
	Plan     plan          `json:"plan"`
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"took_ns"`
	Commit   string        `json:"commit"`
	Requests int           `json:"requests"` // in the slice
	Ceiling  float64       `json:"ceiling"`  // the slice's ceiling hit share
	Runs     []run         `json:"runs"`
}

func (r *report) find(s string, kv int, load float64) *run {
	for i := range r.Runs {
		if x := &r.Runs[i]; x.Strategy == s && x.KV == kv && x.Load == load {
			return x
		}
	}
	return nil
}

// check lists what makes the report incomplete: a run missing, a request
// that failed, a figure that is zero.
func (r *report) check(sts []strategy) []string {
	var out []string
	for _, kv := range r.Plan.KVs {
		for _, load := range r.Plan.Loads {
			for _, s := range sts {
				x := r.find(s.Name, kv, load)
				where := fmt.Sprintf("%s at kv %d, load %g", s.Name, kv, load)
				if x == nil {
					out = append(out, where+": no run")
					continue
				}
				sm := &x.Summary
				if sm.Failed > 0 || sm.OK != r.Requests {
					out = append(out, fmt.Sprintf("%s: %d of %d requests failed: %s", where, r.Requests-sm.OK, r.Requests, strings.Join(sm.Errors, "; ")))
				}
				for name, v := range map[string]float64{"TTFT p50": sm.TTFTms.P50, "TTFT p99": sm.TTFTms.P99, "TPOT p50": sm.TPOTms.P50,
					"server TTFT p50": sm.ServerTTFTms.P50, "server TTFT p99": sm.ServerTTFTms.P99,
					"E2E p99": sm.E2Ems.P99, "hit share": sm.HitShare, "output rate": sm.OutputRate} {
					if !(v > 0) {
						out = append(out, fmt.Sprintf("%s: %s missing", where, name))
					}
				}
				if len(sm.Upstreams) == 0 {
					out = append(out, where+": no upstream named")
				}
			}
		}
	}
	return out
}

// rerender rewrites the .md and .svg of a saved report from its .json.
func rerender(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	stem := strings.TrimSuffix(path, ".json")
	if err := os.WriteFile(stem+".md", []byte(r.markdown(filepath.Base(stem)+".svg")), 0o644); err != nil {
		return err
	}
	return os.WriteFile(stem+".svg", []byte(r.svg()), 0o644)
}

// write puts fleet-latest.md, .json and .svg in dir, replacing the previous
// run's: the report carries its own date and commit, and git keeps the
// older ones.
func (r *report) write(dir string) ([]string, error) {
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stem := filepath.Join(dir, "fleet-latest")
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{stem + ".json": js, stem + ".md": []byte(r.markdown(filepath.Base(stem) + ".svg")), stem + ".svg": []byte(r.svg())}
	var paths []string
	for _, ext := range []string{".md", ".json", ".svg"} {
		if err := os.WriteFile(stem+ext, files[stem+ext], 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, stem+ext)
	}
	return paths, nil
}

func kvName(kv int) string {
	switch kv {
	case 147456:
		return "147,456 tokens a server (one A100 40GB)"
	case 8 * 147456:
		return "1,179,648 tokens a server (8x)"
	}
	return fmt.Sprintf("%d tokens a server", kv)
}

func (r *report) markdown(svg string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Fleet routing benchmark, %s", r.Started.Format("2006-01-02 15:04 UTC"))
	if r.Plan.Quick {
		p("\n**QUICK MODE**: a correctness check of the pipeline, not a measurement.")
	}
	p("")
	p("- trace: `%s`, from %s for %s: %d requests; its ceiling hit share (one server, infinite cache) is **%.1f%%**",
		r.Plan.Trace, r.Plan.Start, r.Plan.Length, r.Requests, 100*r.Ceiling)
	p("- fleet: %d simulated vLLM servers (bench/fleetsim, Llama-3.1-8B on one A100 40GB each), time compressed %gx; every run starts with cold caches", r.Plan.Servers, r.Plan.Speed)
	p("- load: the trace's arrival rate times %s", joinFloats(r.Plan.Loads))
	p("- gptapi %s, %d processes for \"prefix x3\" taking requests in turn; every time is simulated (wall time x %g)", r.Commit, 3, r.Plan.Speed)
	p("- %s on %d CPUs, the whole run took %s", runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), r.Took.Round(time.Second))
	p("")
	p("![chart](%s)", svg)
	for _, kv := range r.Plan.KVs {
		p("\n## KV cache %s\n", kvName(kv))
		head := "| strategy |"
		sep := "| --- |"
		for _, l := range r.Plan.Loads {
			head += fmt.Sprintf(" %gx server TTFT p50 / p99 (s) | %gx hit |", l, l)
			sep += " ---: | ---: |"
		}
		p("%s\n%s", head, sep)
		for _, s := range strategiesIn(r) {
			row := "| " + s + " |"
			for _, l := range r.Plan.Loads {
				if x := r.find(s, kv, l); x != nil {
					row += fmt.Sprintf(" %.2f / %.1f | %.1f%% |", x.Summary.ServerTTFTms.P50/1000, x.Summary.ServerTTFTms.P99/1000, 100*x.Summary.HitShare)
				} else {
					row += " – | – |"
				}
			}
			p("%s", row)
		}
		p("\n| strategy | load | ok | server TTFT p50 | p90 | p99 | client TTFT p50 | p99 | TPOT p50 | p99 | E2E p50 | p99 | hit share | output tok/s | sender late, max |")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, l := range r.Plan.Loads {
			for _, s := range strategiesIn(r) {
				x := r.find(s, kv, l)
				if x == nil {
					continue
				}
				m := &x.Summary
				p("| %s | %gx | %d/%d | %.0f ms | %.0f | %.0f | %.0f ms | %.0f | %.1f ms | %.1f | %.1f s | %.1f | %.1f%% | %.0f | %.0f ms wall |", s, l, m.OK, m.Requests,
					m.ServerTTFTms.P50, m.ServerTTFTms.P90, m.ServerTTFTms.P99, m.TTFTms.P50, m.TTFTms.P99,
					m.TPOTms.P50, m.TPOTms.P99, m.E2Ems.P50/1000, m.E2Ems.P99/1000, 100*m.HitShare, m.OutputRate, m.LagMaxMs)
			}
		}
	}
	p("\nServer TTFT: the simulator's own, from the request's arrival at a server to its first token, in simulated time: queueing and prefill exactly as simulated, untouched by wall-clock noise on this machine (which the time compression multiplies). Client TTFT: from the request's intended send time to its first content event as the client saw it, gateway and noise included.")
	p("\nSender late, max: how late, in wall time, the client sent its latest request (times the speed in simulated time). When it is large, the machine's CPUs were short during that run: arrivals bunched up and client TTFT counts the delay.")
	p("\nTPOT: first to last content event over the answer's tokens minus one (events carry several tokens). Hit share: `cached_tokens` over `prompt_tokens` as the servers reported them. round robin and precise talk to the servers directly; precise asks every server's cache before each request (bench/loadgen Oracle).")
	return b.String()
}

// strategiesIn is the strategies of the report, in run order.
func strategiesIn(r *report) []string {
	var out []string
	for _, x := range r.Runs {
		if !contains(out, x.Strategy) {
			out = append(out, x.Strategy)
		}
	}
	return out
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func joinFloats(fs []float64) string {
	var s []string
	for _, f := range fs {
		s = append(s, fmt.Sprintf("%g", f))
	}
	return strings.Join(s, ", ")
}
