package proxy

import "github.com/gptapi/gptapi/internal/jsonw"

// hop is one attempt on the Tried path: the client tried and the model it
// was asked for.
type hop struct {
	client string // the client's name, from the config
	model  []byte // owned: copied, its capacity reused
}

// triedPath is the Tried path of one exchange (SPEC §3), in the order the
// attempts were made. It is kept as a list and rendered where it is shown:
// appendJSON for the record's tried column and the error object, appendText
// for the all-failed message. Adding to a reused path does not allocate.
type triedPath struct {
	hops []hop
}

// add appends the attempt of client on model; model is copied.
func (t *triedPath) add(client string, model []byte) {
	if len(t.hops) < cap(t.hops) {
		t.hops = t.hops[:len(t.hops)+1]
	} else {
		t.hops = append(t.hops, hop{})
	}
	h := &t.hops[len(t.hops)-1]
	h.client = client
	h.model = append(h.model[:0], model...)
}

// last is the latest attempt; the path must not be empty.
func (t *triedPath) last() *hop { return &t.hops[len(t.hops)-1] }

// reset empties t and keeps the capacity of its list and models.
func (t *triedPath) reset() {
	for i := range t.hops {
		t.hops[i].client = "" // do not pin an old config
	}
	t.hops = t.hops[:0]
}

// appendEntry appends one entry as a JSON string: "client/model".
func (h *hop) appendEntry(dst []byte) []byte {
	dst = append(dst, '"')
	dst = jsonw.AppendEscaped(dst, h.client)
	dst = append(dst, '/')
	dst = jsonw.AppendEscaped(dst, h.model)
	return append(dst, '"')
}

// appendJSON appends the path as a compact JSON array, as the record's tried
// column and the error object's "tried" hold it: ["a/m","b/m"].
func (t *triedPath) appendJSON(dst []byte) []byte {
	return t.appendList(dst, ",")
}

// appendText appends the path in the form the all-failed message ends with
// (SPEC §3): ["a/m", "b/m"].
func (t *triedPath) appendText(dst []byte) []byte {
	return t.appendList(dst, ", ")
}

func (t *triedPath) appendList(dst []byte, sep string) []byte {
	dst = append(dst, '[')
	for i := range t.hops {
		if i > 0 {
			dst = append(dst, sep...)
		}
		dst = t.hops[i].appendEntry(dst)
	}
	return append(dst, ']')
}
