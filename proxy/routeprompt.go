package proxy

import (
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// The prefix strategy's only views of the parsed request (route.go).

// promptMessages returns the chat's messages as they go upstream (after
// preprocessing), or nil.
func (r *request) promptMessages() *fastjson.Value { return r.messages }

// promptMember returns the JSON text of the top-level member name as the
// caller sent it, or nil. dst is scratch the text may be written to; the
// grown scratch is returned for reuse.
func (r *request) promptMember(name string, dst []byte) (val, scratch []byte) {
	var kb [32]byte
	for i := range r.members {
		if string(jsonw.Key(&kb, r.members[i].Key)) == name {
			return r.members[i].Val, dst
		}
	}
	return nil, dst
}
