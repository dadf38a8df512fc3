package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// modelsCache holds merged /v1/models answers for models_cache_ttl, one
// per credential when a client fetches with the caller's key (passthrough,
// or an empty api_key): what one tenant may see is never shown to another.
// Each upstream's list is kept; a failed fetch is not, and is asked again
// by the next call. Concurrent callers of one entry share its fan-out; the
// lock is never held across the network.
type modelsCache struct {
	mu      sync.Mutex
	entries map[string]*modelsEntry // by caller key, "" when no client uses it
}

type modelsEntry struct {
	done  chan struct{} // closed once body is set
	body  []byte        // parts merged
	parts []modelsPart  // by upstream, in config order
}

// modelsPart is one upstream's list, kept for models_cache_ttl; a failed
// fetch (nil body) is asked again by the next call.
type modelsPart struct {
	body    []byte
	expires time.Time
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
	if len(st.authKeys) > 0 {
		key = nil // gptapi's own key: never sent upstream (SPEC §3)
	}
	ctx.SetContentType("application/json")
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
			if e.fresh(now) {
				mc.mu.Unlock()
				return e.body
			}
		default: // a fetch for this key is under way: share it
			done := e.done
			mc.mu.Unlock()
			<-done
			mc.mu.Lock()
			defer mc.mu.Unlock()
			return e.body
		}
	}
	if e == nil {
		if mc.entries == nil {
			mc.entries = make(map[string]*modelsEntry)
		}
		if len(mc.entries) >= maxModelsEntries {
			for k, old := range mc.entries {
				select {
				case <-old.done:
					delete(mc.entries, k)
				default:
				}
				if len(mc.entries) < maxModelsEntries/2 {
					break
				}
			}
		}
		e = &modelsEntry{parts: make([]modelsPart, len(st.upstreams))}
		mc.entries[string(key)] = e
	}
	e.done = make(chan struct{})
	mc.mu.Unlock()

	// Only this goroutine writes e until done is closed.
	var wg sync.WaitGroup
	for i, up := range st.upstreams {
		if now.Before(e.parts[i].expires) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := fetchUpstreamModels(up, key, st.cfg.Check.ModelsTimeout)
			e.parts[i] = modelsPart{body: b}
			if b != nil {
				e.parts[i].expires = time.Now().Add(st.cfg.Check.ModelsCacheTTL)
			}
		}()
	}
	wg.Wait()
	body := mergeModels(e.parts)
	mc.mu.Lock()
	e.body = body
	close(e.done)
	mc.mu.Unlock()
	return body
}

// fresh reports whether every upstream's list is still valid.
func (e *modelsEntry) fresh(now time.Time) bool {
	for i := range e.parts {
		if !now.Before(e.parts[i].expires) {
			return false
		}
	}
	return true
}

// mergeModels merges the lists by id, first one wins in config order. An
// upstream that failed or timed out is left out.
func mergeModels(parts []modelsPart) []byte {
	var p fastjson.Parser
	seen := make(map[string]bool)
	out := append([]byte(nil), `{"object":"list","data":[`...)
	n := 0
	for _, part := range parts {
		if part.body == nil {
			continue
		}
		v, err := p.ParseBytes(part.body)
		if err != nil {
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
			out = jsonw.AppendValue(out, m)
			n++
		}
	}
	return append(out, "]}"...)
}

func fetchUpstreamModels(up *upstream, key []byte, timeout time.Duration) []byte {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(up.modelsURI)
	for _, h := range up.headers { // as every request to up (fixedHeaders)
		req.Header.Set(h[0], h[1])
	}
	if !up.ownAuth && len(key) > 0 {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+string(key))
	}
	if err := up.hc.DoTimeout(req, resp, timeout); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return nil
	}
	// Compressed although identity was asked for: decoded as answers are,
	// within max_response_bytes (the pool's bound on what it read).
	if decodeAnswer(resp, up.hc.MaxResponseBodySize) != nil {
		return nil
	}
	return append([]byte(nil), resp.Body()...)
}
