package selector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Load is one upstream's load as this gateway knows it: the requests it has
// open to the upstream, counted on the request path in an atomic, and the
// upstream's own queue as last read from its metrics endpoint. The zero
// value is idle and has no queue reading. It must not be copied after first
// use; the proxy keeps one Load per client name across config reloads.
type Load struct {
	inflight atomic.Int64
	waiting  atomic.Int64
	// readAt is when waiting was read, as an offset from epoch plus one;
	// 0 means never read, or the reading was dropped.
	readAt atomic.Int64
}

// Begin counts a request sent to the upstream; End counts it finished.
func (l *Load) Begin() { l.inflight.Add(1) }

// End counts a request finished.
func (l *Load) End() { l.inflight.Add(-1) }

// InFlight returns the requests open to the upstream.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// SetWaiting records a good reading of the upstream's queue taken at now.
func (l *Load) SetWaiting(n int64, now time.Time) {
	l.waiting.Store(n)
	l.readAt.Store(int64(now.Sub(epoch)) + 1)
}

// Waiting returns the upstream's queue when it was read within stale before
// now; ok is false otherwise.
func (l *Load) Waiting(now time.Time, stale time.Duration) (n int64, ok bool) {
	return l.waitingAt(int64(now.Sub(epoch)), int64(stale))
}

func (l *Load) waitingAt(at, stale int64) (int64, bool) {
	r := l.readAt.Load()
	if r == 0 || at-(r-1) > stale {
		return 0, false
	}
	return l.waiting.Load(), true
}

// Queue metric names: the requests waiting for a slot in the engine's batch.
const (
	VLLMQueueMetric   = "vllm:num_requests_waiting"
	SGLangQueueMetric = "sglang:num_queue_reqs"
)

// ErrNoQueueMetric is returned by ParseQueue when the text has neither
// queue metric.
var ErrNoQueueMetric = errors.New("selector: no " + VLLMQueueMetric + " or " + SGLangQueueMetric + " in the metrics")

// ParseQueue reads Prometheus text exposition from r and returns the
// upstream's queue: the sum of every series of vllm:num_requests_waiting, or
// else of sglang:num_queue_reqs (one server may report one series per model
// or engine). Text that does not parse, a missing metric, or a value that is
// NaN, infinite or negative is an error. Bound r: the whole text is parsed.
func ParseQueue(r io.Reader) (int64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return 0, err
	}
	for _, name := range [...]string{VLLMQueueMetric, SGLangQueueMetric} {
		if f := fams[name]; f != nil {
			return sumQueue(f)
		}
	}
	return 0, ErrNoQueueMetric
}

func sumQueue(f *dto.MetricFamily) (int64, error) {
	var sum float64
	for _, m := range f.GetMetric() {
		var v float64
		switch {
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			v = m.GetUntyped().GetValue()
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		default:
			return 0, fmt.Errorf("selector: %s is a %s, want a gauge", f.GetName(), f.GetType())
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return 0, fmt.Errorf("selector: %s is %v, want a count", f.GetName(), v)
		}
		sum += v
	}
	if sum > 1<<40 {
		return 0, fmt.Errorf("selector: %s is %v, want a plausible count", f.GetName(), sum)
	}
	return int64(math.Round(sum)), nil
}
