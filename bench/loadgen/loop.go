package loadgen

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxErrors bounds the failure descriptions a Result keeps.
const maxErrors = 8

// Result is what one run measured. Duration slices are sorted ascending.
type Result struct {
	Sent   int // requests sent
	OK     int // answered 200 and passed the checks
	Failed int // Sent - OK
	Errors []string

	Latency []time.Duration // one per request, failed ones included
	TTFT    []time.Duration // streams: one per request that got an event
	Gaps    []time.Duration // streams: between successive content events
	Lag     []time.Duration // open loop: how late each request left its intended time

	Events   int64 // streams: data events received, [DONE] not counted
	Contents int64 // streams: events with content

	MaxInFlight int           // most requests open at once
	Elapsed     time.Duration // first send to last answer
}

// Rate is the answered requests per second over the run.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// recorder gathers outcomes from many goroutines.
type recorder struct {
	mu       sync.Mutex
	res      Result
	keepGaps bool
	inFlight atomic.Int64
	maxIn    atomic.Int64
}

func (rc *recorder) enter() {
	n := rc.inFlight.Add(1)
	for {
		m := rc.maxIn.Load()
		if n <= m || rc.maxIn.CompareAndSwap(m, n) {
			return
		}
	}
}

func (rc *recorder) leave() { rc.inFlight.Add(-1) }

func (rc *recorder) add(o *Outcome, stream bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	r := &rc.res
	r.Sent++
	r.Latency = append(r.Latency, o.Latency)
	if stream {
		r.Events += int64(o.Events)
		r.Contents += int64(o.Contents)
		if o.Events > 0 {
			r.TTFT = append(r.TTFT, o.TTFT)
		}
		if rc.keepGaps {
			r.Gaps = append(r.Gaps, o.Gaps...)
		}
	}
	if o.Err == nil {
		r.OK++
		return
	}
	r.Failed++
	if len(r.Errors) < maxErrors {
		msg := o.Err.Error()
		if !slices.Contains(r.Errors, msg) {
			r.Errors = append(r.Errors, msg)
		}
	}
}

func (rc *recorder) result(elapsed time.Duration) Result {
	r := rc.res
	r.Elapsed = elapsed
	r.MaxInFlight = int(rc.maxIn.Load())
	for _, s := range [][]time.Duration{r.Latency, r.TTFT, r.Gaps, r.Lag} {
		slices.Sort(s)
	}
	return r
}

// OpenLoop sends rate requests per second for d, each at its intended time
// whatever the state of the earlier ones, over up to conns keep-alive
// connections, and waits for every answer. Latency and TTFT count from the
// intended send time. Sequence numbers start at firstSeq.
func OpenLoop(r Request, rate float64, d time.Duration, conns int, firstSeq uint64) (Result, error) {
	if rate <= 0 || d <= 0 || conns <= 0 {
		return Result{}, fmt.Errorf("loadgen: rate %g, duration %s and conns %d must be positive", rate, d, conns)
	}
	n := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	hc := newClient(&r, conns)
	defer hc.CloseIdleConnections()
	rc := &recorder{keepGaps: true}
	rc.res.Lag = make([]time.Duration, 0, n)
	rc.res.Latency = make([]time.Duration, 0, n)

	var wg sync.WaitGroup
	p := newPacer()
	start := time.Now().Add(2 * time.Millisecond)
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		p.sleepUntil(due)
		lag := time.Since(due)
		rc.res.Lag = append(rc.res.Lag, lag) // only this goroutine appends Lag
		rc.enter()
		wg.Go(func() {
			x := exchangers.Get().(*exchanger)
			o := x.do(hc, &r, firstSeq+uint64(i), due)
			rc.leave()
			rc.add(&o, r.Stream)
			exchangers.Put(x)
		})
	}
	p.close()
	wg.Wait()
	return rc.result(time.Since(start)), nil
}

// ClosedLoop runs workers goroutines, each sending its next request as soon
// as its previous answer is complete, for d; requests open at the end are
// finished and counted. Latency counts from each actual send. Inter-chunk
// gaps are not kept. Sequence numbers start at firstSeq.
func ClosedLoop(r Request, workers int, d time.Duration, firstSeq uint64) (Result, error) {
	if workers <= 0 || d <= 0 {
		return Result{}, fmt.Errorf("loadgen: workers %d and duration %s must be positive", workers, d)
	}
	hc := newClient(&r, workers)
	defer hc.CloseIdleConnections()
	rc := &recorder{}
	var seq atomic.Uint64
	seq.Store(firstSeq)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			x := exchangers.Get().(*exchanger)
			defer exchangers.Put(x)
			for time.Now().Before(deadline) {
				rc.enter()
				o := x.do(hc, &r, seq.Add(1)-1, time.Now())
				rc.leave()
				rc.add(&o, r.Stream)
			}
		})
	}
	wg.Wait()
	return rc.result(time.Since(start)), nil
}

// Quantile is the q-quantile (0..1) of sorted by the nearest-rank method;
// 0 for an empty slice.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}
