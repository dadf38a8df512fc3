package jsonw

import (
	"strings"
	"testing"
)

// Sink keeps benchmark results alive.
var Sink []byte

func BenchmarkAppendString(b *testing.B) {
	for _, in := range []struct{ name, s string }{
		{"ascii", strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20)},
		{"cjk", strings.Repeat("敏捷的棕色狐狸跳过了懒狗。", 20)},
		{"escapes", strings.Repeat("line\t\"quoted\"\\\n", 40)},
	} {
		b.Run(in.name, func(b *testing.B) {
			bs := []byte(in.s)
			dst := make([]byte, 0, 4*len(bs))
			b.ReportAllocs()
			b.SetBytes(int64(len(bs)))
			for b.Loop() {
				dst = AppendString(dst[:0], bs)
			}
			Sink = dst
		})
	}
}
