package proxy

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/selector"
)

// fleetServer is an OpenAI-compatible upstream with a vLLM-style /metrics
// whose queue a test sets, and that may fail every request.
type fleetServer struct {
	url     string // base URL, ending in /v1
	waiting atomic.Int64
	fail    atomic.Bool
	metrics atomic.Value // string: the /metrics body, when set; else vLLM text of waiting
	served  atomic.Int64
	scraped atomic.Int64 // reads of /metrics
}

func startFleetServer(t *testing.T) *fleetServer {
	t.Helper()
	fs := new(fleetServer)
	fs.url = startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/metrics" {
			fs.scraped.Add(1)
			if m, ok := fs.metrics.Load().(string); ok {
				ctx.SetBodyString(m)
				return
			}
			fmt.Fprintf(ctx, "# HELP vllm:num_requests_waiting Waiting.\n# TYPE vllm:num_requests_waiting gauge\n"+
				"vllm:num_requests_waiting{model_name=\"qwen\"} %d\n", fs.waiting.Load())
			return
		}
		if fs.fail.Load() {
			ctx.SetStatusCode(500)
			return
		}
		fs.served.Add(1)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],` +
			`"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4}}}`)
	})
	return fs
}

func (fs *fleetServer) metricsURL() string { return strings.TrimSuffix(fs.url, "/v1") + "/metrics" }

func fleetConfig(strategy string, fleet ...*fleetServer) *configs.Config {
	urls := make([]string, len(fleet))
	for i, f := range fleet {
		urls[i] = f.url
	}
	cfg := testConfig(urls...)
	cfg.Routing.Strategy = strategy
	cfg.Routing.PollInterval = 20 * time.Millisecond
	for i := range cfg.Clients {
		cfg.Clients[i].MetricsURL = fleet[i].metricsURL()
	}
	return cfg
}

// chatTurns returns the bodies of the turns of one conversation: a shared
// system prompt, then per turn a user message answered by the assistant.
func chatTurns(conv, turns int) []string {
	sys := strings.Repeat("You are the support agent of a large shop. ", 200) // ~9 KB, shared
	msgs := `{"role":"system","content":` + strconv.Quote(sys) + `}`
	var out []string
	for turn := range turns {
		user := fmt.Sprintf("conversation %d, question %d: ", conv, turn) + strings.Repeat("tell me more about it. ", 100)
		msgs += `,{"role":"user","content":` + strconv.Quote(user) + `}`
		out = append(out, `{"model":"qwen-7b","messages":[`+msgs+`]}`)
		msgs += `,{"role":"assistant","content":` + strconv.Quote(strings.Repeat("here is more. ", 80)) + `}`
	}
	return out
}

func TestRoutePrefixKeepsConversations(t *testing.T) {
	fleet := []*fleetServer{startFleetServer(t), startFleetServer(t), startFleetServer(t)}
	sink := newCaptureSink()
	_, addr := startProxy(t, fleetConfig(configs.StrategyPrefix, fleet...), sink)
	firsts := map[string]int{}
	for conv := range 12 {
		var where string
		for turn, body := range chatTurns(conv, 4) {
			status, h, resp := post(t, addr, "/v1/chat/completions", body)
			rec := sink.wait(t)
			if status != 200 {
				t.Fatalf("conversation %d turn %d: %d %s", conv, turn, status, resp)
			}
			want := logsink.RoutePrefixHit
			if turn == 0 {
				where, want = h["X-Gptapi-Upstream"], logsink.RoutePrefixNew
				firsts[where]++
			}
			if h["X-Gptapi-Upstream"] != where || rec.Route != want {
				t.Fatalf("conversation %d turn %d: served by %s (%v), want %s (%v)", conv, turn+1, h["X-Gptapi-Upstream"], rec.Route, where, want)
			}
		}
	}
	if len(firsts) < 2 {
		t.Errorf("12 new conversations sharing a system prompt all went to %v", firsts)
	}
}

// An attempt that fails does not teach the index: the next turn goes where
// the answer came from.
func TestRoutePrefixFailedAttemptNotLearned(t *testing.T) {
	bad, good := startFleetServer(t), startFleetServer(t)
	bad.fail.Store(true)
	cfg := fleetConfig(configs.StrategyPrefix, bad, good)
	cfg.Check.FailureThreshold = 1000 // no cooldown: the bad one stays first where placed
	sink := newCaptureSink()
	_, addr := startProxy(t, cfg, sink)
	tested := 0
	for conv := 0; conv < 40 && tested < 3; conv++ {
		turns := chatTurns(100+conv, 2)
		post(t, addr, "/v1/chat/completions", turns[0])
		rec := sink.wait(t)
		if !bytes.HasPrefix(rec.Tried, []byte(`["up0/`)) {
			continue // placed on the good one: nothing to fail
		}
		tested++
		_, h, _ := post(t, addr, "/v1/chat/completions", turns[1])
		rec = sink.wait(t)
		if h["X-Gptapi-Upstream"] != "up1" || rec.Route != logsink.RoutePrefixHit || !bytes.HasPrefix(rec.Tried, []byte(`["up1/`)) {
			t.Fatalf("turn 2 after a failed attempt on up0: tried %s (%v)", rec.Tried, rec.Route)
		}
	}
	if tested == 0 {
		t.Fatal("no conversation was placed on up0")
	}
}

