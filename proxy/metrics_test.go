package proxy

import (
	"bufio"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// promSample is one parsed line of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	promLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)$`)
	promLabel = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)`)
)

// parseProm parses the exposition format strictly: Prometheus's own parser
// must take it whole, and every line must be a comment or a well-formed
// sample, or it fails the test.
func parseProm(t *testing.T, text string) []promSample {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(text)); err != nil {
		t.Fatalf("Prometheus's parser refuses the exposition: %v", err)
	}
	var out []promSample
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a Prometheus sample line: %q", line)
		}
		s := promSample{name: m[1], labels: map[string]string{}}
		for rest := m[3]; rest != ""; {
			lm := promLabel.FindStringSubmatch(rest)
			if lm == nil {
				t.Fatalf("bad labels in %q at %q", line, rest)
			}
			v, err := strconv.Unquote(`"` + lm[2] + `"`)
			if err != nil {
				t.Fatalf("bad label value in %q: %v", line, err)
			}
			s.labels[lm[1]] = v
			rest = rest[len(lm[0]):]
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

func promValue(samples []promSample, name string, labels map[string]string) (float64, bool) {
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

func scrape(t *testing.T, addr string) []promSample {
	t.Helper()
	status, body, err := fasthttp.Get(nil, "http://"+addr+"/metrics")
	if err != nil || status != 200 {
		t.Fatalf("GET /metrics: %d %v", status, err)
	}
	return parseProm(t, string(body))
}

func TestMetricsMoveByExactly(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"content":"ok"}}]}`)
	})
	cfg := testConfig(up)
	srv, addr := startProxy(t, cfg, nil)
	before := scrape(t, addr)
	for i := 0; i < 3; i++ {
		if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
	}
	post(t, addr, "/v1/chat/completions", `{"model":"unknown-model","messages":[{"role":"user","content":"x"}]}`)
	post(t, addr, "/v1/chat/completions", `{"model":5}`)
	srv.CountReload(true)
	srv.CountReload(false)
	srv.CountReload(false)
	after := scrape(t, addr)

	delta := func(name string, labels map[string]string) float64 {
		a, ok := promValue(after, name, labels)
		if !ok {
			t.Fatalf("%s%v missing from /metrics", name, labels)
		}
		b, _ := promValue(before, name, labels)
		return a - b
	}
	f := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if got := delta(name, labels); got != want {
			t.Errorf("%s%v moved by %v, want %v", name, labels, got, want)
		}
	}
	// model is the model_match value that matched, else "other": never the
	// caller's own text.
	f("gptapi_requests_total", map[string]string{"route": "chat", "model": "qwen", "upstream": "up0", "status": "200"}, 3)
	f("gptapi_requests_total", map[string]string{"route": "chat", "model": "other", "upstream": "", "status": "404"}, 1)
	f("gptapi_requests_total", map[string]string{"route": "chat", "model": "other", "upstream": "", "status": "400"}, 1)
	f("gptapi_upstream_latency_seconds_count", map[string]string{"upstream": "up0"}, 3)
	f("gptapi_ttft_seconds_count", map[string]string{"upstream": "up0"}, 3)
	f("gptapi_upstream_latency_seconds_bucket", map[string]string{"upstream": "up0", "le": "+Inf"}, 3)
	f("gptapi_config_reloads_total", map[string]string{"result": "ok"}, 1)
	f("gptapi_config_reloads_total", map[string]string{"result": "error"}, 2)
	if v, ok := promValue(after, "gptapi_upstream_cooldown", map[string]string{"upstream": "up0"}); !ok || v != 0 {
		t.Errorf("cooldown gauge %v %v", v, ok)
	}
	if _, ok := promValue(after, "gptapi_active_streams", map[string]string{}); !ok {
		t.Error("gptapi_active_streams missing")
	}
	// Buckets are cumulative.
	prev := -1.0
	for _, le := range []string{"0.001", "0.01", "0.1", "1", "10", "60", "+Inf"} {
		v, ok := promValue(after, "gptapi_upstream_latency_seconds_bucket", map[string]string{"upstream": "up0", "le": le})
		if !ok || v < prev {
			t.Fatalf("bucket le=%s: %v %v (prev %v)", le, v, ok, prev)
		}
		prev = v
	}
}

