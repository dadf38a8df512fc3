// Package proxy is gptapi's HTTP side: the fasthttp server and its handlers,
// request parsing and rewriting, the dispatch loop that fails over across
// upstreams and fallback models, the upstream client pools, and the one place
// that builds OpenAI-shaped errors.
//
// Everything a request needs is read from one immutable snapshot (state)
// behind an atomic.Pointer, so a config reload never takes a lock on the
// request path: requests already running finish on the snapshot they started
// with.
package proxy