// least_loaded reads each upstream's queue from its metrics_url: a long
// queue loses new work until it drains.
func TestRouteLeastLoadedFollowsQueues(t *testing.T) {
	a, b := startFleetServer(t), startFleetServer(t)
	a.waiting.Store(40)
	sink := newCaptureSink()
	_, addr := startProxy(t, fleetConfig(configs.StrategyLeastLoaded, a, b), sink)
	waitMetric(t, addr, "gptapi_upstream_waiting", "up0", 40)
	for range 10 {
		_, h, _ := post(t, addr, "/v1/chat/completions", chatBody)
		if rec := sink.wait(t); h["X-Gptapi-Upstream"] != "up1" || rec.Route != logsink.RouteLeastLoaded {
			t.Fatalf("with up0's queue at 40: served by %s (%v)", h["X-Gptapi-Upstream"], rec.Route)
		}
	}
	a.waiting.Store(0)
	b.waiting.Store(40)
	// Each upstream is polled on its own clock: wait for both new figures.
	waitMetric(t, addr, "gptapi_upstream_waiting", "up0", 0)
	waitMetric(t, addr, "gptapi_upstream_waiting", "up1", 40)
	for range 10 {
		if _, h, _ := post(t, addr, "/v1/chat/completions", chatBody); h["X-Gptapi-Upstream"] != "up0" {
			t.Fatalf("with up1's queue at 40: served by %s", h["X-Gptapi-Upstream"])
		}
		sink.wait(t)
	}
}

func waitMetric(t *testing.T, addr, name, upstream string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok := promValue(scrape(t, addr), name, map[string]string{"upstream": upstream})
		if ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{upstream=%q} = %v (present %v), want %v", name, upstream, v, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A metrics_url that answers nonsense is ignored: no waiting series, and
// requests are served as usual.
func TestRouteBadMetricsIgnored(t *testing.T) {
	for _, body := range []string{
		"<html><body>502 Bad Gateway</body></html>",
		"vllm:num_requests_waiting NaN\n",
		"vllm:num_requests_waiting -3\n",
		"# TYPE up gauge\nup 1\n",
	} {
		a, b := startFleetServer(t), startFleetServer(t)
		a.metrics.Store(body)
		b.waiting.Store(3)
		_, addr := startProxy(t, fleetConfig(configs.StrategyLeastLoaded, a, b), nil)
		waitMetric(t, addr, "gptapi_upstream_waiting", "up1", 3)
		// A second read of up0 begins only after the first was handled.
		for deadline := time.Now().Add(5 * time.Second); a.scraped.Load() < 2; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("metrics %q: up0's metrics_url was never read twice", body)
			}
		}
		if _, ok := promValue(scrape(t, addr), "gptapi_upstream_waiting", map[string]string{"upstream": "up0"}); ok {
			t.Errorf("metrics %q: a waiting series for up0", body)
		}
		if status, _, _ := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
			t.Errorf("metrics %q: request got %d", body, status)
		}
	}
}

