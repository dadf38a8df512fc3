package proxy

import (
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/logsink"
)

// SinkStats is what /metrics reads from the record sink, when it has it.
type SinkStats interface {
	QueueDepth() int
	Written() uint64
	Spilled() uint64
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
	failures      throttle // "upstream failing" warnings
}

// throttle lets one log line through per interval and counts the rest, so
// an upstream that is down costs one line per interval, not one per request.
type throttle struct {
	next       atomic.Int64 // unix ns before which lines are suppressed
	suppressed atomic.Int64
}

// allow reports whether to log now, and how many lines were held back since
// the last one.
func (t *throttle) allow(now time.Time, every time.Duration) (bool, int64) {
	n := t.next.Load()
	if now.UnixNano() < n || !t.next.CompareAndSwap(n, now.Add(every).UnixNano()) {
		t.suppressed.Add(1)
		return false, 0
	}
	return true, t.suppressed.Swap(0)
}

func newServerMetrics(s *Server) *serverMetrics {
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
	name := `gptapi_requests_total{route="` + routeName(k.route) + `",model=` + strconv.Quote(k.model) +
		`,upstream=` + strconv.Quote(k.upstream) + `,status="` + strconv.Itoa(k.status) + `"}`
	c := m.set.GetOrCreateCounter(name)
	next := make(map[requestKey]*metrics.Counter, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = c
	m.requests.Store(&next)
	return c
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
		b = strconv.AppendQuote(b, up.cfg.Name)
		b = append(b, "} "...)
		b = strconv.AppendInt(b, int64(v), 10)
		b = append(b, '\n')
	}
	m.histMu.Lock()
	names := make([]string, 0, len(m.hists))
	for n := range m.hists {
		names = append(names, n)
	}
	m.histMu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		h := m.upstream(n)
		b = h.latency.appendPrometheus(b, "gptapi_upstream_latency_seconds", n)
	}
	for _, n := range names {
		h := m.upstream(n)
		b = h.ttft.appendPrometheus(b, "gptapi_ttft_seconds", n)
	}
	_, _ = w.Write(b)
}

func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	s.begin(ctx)
	ctx.SetContentType("text/plain; version=0.0.4")
	s.metrics.set.WritePrometheus(ctx)
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
	label := strconv.Quote(upstream)
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
