package main

import (
	"github.com/gptapi/gptapi/internal/jsonw"

	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/valyala/fastjson"
)

// defaultDims is the length of the vectors this mock makes unless the request
// sets "dimensions".
const (
	defaultDims = 8
	maxDims     = 4096
)

// parseEmbeddings reads an embeddings request and builds the answer: one
// unit vector per input, derived from the input's bytes, so equal inputs get
// equal vectors on every mock.
func (a *answer) parseEmbeddings(v *fastjson.Value) error {
	in := v.Get("input")
	if in == nil {
		return fmt.Errorf("input: is required")
	}
	dims := defaultDims
	if dv := v.Get("dimensions"); dv != nil && dv.Type() != fastjson.TypeNull {
		n, err := dv.Int()
		if err != nil || n < 1 || n > maxDims {
			return fmt.Errorf("dimensions: must be an integer in 1..%d, got %s", maxDims, dv)
		}
		dims = n
	}
	b64 := string(v.GetStringBytes("encoding_format")) == "base64"

	dst := append(a.buf[:0], `{"object":"list","data":[`...)
	switch in.Type() {
	case fastjson.TypeString:
		dst = a.appendEmbedding(dst, 0, hashBytes(in.GetStringBytes()), dims, b64)
	case fastjson.TypeArray:
		items := in.GetArray()
		if len(items) == 0 {
			return fmt.Errorf("input: must not be empty")
		}
		if items[0].Type() == fastjson.TypeNumber {
			dst = a.appendEmbedding(dst, 0, hashTokens(items), dims, b64)
			break
		}
		for i, it := range items {
			if i > 0 {
				dst = append(dst, ',')
			}
			switch it.Type() {
			case fastjson.TypeString:
				dst = a.appendEmbedding(dst, i, hashBytes(it.GetStringBytes()), dims, b64)
			case fastjson.TypeArray:
				dst = a.appendEmbedding(dst, i, hashTokens(it.GetArray()), dims, b64)
			default:
				return fmt.Errorf("input[%d]: must be a string or an array of tokens, got %s", i, it.Type())
			}
		}
	default:
		return fmt.Errorf("input: must be a string or an array, got %s", in.Type())
	}
	dst = append(dst, `],"model":`...)
	dst = jsonw.AppendString(dst, a.model)
	dst = append(dst, `,"usage":{"prompt_tokens":`...)
	dst = appendInt(dst, a.prompt)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, a.prompt)
	a.buf = append(dst, "}}"...)
	return nil
}

func (a *answer) appendEmbedding(dst []byte, i int, seed uint64, dims int, b64 bool) []byte {
	dst = append(dst, `{"object":"embedding","index":`...)
	dst = appendInt(dst, i)
	dst = append(dst, `,"embedding":`...)
	// Two passes over the same pseudo-random sequence: the first finds the
	// norm, the second writes the normalised values, so no scratch is needed.
	var sum float64
	s := seed
	for range dims {
		x := unitFloat(&s)
		sum += x * x
	}
	norm := 1 / math.Sqrt(sum)
	s = seed
	if b64 {
		raw := a.scratch(4 * dims)
		for j := range dims {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(float32(unitFloat(&s)*norm)))
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, raw)
		dst = append(dst, '"')
	} else {
		dst = append(dst, '[')
		for j := range dims {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendFloat(dst, float64(float32(unitFloat(&s)*norm)), 'g', -1, 32)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// scratch returns n bytes of the answer's scratch space.
func (a *answer) scratch(n int) []byte {
	if cap(a.raw) < n {
		a.raw = make([]byte, n)
	}
	return a.raw[:n]
}

// unitFloat steps splitmix64 and maps the result to [-1, 1).
func unitFloat(s *uint64) float64 {
	*s += 0x9e3779b97f4a7c15
	z := *s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11)/(1<<52) - 1
}

// hashBytes is FNV-1a.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func hashTokens(items []*fastjson.Value) uint64 {
	h := uint64(14695981039346656037)
	for _, it := range items {
		h ^= uint64(it.GetInt64())
		h *= 1099511628211
	}
	return h
}
