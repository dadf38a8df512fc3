package proxy

import (
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/internal/throttle"
	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/selector"
)

// SinkStats is what /metrics reads from the record sink, when it has it
// (logsink.Sink does; a test's sink need not).
type SinkStats interface {
	QueueDepth() int
	Written() uint64
	Spilled() uint64
	Dropped() uint64
}

// serverMetrics is everything /metrics shows (SPEC §4.6). Counters and
// histograms are atomics reached without a map lookup or lock on the request
// path: histograms hang off each upstream, request counters come from a
// copy-on-write map read through an atomic pointer.
type serverMetrics struct {
	set      *metrics.Set
	requests atomic.Pointer[map[requestKey]*metrics.Counter]
	mu       sync.Mutex // serializes adds to requests
	reloadOK *metrics.Counter
	reloadNo *metrics.Counter
	active   atomic.Int64

	histMu sync.Mutex
	hists  map[string]*upstreamStats // by upstream name, kept across reloads

	routes [selector.NumReasons]atomic.Uint64 // gptapi_route_total by reason
}

// requestKey labels gptapi_requests_total. model is the model_match value
// that matched, or "other" (selector.Table.Label): a string of the config,
// never the caller's, so neither the count nor the size of the series is
// in a caller's hands. The count is still capped (maxRequestSeries) against
// configs with huge value lists.
type requestKey struct {
	route    logsink.Endpoint
	status   int
	upstream string
	model    string
}

const maxRequestSeries = 2000

type upstreamStats struct {
	latency, ttft histogram
	failures      throttle.Log // "upstream failing" warnings
	// Routing (route.go, poll.go): in-flight requests and the queue read
	// from metrics_url, its unreadable warnings, cached prompt tokens.
	load   selector.Load
	polls  throttle.Log
	cached atomic.Uint64
}

func newServerMetrics(s *Server) *serverMetrics {
	// The library's own # TYPE lines are hints for families missing from
	// families (appendExposition).
	metrics.ExposeMetadata(true)
	m := &serverMetrics{set: metrics.NewSet(), hists: make(map[string]*upstreamStats)}
	empty := make(map[requestKey]*metrics.Counter)
	m.requests.Store(&empty)
	m.reloadOK = m.set.NewCounter(`gptapi_config_reloads_total{result="ok"}`)
	m.reloadNo = m.set.NewCounter(`gptapi_config_reloads_total{result="error"}`)
	m.set.NewGauge("gptapi_active_streams", func() float64 { return float64(m.active.Load()) })
	if st, ok := s.sink.(SinkStats); ok {
		m.set.NewGauge("gptapi_logsink_queue_depth", func() float64 { return float64(st.QueueDepth()) })
		m.set.NewGauge("gptapi_logsink_written_total", func() float64 { return float64(st.Written()) })
		m.set.NewGauge("gptapi_logsink_spilled_total", func() float64 { return float64(st.Spilled()) })
		m.set.NewGauge("gptapi_logsink_dropped_total", func() float64 { return float64(st.Dropped()) })
	}
	m.set.RegisterMetricsWriter(func(w io.Writer) { m.writeDynamic(w, s) })
	return m
}

// upstream returns the histograms of the named upstream, made once.
func (m *serverMetrics) upstream(name string) *upstreamStats {
	m.histMu.Lock()
	defer m.histMu.Unlock()
	h := m.hists[name]
	if h == nil {
		h = new(upstreamStats)
		m.hists[name] = h
	}
	return h
}

// countRequest adds one to gptapi_requests_total. No allocation once the
// series exists.
func (m *serverMetrics) countRequest(route logsink.Endpoint, model, upstream string, status int) {
	k := requestKey{route: route, status: status, upstream: upstream, model: model}
	if c := (*m.requests.Load())[k]; c != nil {
		c.Inc()
		return
	}
	m.addSeries(k).Inc()
}

func (m *serverMetrics) addSeries(k requestKey) *metrics.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.requests.Load()
	if len(old) >= maxRequestSeries {
		k.model = "other"
	}
	if c := old[k]; c != nil {
		return c
	}
	c := m.set.GetOrCreateCounter(k.series())
	next := make(map[requestKey]*metrics.Counter, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = c
	m.requests.Store(&next)
	return c
}

func (k requestKey) series() string {
	return `gptapi_requests_total{route="` + routeName(k.route) + `",model=` + string(appendLabelValue(nil, k.model)) +
		`,upstream=` + string(appendLabelValue(nil, k.upstream)) + `,status="` + strconv.Itoa(k.status) + `"}`
}

