package proxy

import "github.com/valyala/fastjson"

// The prefix strategy's only views of the parsed request (route.go).

// promptMessages returns the chat's messages as they go upstream (after
// preprocessing), or nil.
func (r *request) promptMessages() *fastjson.Value {
	if r.obj == nil {
		return nil
	}
	return r.obj.Get("messages")
}

// promptMember returns the JSON text of the top-level member name, or nil.
// dst is scratch the text is written to; the grown scratch is returned for
// reuse.
func (r *request) promptMember(name string, dst []byte) (val, scratch []byte) {
	if r.obj == nil {
		return nil, dst
	}
	v := r.obj.Get(name)
	if v == nil {
		return nil, dst
	}
	dst = v.MarshalTo(dst)
	return dst, dst
}
