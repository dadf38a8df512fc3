package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// modelsCache holds merged /v1/models answers for models_cache_ttl, one
// per credential when a client fetches with the caller's key (passthrough,
// or an empty api_key): what one tenant may see is never shown to another.
// A fetch that any upstream failed is not kept. Concurrent callers of one
// entry share its fan-out; the lock is never held across the network.
type modelsCache struct {
	mu      sync.Mutex
	entries map[string]*modelsEntry // by caller key, "" when no client uses it
}

type modelsEntry struct {
	done    chan struct{} // closed once body is set
	body    []byte
	expires time.Time // zero: not to be reused (a failed fetch)
}

// maxModelsEntries bounds the cache; callers' keys are not ours to count.
const maxModelsEntries = 1024

func (s *Server) handleModels(ctx *fasthttp.RequestCtx) {
	s.begin(ctx)
	st := s.state.Load()
	key := bearer(ctx)
	if !st.authorized(key) {
		writeError(ctx, errUnauthorized)
		return
	}
	ctx.SetContentType("application/json")
	if len(st.authKeys) > 0 {
		key = nil // gptapi's own key: never sent upstream (SPEC §3)
	}
	ctx.SetBody(st.models.get(st, key))
}

// usesCallerKey reports whether some client sends the caller's key.
func (st *state) usesCallerKey() bool {
	for _, up := range st.upstreams {
		if up.auth == "" {
			return true
		}
	}
	return false
}

func (mc *modelsCache) get(st *state, key []byte) []byte {
	if !st.usesCallerKey() {
		key = nil
	}
	now := time.Now()
	mc.mu.Lock()
	e := mc.entries[string(key)]
	if e != nil {
		select {
		case <-e.done:
			if now.Before(e.expires) {
				mc.mu.Unlock()
				return e.body
			}
		default: // a fetch for this key is under way: share it
			mc.mu.Unlock()
			<-e.done
			return e.body
		}
	}
	if mc.entries == nil {
		mc.entries = make(map[string]*modelsEntry)
	}
	if len(mc.entries) >= maxModelsEntries {
		for k, old := range mc.entries {
			select {
			case <-old.done:
				if !now.Before(old.expires) || len(mc.entries) >= maxModelsEntries {
					delete(mc.entries, k)
				}
			default:
			}
		}
	}
	e = &modelsEntry{done: make(chan struct{})}
	mc.entries[string(key)] = e
	mc.mu.Unlock()

	body, ok := fetchModels(st, key)
	e.body = body
	if ok {
		e.expires = time.Now().Add(st.cfg.Check.ModelsCacheTTL)
	}
	close(e.done)
	return body
}

// fetchModels asks every upstream for its models at once and merges the
// lists by id, first one wins in config order. An upstream that fails or
// times out is left out.
// ok is false when an upstream failed: the answer is not to be cached.
func fetchModels(st *state, key []byte) (out []byte, ok bool) {
	bodies := make([][]byte, len(st.upstreams))
	var wg sync.WaitGroup
	for i, up := range st.upstreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies[i] = fetchUpstreamModels(up, key, st.cfg.Check.ModelsTimeout)
		}()
	}
	wg.Wait()

	var p fastjson.Parser
	seen := make(map[string]bool)
	out = append(out, `{"object":"list","data":[`...)
	n := 0
	ok = true
	for _, b := range bodies {
		if b == nil {
			ok = false
			continue
		}
		v, err := p.ParseBytes(b)
		if err != nil {
			ok = false
			continue
		}
		for _, m := range v.GetArray("data") {
			id := string(m.GetStringBytes("id"))
			if id == "" || seen[id] {
				continue
			}
			seen[id] = true
			if n > 0 {
				out = append(out, ',')
			}
			out = m.MarshalTo(out)
			n++
		}
	}
	return append(out, "]}"...), ok
}

func fetchUpstreamModels(up *upstream, key []byte, timeout time.Duration) []byte {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(up.modelsURI)
	req.Header.SetHost(up.hostHeader)
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "identity")
	switch {
	case up.auth != "":
		req.Header.Set(fasthttp.HeaderAuthorization, up.auth)
	case len(key) > 0:
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+string(key))
	}
	for k, v := range up.cfg.Headers {
		req.Header.Set(k, v)
	}
	if err := up.plain.DoTimeout(req, resp, timeout); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return nil
	}
	return append([]byte(nil), resp.Body()...)
}