func TestServerTiming(t *testing.T) {
	f := func(up, total, want string) {
		t.Helper()
		u, _ := time.ParseDuration(up)
		tt, _ := time.ParseDuration(total)
		if got := string(appendServerTiming(nil, u, tt)); got != want {
			t.Errorf("got %q want %q", got, want)
		}
	}
	f("12.345ms", "12.400ms", "upstream;dur=12.345, gptapi;dur=0.055")
	f("0s", "51us", "upstream;dur=0.000, gptapi;dur=0.051")
	f("5ms", "4ms", "upstream;dur=5.000, gptapi;dur=0.000")
}

// TestMetricsExposition holds SPEC §4.6: every family comes together,
// preceded by a non-empty # HELP and a # TYPE, histograms with their
// _bucket, _sum and _count under the one family.
func TestMetricsExposition(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"content":"ok"}}]}`)
	})
	srv, addr := startProxy(t, testConfig(up), nil)
	if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	srv.CountReload(true)
	_, body, err := fasthttp.Get(nil, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parseProm(t, string(body))
	help, typ := map[string]string{}, map[string]string{}
	done := map[string]bool{}
	cur := ""
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		f := strings.Fields(line)
		if f[0] == "#" {
			if len(f) < 4 {
				t.Fatalf("metadata line without text: %q", line)
			}
			if f[1] == "HELP" {
				if done[f[2]] || help[f[2]] != "" {
					t.Fatalf("family %s described twice", f[2])
				}
				help[f[2]] = strings.Join(f[3:], " ")
				if cur != "" {
					done[cur] = true
				}
				cur = f[2]
			} else {
				typ[f[2]] = f[3]
			}
			continue
		}
		name := f[0][:strings.IndexAny(f[0]+"{", "{")]
		fam := name
		if typ[cur] == "histogram" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && b == cur {
					fam = b
				}
			}
		}
		if fam != cur || help[fam] == "" || typ[fam] == "" {
			t.Fatalf("sample %q outside its family's block (in %q)", line, cur)
		}
	}
	f := func(name, want string) {
		t.Helper()
		if typ[name] != want {
			t.Errorf("# TYPE %s = %q, want %q", name, typ[name], want)
		}
	}
	f("gptapi_requests_total", "counter")
	f("gptapi_config_reloads_total", "counter")
	f("gptapi_active_streams", "gauge")
	f("gptapi_upstream_cooldown", "gauge")
	f("gptapi_upstream_latency_seconds", "histogram")
	f("gptapi_ttft_seconds", "histogram")
}

func TestAppendExposition(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := string(appendExposition(nil, []byte(in))); got != want {
			t.Errorf("appendExposition(%q)\ngot  %q\nwant %q", in, got, want)
		}
	}
	// An undescribed family takes the library's type, else untyped; a
	// family split in two comes together.
	f("# HELP x_total\n# TYPE x_total counter\nx_total 1\ny 2\nx_total{a=\"b\"} 3\n",
		"# HELP x_total gptapi metric x_total.\n# TYPE x_total counter\nx_total 1\nx_total{a=\"b\"} 3\n"+
			"# HELP y gptapi metric y.\n# TYPE y untyped\ny 2\n")
	f("gptapi_ttft_seconds_bucket{le=\"+Inf\"} 1\ngptapi_ttft_seconds_sum 0.5\ngptapi_ttft_seconds_count 1\n",
		"# HELP gptapi_ttft_seconds "+families["gptapi_ttft_seconds"].help+"\n# TYPE gptapi_ttft_seconds histogram\n"+
			"gptapi_ttft_seconds_bucket{le=\"+Inf\"} 1\ngptapi_ttft_seconds_sum 0.5\ngptapi_ttft_seconds_count 1\n")
	f("", "")
}

// Label values are written in the exposition format's escapes only (\\,
// \", \n): a client name or model_match value with a tab or a character
// Go's quoting deems unprintable (\t, \u200b) must not make the whole
// scrape unreadable.
func TestMetricsLabelValues(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"content":"ok"}}]}`)
	})
	cfg := testConfig(up)
	name, match := "fleet\tA \"q\" \\ \u200b\n", "qwen\u200b\x01"
	cfg.Clients[0].Name, cfg.Clients[0].Match.Value = name, []string{match}
	_, addr := startProxy(t, cfg, nil)
	body := `{"model":"qwen\u200b\u0001-7b","messages":[{"role":"user","content":"hi"}]}`
	if status, _, got := post(t, addr, "/v1/chat/completions", body); status != 200 {
		t.Fatalf("%d %s", status, got)
	}
	samples := scrape(t, addr)
	if v, ok := promValue(samples, "gptapi_requests_total", map[string]string{"route": "chat", "model": match, "upstream": name, "status": "200"}); !ok || v != 1 {
		t.Fatalf("gptapi_requests_total for %q via %q: %v %v", match, name, v, ok)
	}
	if _, ok := promValue(samples, "gptapi_upstream_cooldown", map[string]string{"upstream": name}); !ok {
		t.Fatalf("no gptapi_upstream_cooldown for %q", name)
	}
}

