package loadgen

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Oracle is the precise-placement reference router of the fleet benchmark:
// before each request it asks every simulated server (POST /sim/probe of
// bench/fleetsim) how many leading blocks of the prompt it holds and how
// much prefill is queued there, and sends the request to the longest
// holder unless that one is overloaded; then to the least loaded. It is
// what a router with perfect knowledge of every KV cache does (llm-d's
// precise prefix-cache scoring, fed by vLLM's KV events), so it bounds
// what a router guessing from outside can reach at that cache size.
//
// Load is the prefill tokens queued on a server (waiting and running, not
// yet computed) plus what this oracle sent there whose answer headers have
// not come back yet (the server has not queued it yet). The longest holder
// is overloaded when its load exceeds the least loaded server's by more
// than the prefill its cache saves over that server's.
type Oracle struct {
	addrs   []string
	hcs     []*fasthttp.HostClient
	mu      sync.Mutex
	pending []int64
}

// NewOracle makes the reference router over the simulated servers at addrs.
func NewOracle(addrs []string) *Oracle {
	o := &Oracle{addrs: addrs, pending: make([]int64, len(addrs))}
	for _, a := range addrs {
		o.hcs = append(o.hcs, &fasthttp.HostClient{Addr: a, MaxConns: 4096, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	}
	return o
}

// probeAnswer is the part of fleetsim's /sim/probe answer the oracle reads.
type probeAnswer struct {
	PromptTokens  int   `json:"prompt_tokens"`
	CachedTokens  int   `json:"cached_tokens"`
	QueuedPrefill int64 `json:"queued_prefill_tokens"`
}

func (o *Oracle) probe(k int, body []byte) (probeAnswer, error) {
	var pa probeAnswer
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/sim/probe")
	req.Header.SetHost(o.addrs[k])
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	if err := o.hcs[k].Do(req, resp); err != nil {
		return pa, fmt.Errorf("probe %s: %w", o.addrs[k], err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return pa, fmt.Errorf("probe %s: status %d: %.200s", o.addrs[k], resp.StatusCode(), resp.Body())
	}
	if err := json.Unmarshal(resp.Body(), &pa); err != nil {
		return pa, fmt.Errorf("probe %s: %w", o.addrs[k], err)
	}
	return pa, nil
}

// Route probes every server at once and picks one.
func (o *Oracle) Route(i int, body []byte) (string, func(), error) {
	n := len(o.addrs)
	pas := make([]probeAnswer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() { pas[k], errs[k] = o.probe(k, body) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", nil, err
		}
	}
	o.mu.Lock()
	load := make([]int64, n)
	for k := range n {
		load[k] = pas[k].QueuedPrefill + o.pending[k]
	}
	k := pick(i, load, pas)
	add := int64(pas[k].PromptTokens - pas[k].CachedTokens)
	o.pending[k] += add
	o.mu.Unlock()
	var once sync.Once
	return o.addrs[k], func() {
		once.Do(func() {
			o.mu.Lock()
			o.pending[k] -= add
			o.mu.Unlock()
		})
	}, nil
}

// pick is the oracle's rule; ties go round from server i mod n, so that
// equal servers share the requests.
func pick(i int, load []int64, pas []probeAnswer) int {
	n := len(load)
	h, m := -1, -1
	for j := range n {
		k := (i + j) % n
		if h < 0 || pas[k].CachedTokens > pas[h].CachedTokens || (pas[k].CachedTokens == pas[h].CachedTokens && load[k] < load[h]) {
			h = k
		}
		if m < 0 || load[k] < load[m] {
			m = k
		}
	}
	if load[h]-load[m] > int64(pas[h].CachedTokens-pas[m].CachedTokens) {
		return m
	}
	return h
}

var _ Router = (*Oracle)(nil)
var _ Router = Fixed("")
var _ Router = RoundRobin(nil)
