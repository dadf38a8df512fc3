package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/selector"
)

// poller reads every client's metrics_url each routing.poll_interval, in
// the background, and stores the queue it reports in the client's Load
// (SPEC §4.7). A read that fails, is slow (bounded by the interval, at most
// maxPollWait), too large (maxMetricsBytes) or says nothing usable is
// ignored: the last good reading stays until it is three intervals old.
// Each client's failures are logged once per failureLogEvery. Nothing on
// the request path waits for it.
type poller struct {
	s      *Server
	client *fasthttp.Client
	kick   chan struct{} // a reload: read the new config's URLs now
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
}

const (
	// maxPollWait bounds one read of a metrics_url.
	maxPollWait = 2 * time.Second
	// maxMetricsBytes bounds a metrics text: vLLM's is ~100 KB.
	maxMetricsBytes = 4 << 20
)

var errMetricsStatus = errors.New("metrics_url answered a status other than 200")

func newPoller(s *Server) *poller {
	return &poller{
		s: s,
		client: &fasthttp.Client{
			Name:                     "gptapi",
			NoDefaultUserAgentHeader: true,
			MaxResponseBodySize:      maxMetricsBytes,
			MaxConnsPerHost:          4,
			MaxIdleConnDuration:      4 * time.Second,
			ReadBufferSize:           16 << 10,
		},
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// start runs the poller in the background, once; not after close.
func (p *poller) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.stopped {
		return
	}
	p.started = true
	go p.run()
}

// run polls until stop is closed.
func (p *poller) run() {
	defer close(p.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		case <-p.kick:
			t.Stop()
		}
		st := p.s.state.Load()
		iv := st.cfg.Routing.PollInterval
		start := time.Now()
		p.pollAll(st, min(iv, maxPollWait))
		t.Reset(max(iv-time.Since(start), 0))
	}
}

// refresh makes the poller read the config in force now.
func (p *poller) refresh() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// close stops the poller and waits for a read under way to end.
func (p *poller) close() {
	p.mu.Lock()
	started, stopped := p.started, p.stopped
	p.stopped = true
	p.mu.Unlock()
	if stopped {
		return
	}
	close(p.stop)
	if started {
		<-p.done
	}
}

// pollAll reads every metrics_url of st at once and returns when all are
// done or timed out.
func (p *poller) pollAll(st *state, timeout time.Duration) {
	var wg sync.WaitGroup
	for _, up := range st.upstreams {
		if up.cfg.MetricsURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.poll(up, timeout)
		}()
	}
	wg.Wait()
}

func (p *poller) poll(up *upstream, timeout time.Duration) {
	n, err := readQueue(p.client, up.cfg.MetricsURL, timeout)
	now := time.Now()
	if err == nil {
		up.hists.load.SetWaiting(n, now)
		return
	}
	if ok, held := up.hists.polls.Allow(now, failureLogEvery); ok {
		p.s.log.Warn("metrics_url unreadable; routing goes on without its queue", "upstream", up.cfg.Name,
			"err", err, "more_since_last_line", held)
	}
}

// readQueue fetches url and returns the queue its Prometheus text reports.
func readQueue(c *fasthttp.Client, url string, timeout time.Duration) (int64, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.Set(fasthttp.HeaderAccept, "text/plain;version=0.0.4")
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "identity")
	if err := c.DoTimeout(req, resp, timeout); err != nil {
		return 0, err
	}
	if s := resp.StatusCode(); s != fasthttp.StatusOK {
		return 0, errors.New(errMetricsStatus.Error() + ": " + strconv.Itoa(s))
	}
	// Identity was asked for; a compressed text is refused rather than
	// inflated without a bound.
	if ce := resp.Header.ContentEncoding(); len(ce) > 0 && string(ce) != "identity" {
		return 0, errors.New("metrics_url answered with Content-Encoding " + strconv.Quote(string(ce)))
	}
	return selector.ParseQueue(bytes.NewReader(resp.Body()))
}
