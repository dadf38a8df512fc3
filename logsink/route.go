package logsink

// Routing's share of the writer (SPEC §4.6): the proxy's
// gptapi_prompt_cached_tokens_total{upstream} counts the cached prompt
// tokens that only the writer parses out of the answers.

// OnCachedTokens makes the writer call f, on its own goroutine, for every
// record whose answer reported usage.prompt_tokens_details.cached_tokens
// (non-stream answers and stream usage chunks, the hidden one included):
// upstream is the record's client name, valid during the call only. Set it
// before the first Put; f must be quick and must not block.
func (s *Sink) OnCachedTokens(f func(upstream []byte, tokens int64)) { s.cachedFn.Store(&f) }

// reportCached calls the OnCachedTokens hook for a derived row.
func (w *writer) reportCached(rw *row) {
	if rw.d.set&usageCached == 0 || len(rw.r.Upstream) == 0 {
		return
	}
	if f := w.s.cachedFn.Load(); f != nil {
		(*f)(rw.r.Upstream, rw.d.cached)
	}
}