// forget drops the series of the upstreams a reload removed or renamed:
// /metrics shows the fleet as configured, and a config whose clients are
// renamed now and then does not grow it without end. The upstreams kept go
// on with their histograms and counts. A request of the old config still
// running may add its series back, until the next reload.
func (m *serverMetrics) forget(st *state) {
	kept := make(map[string]bool, len(st.upstreams))
	for _, up := range st.upstreams {
		kept[up.cfg.Name] = true
	}
	m.histMu.Lock()
	for n := range m.hists {
		if !kept[n] {
			delete(m.hists, n)
		}
	}
	m.histMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.requests.Load()
	next := make(map[requestKey]*metrics.Counter, len(old))
	for k, c := range old {
		if k.upstream == "" || kept[k.upstream] {
			next[k] = c
			continue
		}
		m.set.UnregisterMetric(k.series())
	}
	m.requests.Store(&next)
}

// appendLabelValue appends s as a quoted label value of the Prometheus text
// format, which has three escapes (\\, \", \n): strconv.Quote's others (\t,
// \x01, \u200b) make Prometheus and promtool refuse the whole scrape. The
// values are config strings (client names, model_match values); a byte
// that is not UTF-8 becomes U+FFFD.
func appendLabelValue(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

func routeName(e logsink.Endpoint) string {
	if e == 0 {
		return "other"
	}
	return e.String()
}

// CountReload is the config watcher's result hook.
func (s *Server) CountReload(ok bool) {
	if ok {
		s.metrics.reloadOK.Inc()
	} else {
		s.metrics.reloadNo.Inc()
	}
}

func (m *serverMetrics) writeDynamic(w io.Writer, s *Server) {
	st := s.state.Load()
	now := time.Now()
	var b []byte
	for i, up := range st.upstreams {
		v := 0
		if st.table.Health(i).Cooling(now) {
			v = 1
		}
		b = append(b, `gptapi_upstream_cooldown{upstream=`...)
		b = appendLabelValue(b, up.cfg.Name)
		b = append(b, "} "...)
		b = strconv.AppendInt(b, int64(v), 10)
		b = append(b, '\n')
	}
	b = m.appendRouting(b, st, now)
	m.histMu.Lock()
	names := make([]string, 0, len(m.hists))
	for n := range m.hists {
		names = append(names, n)
	}
	slices.Sort(names)
	hs := make([]*upstreamStats, len(names))
	for i, n := range names {
		hs[i] = m.hists[n]
	}
	m.histMu.Unlock()
	for i, n := range names {
		b = hs[i].latency.appendPrometheus(b, "gptapi_upstream_latency_seconds", n)
	}
	for i, n := range names {
		b = hs[i].ttft.appendPrometheus(b, "gptapi_ttft_seconds", n)
	}
	_, _ = w.Write(b)
}

func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	s.begin(ctx)
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	var raw bytes.Buffer
	s.metrics.set.WritePrometheus(&raw)
	ctx.SetBody(appendExposition(nil, raw.Bytes()))
}

// family is the metadata of one metric family on /metrics.
type family struct{ typ, help string }

// families gives every family gptapi shows its # TYPE and # HELP (SPEC
// §4.6): add the line with the metric. A family missing here still gets
// both (the type the metrics library declared, else untyped, and a generic
// help), so /metrics stays valid exposition whatever is added to it.
var families = map[string]family{
	"gptapi_requests_total":             {"counter", "Requests answered, by route, model_match value that matched, upstream and status."},
	"gptapi_upstream_latency_seconds":   {"histogram", "Time from sending the request to the upstream that served it to the last byte of its answer, by that upstream."},
	"gptapi_ttft_seconds":               {"histogram", "Time from the request's arrival to the first byte of the answer (first content chunk for streams), by upstream."},
	"gptapi_active_streams":             {"gauge", "Streams being relayed now."},
	"gptapi_logsink_queue_depth":        {"gauge", "Request records waiting in memory for the database writer."},
	"gptapi_logsink_written_total":      {"counter", "Request records committed to the database."},
	"gptapi_logsink_spilled_total":      {"counter", "Request records written to the spill folder instead of the queue."},
	"gptapi_logsink_dropped_total":      {"counter", "Request records lost because the database and the spill folder both refused them."},
	"gptapi_config_reloads_total":       {"counter", "Config reloads, by result."},
	"gptapi_upstream_cooldown":          {"gauge", "1 while the upstream is in cooldown after consecutive failures, else 0."},
	"gptapi_upstream_inflight":          {"gauge", "Requests this gptapi has open to the upstream."},
	"gptapi_upstream_waiting":           {"gauge", "Requests waiting in the upstream's queue, as last read from its metrics_url."},
	"gptapi_route_total":                {"counter", "Requests by why their first upstream was first (the record's route)."},
	"gptapi_prompt_cached_tokens_total": {"counter", "Prompt tokens the upstream reported as served from its cache."},
}

