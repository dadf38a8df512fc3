package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// modelsCache holds the merged /v1/models answer for models_cache_ttl. Its
// mutex also makes concurrent callers of an expired cache share one fan-out.
type modelsCache struct {
	mu      sync.Mutex
	body    []byte
	expires time.Time
}

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

func (mc *modelsCache) get(st *state, key []byte) []byte {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	now := time.Now()
	if mc.body != nil && now.Before(mc.expires) {
		return mc.body
	}
	mc.body = fetchModels(st, key)
	mc.expires = now.Add(st.cfg.Check.ModelsCacheTTL)
	return mc.body
}

// fetchModels asks every upstream for its models at once and merges the
// lists by id, first one wins in config order. An upstream that fails or
// times out is left out.
func fetchModels(st *state, key []byte) []byte {
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
	out := append([]byte(nil), `{"object":"list","data":[`...)
	n := 0
	for _, b := range bodies {
		if b == nil {
			continue
		}
		v, err := p.ParseBytes(b)
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
			out = m.MarshalTo(out)
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
