package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
)

// Cost per input byte of the request path's JSON work must stay flat as
// hostile shapes grow (SPEC §3): read ns/B and B/op divided by the size
// across each family of sub-benchmarks.

// userRun is a chat of n consecutive 40-byte user messages: merge_user
// joins them all.
func userRun(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":"message number ` + strconv.Itoa(100000+i) + ` of the run"}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// stopList is a chat whose caller sends n distinct stops.
func stopList(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":"x"}],"stop":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"stop-` + strconv.Itoa(i) + `"`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// zeros is a body of about size bytes: an unknown field holding an array of
// zeros, the shape that costs a DOM parser the most per byte.
func zeros(size int) []byte {
	b := make([]byte, 0, size+64)
	b = append(b, `{"model":"m","messages":[{"role":"user","content":"x"}],"junk":[0`...)
	for len(b) < size {
		b = append(b, ",0"...)
	}
	return append(b, "]}"...)
}

func runRewrite(b *testing.B, body []byte, c *configs.Client) {
	var r request
	var a fastjson.Arena
	var out []byte
	pp := configs.Preprocess{Strip: true, StripThink: true, DropEmpty: true, MergeUser: configs.MergeUserMerge}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		r.reset()
		a.Reset()
		if e := r.parse(body, logsink.Chat); e != nil {
			b.Fatal(e.Message)
		}
		if !preprocess(&r, &a, &pp) {
			b.Fatal("empty")
		}
		out = r.appendUpstreamBody(out[:0], c, r.model)
	}
	Sink += len(out)
}

func BenchmarkMergeUser(b *testing.B) {
	for _, n := range []int{1000, 2000, 4000, 8000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { runRewrite(b, userRun(n), &configs.Client{}) })
	}
}

func BenchmarkMergeStops(b *testing.B) {
	c := &configs.Client{Stop: []string{"<|im_end|>", "stop-7"}}
	for _, n := range []int{1000, 10000, 20000, 40000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { runRewrite(b, stopList(n), c) })
	}
}

func BenchmarkParseSmallValues(b *testing.B) {
	for _, mb := range []int{1, 4, 16} {
		b.Run(strconv.Itoa(mb)+"MB", func(b *testing.B) { runRewrite(b, zeros(mb<<20), &configs.Client{}) })
	}
}
