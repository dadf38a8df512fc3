package proxy

import "github.com/gptapi/gptapi/logsink"

// api is what the proxy knows of one endpoint, looked up by what it is
// rather than by where its value sorts.
type api struct {
	// path is where a client serves it, under its base_url.
	path string
	// generates: its answer carries generated text (choices), which
	// special_prefix and a client's model rewrite, and its request takes
	// the client's max_tokens clamp and stops.
	generates bool
	// prompt are the members that make its prompt for prefix routing, in
	// order; chat's prompt is its messages (route.go).
	prompt []string
}

// apis holds every endpoint a record can name, indexed by its value.
var apis = [...]api{
	logsink.Chat:        {path: "/chat/completions", generates: true},
	logsink.Completions: {path: "/completions", generates: true, prompt: []string{"prompt"}},
	logsink.Embeddings:  {path: "/embeddings", prompt: []string{"input"}},
	logsink.Rerank:      {path: "/rerank", prompt: []string{"query", "documents"}},
}
