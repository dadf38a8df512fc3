package main

import (
	"github.com/gptapi/gptapi/internal/jsonw"

	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/valyala/fastjson"
)

type scored struct {
	index int
	score float64
	text  []byte // valid while the request's parser is held
}

// parseRerank reads a rerank request (vLLM/TEI/Jina/Cohere shape) and builds
// the answer: one result per document, best first. A document's score grows
// with the share of the query's words it contains, so results are stable and
// plausible.
func (a *answer) parseRerank(v *fastjson.Value) error {
	qv := v.Get("query")
	if qv == nil || qv.Type() != fastjson.TypeString {
		return fmt.Errorf("query: must be a string")
	}
	query := qv.GetStringBytes()
	dv := v.Get("documents")
	if dv == nil || dv.Type() != fastjson.TypeArray {
		return fmt.Errorf("documents: must be an array")
	}
	docs := dv.GetArray()
	a.scores = a.scores[:0]
	for i, d := range docs {
		var text []byte
		switch d.Type() {
		case fastjson.TypeString:
			text = d.GetStringBytes()
		case fastjson.TypeObject:
			text = d.GetStringBytes("text")
		default:
			return fmt.Errorf("documents[%d]: must be a string or an object with text, got %s", i, d.Type())
		}
		a.scores = append(a.scores, scored{index: i, score: relevance(query, text), text: text})
	}
	slices.SortStableFunc(a.scores, func(x, y scored) int { return cmp.Compare(y.score, x.score) })
	top := len(a.scores)
	if n := v.GetInt("top_n"); n > 0 && n < top {
		top = n
	}
	withDocs := v.GetBool("return_documents")

	dst := append(a.buf[:0], `{"id":"rerank-`...)
	dst = append(dst, a.m.port...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, a.seq, 10)
	dst = append(dst, `","model":`...)
	dst = jsonw.AppendString(dst, a.model)
	dst = append(dst, `,"usage":{"total_tokens":`...)
	dst = appendInt(dst, a.prompt)
	dst = append(dst, `},"results":[`...)
	for i, s := range a.scores[:top] {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = appendInt(dst, s.index)
		if withDocs {
			dst = append(dst, `,"document":{"text":`...)
			dst = jsonw.AppendString(dst, s.text)
			dst = append(dst, '}')
		}
		dst = append(dst, `,"relevance_score":`...)
		dst = strconv.AppendFloat(dst, s.score, 'f', 6, 64)
		dst = append(dst, '}')
	}
	a.buf = append(dst, "]}"...)
	clear(a.scores) // drop the references into the parser's buffer
	return nil
}

// relevance scores doc against query in [0, 1): 0.9 for the share of query
// words found in doc, up to 0.1 more from a hash of doc to break ties.
func relevance(query, doc []byte) float64 {
	words, hits := 0, 0
	for len(query) > 0 {
		i := bytes.IndexByte(query, ' ')
		w := query
		if i >= 0 {
			w, query = query[:i], query[i+1:]
		} else {
			query = nil
		}
		if len(w) == 0 {
			continue
		}
		words++
		if bytes.Contains(doc, w) {
			hits++
		}
	}
	s := float64(hashBytes(doc)>>11) / (1 << 53) * 0.1
	if words > 0 {
		s += 0.9 * float64(hits) / float64(words)
	}
	return s
}
