// Package sse owns the streaming half of the proxy, on plain bytes: it splits
// an upstream's Server-Sent Events body into events (Scanner), applies
// gptapi's only changes to the chunks — the special prefix, the model name
// the caller asked for, the hidden usage chunk (Rewriter) — and relays the
// stream to the caller event by event while keeping what the caller got for
// the request record (Relay).
//
// It knows nothing of fasthttp's request context: the proxy hands a Relay to
// fasthttp as the response body stream. Nothing here decodes a whole chunk;
// the rewriter walks the JSON bytes and keeps every byte it does not change.
// In steady state, scanning, rewriting and relaying an event do not allocate.
package sse