// A reading goes stale after three intervals without a good one.
func TestRouteQueueGoesStale(t *testing.T) {
	a := startFleetServer(t)
	a.waiting.Store(9)
	cfg := fleetConfig(configs.StrategyLeastLoaded, a)
	_, addr := startProxy(t, cfg, nil)
	waitMetric(t, addr, "gptapi_upstream_waiting", "up0", 9)
	a.metrics.Store("<html>")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := promValue(scrape(t, addr), "gptapi_upstream_waiting", map[string]string{"upstream": "up0"}); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiting series outlived its reading")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Failover works the same under each strategy.
func TestRouteFailoverUnderEachStrategy(t *testing.T) {
	for _, s := range []string{configs.StrategyWeighted, configs.StrategyLeastLoaded, configs.StrategyPrefix} {
		t.Run(s, func(t *testing.T) {
			a, b := startFleetServer(t), startFleetServer(t)
			a.fail.Store(true)
			sink := newCaptureSink()
			_, addr := startProxy(t, fleetConfig(s, a, b), sink)
			for conv := range 10 {
				status, h, _ := post(t, addr, "/v1/chat/completions", chatTurns(200+conv, 1)[0])
				rec := sink.wait(t)
				if status != 200 || h["X-Gptapi-Upstream"] != "up1" || rec.Route == 0 {
					t.Fatalf("status %d from %s, route %v", status, h["X-Gptapi-Upstream"], rec.Route)
				}
			}
		})
	}
}

// A reload that changes the strategy or removes a client keeps serving;
// the index forgets the removed client and keeps the others.
func TestRouteReload(t *testing.T) {
	a, b, c := startFleetServer(t), startFleetServer(t), startFleetServer(t)
	sink := newCaptureSink()
	srv, addr := startProxy(t, fleetConfig(configs.StrategyPrefix, a, b, c), sink)
	turns := chatTurns(300, 2)
	post(t, addr, "/v1/chat/completions", turns[0])
	sink.wait(t)
	ix := srv.state.Load().prefix
	for _, s := range []string{configs.StrategyLeastLoaded, configs.StrategyWeighted, configs.StrategyPrefix} {
		if err := srv.Apply(fleetConfig(s, a, b, c)); err != nil {
			t.Fatal(err)
		}
		if status, _, _ := post(t, addr, "/v1/chat/completions", chatBody); status != 200 {
			t.Fatalf("after a reload to %s: %d", s, status)
		}
		sink.wait(t)
	}
	// back to prefix: a new index (the old one was dropped with the strategy)
	if srv.state.Load().prefix == ix {
		t.Fatal("index kept across a strategy that does not use it")
	}
	// same strategy, a client removed: the others' entries stay
	_, h, _ := post(t, addr, "/v1/chat/completions", turns[0])
	sink.wait(t)
	first := h["X-Gptapi-Upstream"]
	keep := fleetConfig(configs.StrategyPrefix, a, b, c)
	var kept []configs.Client
	for _, cl := range keep.Clients {
		if cl.Name == first || len(kept) == 0 {
			kept = append(kept, cl)
		}
	}
	keep.Clients = kept
	ix = srv.state.Load().prefix
	if err := srv.Apply(keep); err != nil {
		t.Fatal(err)
	}
	if srv.state.Load().prefix != ix {
		t.Fatal("index not kept across a reload of the same strategy")
	}
	_, h, _ = post(t, addr, "/v1/chat/completions", turns[1])
	if rec := sink.wait(t); h["X-Gptapi-Upstream"] != first || rec.Route != logsink.RoutePrefixHit {
		t.Fatalf("turn 2 after the reload: %s (%v), want %s by prefix_hit", h["X-Gptapi-Upstream"], rec.Route, first)
	}
}

func TestRouteMetrics(t *testing.T) {
	a := startFleetServer(t)
	srv, addr := startProxy(t, fleetConfig(configs.StrategyPrefix, a), nil)
	before := scrape(t, addr)
	post(t, addr, "/v1/chat/completions", chatBody)
	post(t, addr, "/v1/chat/completions", chatBody)
	srv.CountCachedTokens([]byte("up0"), 7)
	after := scrape(t, addr)
	d := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := promValue(after, name, labels)
		if !ok {
			t.Fatalf("%s%v missing", name, labels)
		}
		w, _ := promValue(before, name, labels)
		return v - w
	}
	if got := d("gptapi_route_total", map[string]string{"reason": "prefix_new"}) + d("gptapi_route_total", map[string]string{"reason": "prefix_hit"}); got != 2 {
		t.Errorf("gptapi_route_total moved by %v, want 2", got)
	}
	if got := d("gptapi_prompt_cached_tokens_total", map[string]string{"upstream": "up0"}); got != 7 {
		t.Errorf("cached tokens moved by %v", got)
	}
	if v, ok := promValue(after, "gptapi_upstream_inflight", map[string]string{"upstream": "up0"}); !ok || v != 0 {
		t.Errorf("inflight %v %v, want 0 when idle", v, ok)
	}
	for r := range selector.NumReasons {
		if _, ok := promValue(after, "gptapi_route_total", map[string]string{"reason": r.String()}); !ok {
			t.Errorf("gptapi_route_total{reason=%q} missing", r)
		}
	}
}

// In flight counts open streams too, until they end.
func TestRouteInflightStreams(t *testing.T) {
	up := sseUpstream(t, 100*time.Millisecond)
	cfg := testConfig(up)
	cfg.Routing.Strategy = configs.StrategyLeastLoaded
	srv, addr := startProxy(t, cfg, newCaptureSink())
	done := make(chan struct{})
	go func() {
		defer close(done)
		readStream(t, addr, `{"model":"qwen-7b","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	}()
	deadline := time.Now().Add(3 * time.Second)
	for srv.state.Load().table.Load(0).InFlight() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the stream is not counted in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	<-done
	for srv.state.Load().table.Load(0).InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the ended stream is still counted in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
