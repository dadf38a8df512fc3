package jsonw

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestKey(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"model", "model"},
		{`mod\u0065l`, "model"},
		{`\u006d\u0061\u0078\u005f\u0074\u006f\u006b\u0065\u006e\u0073`, "max_tokens"}, // 60 bytes, decodes to 10
		{`a\"b\\c\/d\n`, "a\"b\\c/d\n"},
		{`\ud83d\ude00`, "😀"},
		{`\ud83d`, "\ufffd"},   // a lone high surrogate
		{`\ude00x`, "\ufffdx"}, // a lone low one
		{`\u00e9`, "é"},
		{`x\q`, `x\q`},     // not JSON: left as sent
		{`x\u12`, `x\u12`}, // cut escape: left as sent
		{`\u0061` + string(make([]byte, 40)), `\u0061` + string(make([]byte, 40))}, // decodes past 32 bytes: left as sent
	} {
		var buf [32]byte
		if got := string(Key(&buf, []byte(c.raw))); got != c.want {
			t.Errorf("Key(%q) = %q, want %q", c.raw, got, c.want)
		}
	}
}

// Key reads a name as encoding/json does whenever the name decodes within
// its buffer.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"model", `mod\u0065l`, `\ud83d\ude00`, `\ud83d\u0041`, `a\tb`, `\u0000`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var want string
		if json.Unmarshal([]byte(`"`+raw+`"`), &want) != nil {
			return
		}
		var buf [32]byte
		got := Key(&buf, []byte(raw))
		if len(want) > len(buf) || !utf8.ValidString(raw) {
			return // left undecoded, or bytes encoding/json replaces
		}
		if string(got) != want {
			t.Fatalf("Key(%q) = %q, encoding/json reads %q", raw, got, want)
		}
	})
}