// appendExposition appends the Prometheus text of src with every family
// together and preceded by its # HELP and # TYPE lines. Metadata lines in
// src (the metrics library's, when enabled) are read as hints and replaced.
// Not on the request path: it allocates freely.
func appendExposition(dst, src []byte) []byte {
	type fam struct {
		name  string
		lines []byte
	}
	var order []*fam
	byName := make(map[string]*fam)
	hintType := make(map[string]string)
	hintHelp := make(map[string]string)
	typeOf := func(name string) string {
		if f, ok := families[name]; ok {
			return f.typ
		}
		return hintType[name]
	}
	for len(src) > 0 {
		line := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i], src[i+1:]
		} else {
			src = nil
		}
		line = bytes.TrimRight(line, "\r ")
		if len(line) == 0 {
			continue
		}
		if line[0] == '#' {
			f := strings.Fields(string(line))
			if len(f) >= 3 && f[1] == "TYPE" {
				hintType[f[2]] = f[len(f)-1]
			} else if len(f) >= 4 && f[1] == "HELP" {
				hintHelp[f[2]] = strings.Join(f[3:], " ")
			}
			continue
		}
		end := bytes.IndexAny(line, "{ ")
		if end < 0 {
			continue // not a sample
		}
		name := string(line[:end])
		for _, suf := range [...]string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok {
				if t := typeOf(base); t == "histogram" || t == "summary" {
					name = base
				}
				break
			}
		}
		f := byName[name]
		if f == nil {
			f = &fam{name: name}
			byName[name] = f
			order = append(order, f)
		}
		f.lines = append(append(f.lines, line...), '\n')
	}
	for _, f := range order {
		d, ok := families[f.name]
		if !ok {
			d = family{typ: hintType[f.name], help: hintHelp[f.name]}
		}
		if d.typ == "" {
			d.typ = "untyped"
		}
		if d.help == "" {
			d.help = "gptapi metric " + f.name + "."
		}
		dst = append(dst, "# HELP "...)
		dst = append(dst, f.name...)
		dst = append(dst, ' ')
		dst = appendHelpText(dst, d.help)
		dst = append(dst, "\n# TYPE "...)
		dst = append(dst, f.name...)
		dst = append(dst, ' ')
		dst = append(dst, d.typ...)
		dst = append(dst, '\n')
		dst = append(dst, f.lines...)
	}
	return dst
}

// appendHelpText escapes a # HELP text as the format asks: backslash and
// line feed.
func appendHelpText(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			dst = append(dst, `\\`...)
		case '\n':
			dst = append(dst, `\n`...)
		default:
			dst = append(dst, s[i])
		}
	}
	return dst
}

// bucketBounds are the histogram's upper bounds in seconds: 1 ms to 60 s,
// about three per decade, the range of an LLM's first token and answer.
var bucketBounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// histogram is a Prometheus histogram with fixed le buckets in atomics:
// Observe is a few atomic adds, no lock, no allocation.
type histogram struct {
	counts [len(bucketBounds) + 1]atomic.Uint64 // last: above every bound
	sumNs  atomic.Uint64
}

func (h *histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	s := d.Seconds()
	i := 0
	for i < len(bucketBounds) && s > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(d))
}

func (h *histogram) appendPrometheus(b []byte, name, upstream string) []byte {
	var cum uint64
	label := appendLabelValue(nil, upstream)
	for i := range h.counts {
		cum += h.counts[i].Load()
		b = append(b, name...)
		b = append(b, `_bucket{upstream=`...)
		b = append(b, label...)
		b = append(b, `,le="`...)
		if i < len(bucketBounds) {
			b = strconv.AppendFloat(b, bucketBounds[i], 'g', -1, 64)
		} else {
			b = append(b, "+Inf"...)
		}
		b = append(b, `"} `...)
		b = strconv.AppendUint(b, cum, 10)
		b = append(b, '\n')
	}
	b = append(b, name...)
	b = append(b, `_sum{upstream=`...)
	b = append(b, label...)
	b = append(b, "} "...)
	b = strconv.AppendFloat(b, float64(h.sumNs.Load())/1e9, 'g', -1, 64)
	b = append(b, '\n')
	b = append(b, name...)
	b = append(b, `_count{upstream=`...)
	b = append(b, label...)
	b = append(b, "} "...)
	b = strconv.AppendUint(b, cum, 10)
	return append(b, '\n')
}

// The sink is found to have SinkStats at run time: a renamed method must
// fail the build, not drop the gauges.
var (
	_ RecordSink = (*logsink.Sink)(nil)
	_ SinkStats  = (*logsink.Sink)(nil)
)
