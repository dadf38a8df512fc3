// Command mockllm is a fast OpenAI-compatible mock upstream.
//
// It stands in for an LLM server wherever a real one would be slow, costly or
// unpredictable: `make run` starts a few of them so gptapi can be tried with no
// model at hand, the benchmark harness drives gptapi against them (so they must
// never be the bottleneck), and smoke tests use their knobs to make an upstream
// fail, stall, break mid-stream or call tools on demand.
//
// One process serves several mocks, one per address in -listen. Each mock is
// named after its port ("mock-9001"); the name comes back in the X-Mock-Name
// header, as the first word of every answer's text and in /v1/models, so a
// caller can tell which upstream answered.
//
// Endpoints: POST /v1/chat/completions and /v1/completions (JSON, or SSE when
// "stream" is true), POST /v1/embeddings, POST /v1/rerank and /rerank, GET
// /v1/models and GET /health. Anything else gets an OpenAI-shaped 404.
//
// Behaviour is set by flags, overridden per request by X-Mock-* headers, which
// are overridden in turn by a top-level "mock" object in the JSON body (gptapi
// passes unknown body fields upstream untouched but does not forward caller
// headers). See knobs.go for the list.
//
// Answers are built by appending bytes; request bodies are read with a pooled
// fastjson parser; streams are written by a pooled io.Reader handed to
// fasthttp, which writes and flushes one HTTP chunk per SSE event, so a stream
// costs no goroutine of its own.
package main