// A sub-millisecond answer reaches the histograms as what it took, not as
// 0: durations stay durations from the clock to Observe.
func TestHistogramsKeepSubMillisecond(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	s.metrics = newServerMetrics(s)
	up := &upstream{cfg: &configs.Client{Name: "fast"}, hists: new(upstreamStats)}
	rec := logsink.AcquireRecord()
	defer logsink.ReleaseRecord(rec)
	rec.Endpoint, rec.Status = logsink.Chat, 200
	rec.TTFT, rec.Latency = 300*time.Microsecond, 450*time.Microsecond
	var attrs []slog.Attr
	s.account(rec, up, 400*time.Microsecond, 2, &attrs)
	if got := time.Duration(up.hists.latency.sumNs.Load()); got != 400*time.Microsecond {
		t.Errorf("latency histogram sum %v, want 400µs", got)
	}
	if got := time.Duration(up.hists.ttft.sumNs.Load()); got != 300*time.Microsecond {
		t.Errorf("ttft histogram sum %v, want 300µs", got)
	}
	if got := up.hists.latency.counts[0].Load(); got != 1 {
		t.Errorf("le=0.001 latency bucket %d, want 1", got)
	}

	// Through a real exchange: a local upstream answers in well under a
	// millisecond of its own, so a sum of 0 means the durations were cut
	// to whole milliseconds on the way.
	u := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"content":"ok"}}]}`)
	})
	_, addr := startProxy(t, testConfig(u), nil)
	if status, _, body := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	m := scrape(t, addr)
	for _, name := range []string{"gptapi_upstream_latency_seconds_sum", "gptapi_ttft_seconds_sum"} {
		if v, ok := promValue(m, name, map[string]string{"upstream": "up0"}); !ok || v <= 0 {
			t.Errorf("%s = %v (%v), want above 0", name, v, ok)
		}
	}
}

// A reload that removes or renames an upstream drops its series; the
// upstreams kept keep their counts and histograms.
func TestMetricsForgetRemovedUpstreams(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"choices":[{"index":0,"message":{"content":"ok"}}]}`)
	})
	cfg := testConfig(up, up)
	cfg.Clients[1].Match.Value = []string{"llama"}
	srv, addr := startProxy(t, cfg, nil)
	for _, model := range []string{"qwen", "llama"} {
		if status, _, body := post(t, addr, "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"x"}]}`); status != 200 {
			t.Fatalf("%s: %d %s", model, status, body)
		}
	}
	next := testConfig(up)
	if err := srv.Apply(next); err != nil {
		t.Fatal(err)
	}
	text := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64 // -1: absent
	}{
		{"gptapi_requests_total", map[string]string{"route": "chat", "model": "qwen", "upstream": "up0", "status": "200"}, 1},
		{"gptapi_upstream_latency_seconds_count", map[string]string{"upstream": "up0"}, 1},
		{"gptapi_requests_total", map[string]string{"route": "chat", "model": "llama", "upstream": "up1", "status": "200"}, -1},
		{"gptapi_upstream_latency_seconds_count", map[string]string{"upstream": "up1"}, -1},
		{"gptapi_ttft_seconds_count", map[string]string{"upstream": "up1"}, -1},
		{"gptapi_upstream_cooldown", map[string]string{"upstream": "up1"}, -1},
	} {
		v, ok := promValue(text, c.name, c.labels)
		if c.want < 0 && ok || c.want >= 0 && (!ok || v != c.want) {
			t.Errorf("%s%v: %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	for _, smp := range text {
		if smp.labels["upstream"] == "up1" {
			t.Errorf("a series of the removed upstream up1 is left: %s%v", smp.name, smp.labels)
		}
	}
}
