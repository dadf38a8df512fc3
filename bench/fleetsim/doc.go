// Command fleetsim is a simulated fleet of LLM servers for the routing
// benchmark: N OpenAI-compatible servers in one process, one port each, each
// modelling one vLLM engine where routing matters.
//
// Each server runs a scheduler loop of continuous batching. A step has a
// token budget (max_num_batched_tokens, 8192 by default) spent first on one
// decode token for every running request, then on prefill chunks of waiting
// requests in arrival order; its duration follows the cost model of
// costModel. Prompts are cut into 16-token blocks (64 bytes of the
// chat-templated prompt text, 4 bytes a token), each keyed by a hash chained
// over the blocks before it; computed blocks stay in a KV pool of fixed size
// and are evicted least recently used when the pool needs room, as vLLM's
// prefix cache does. The pool also bounds the running batch: a waiting request
// is admitted only when its prompt fits, and a decode that finds no free
// block preempts the newest running request (recomputed later).
//
// Every server answers /v1/chat/completions and /v1/completions (streamed
// or not, with usage.prompt_tokens_details.cached_tokens), /v1/models,
// /health, /metrics in Prometheus text with vLLM's metric names, and
// POST /sim/probe: how many leading blocks of a prompt it holds and its
// queue, for the benchmark's precise-placement reference router only.
//
// One simulated clock serves the whole process: simulated time is wall time
// since start multiplied by -speed. Given the same arrival times a server's
// results are the same whatever the wall-clock jitter (see engine.advance);
// the -seed only picks the answer text.
//
// The simulator's cache shares nothing with gptapi's prefix index: it
// models the server, which gptapi has to guess from outside.
package main
