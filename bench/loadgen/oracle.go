package loadgen

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Oracle is the precise-placement reference router of the fleet benchmark:
// before each request it asks the simulated servers (bench/fleetsim) how
// many leading blocks of the prompt each holds and how much prefill is
// queued on each, and sends the request to the longest holder unless that
// one is overloaded; then to the least loaded. It is what a router with
// perfect knowledge of every KV cache does (llm-d's precise prefix-cache
// scoring, fed by vLLM's KV events), so it bounds what a router guessing
// from outside can reach at that cache size. It asks once per request:
// POST /sim/probe-fleet to the first server answers for every server of
// its process (the probe of each, for one parse of the prompt).
//
// Load is the prefill tokens queued on a server (waiting and running, not
// yet computed) plus what this oracle sent there whose answer headers have
// not come back yet (the server has not queued it yet). The longest holder
// is overloaded when its load exceeds the least loaded server's by more
// than the prefill its cache saves over that server's.
type Oracle struct {
	addrs   []string
	hc      *fasthttp.HostClient
	mu      sync.Mutex
	pending []int64
}

// NewOracle makes the reference router over the simulated servers at
// addrs, all of one fleetsim process.
func NewOracle(addrs []string) *Oracle {
	return &Oracle{addrs: addrs, pending: make([]int64, len(addrs)),
		hc: &fasthttp.HostClient{Addr: addrs[0], MaxConns: 4096, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}}
}

// probeAnswer is the part of fleetsim's probe answer the oracle reads.
type probeAnswer struct {
	Addr          string `json:"addr"`
	PromptTokens  int    `json:"prompt_tokens"`
	CachedTokens  int    `json:"cached_tokens"`
	QueuedPrefill int64  `json:"queued_prefill_tokens"`
}

// probe asks the fleet about body; the answers come in o.addrs order.
func (o *Oracle) probe(body []byte) ([]probeAnswer, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/sim/probe-fleet")
	req.Header.SetHost(o.addrs[0])
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	if err := o.hc.Do(req, resp); err != nil {
		return nil, fmt.Errorf("probe %s: %w", o.addrs[0], err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("probe %s: status %d: %.200s", o.addrs[0], resp.StatusCode(), resp.Body())
	}
	var got []probeAnswer
	if err := json.Unmarshal(resp.Body(), &got); err != nil {
		return nil, fmt.Errorf("probe %s: %w", o.addrs[0], err)
	}
	pas := make([]probeAnswer, len(o.addrs))
	for k, a := range o.addrs {
		i := slices.IndexFunc(got, func(p probeAnswer) bool { return p.Addr == a })
		if i < 0 {
			return nil, fmt.Errorf("probe %s: no answer for %s", o.addrs[0], a)
		}
		pas[k] = got[i]
	}
	return pas, nil
}

// Route probes the fleet and picks a server.
func (o *Oracle) Route(i int, body []byte) (string, func(), error) {
	pas, err := o.probe(body)
	if err != nil {
		return "", nil, err
	}
	n := len(o.addrs)
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
