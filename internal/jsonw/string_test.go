package jsonw

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := string(AppendString(nil, in))
		if got != want {
			t.Fatalf("AppendString(%q) = %s, want %s", in, got, want)
		}
		if gotB := string(AppendString(nil, []byte(in))); gotB != got {
			t.Fatalf("bytes and string differ: %s vs %s", gotB, got)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Fatalf("%s is not a JSON string: %s", got, err)
		}
		if utf8.ValidString(in) && back != in {
			t.Fatalf("%s decodes to %q, want %q", got, back, in)
		}
	}
	f("", `""`)
	f("plain", `"plain"`)
	f(`a"b\c`, `"a\"b\\c"`)
	f("l1\nl2\r\t", `"l1\nl2\r\t"`)
	f("\b\f", `"\b\f"`)
	f("\x00\x1f\x7f", `"\u0000\u001f`+"\x7f"+`"`)
	f("héllo 世界 🙂", `"héllo 世界 🙂"`)
	f("</script>&\u2028", "\"</script>&\u2028\"")
	f("bad\xffbyte", `"bad\ufffdbyte"`)
	f("cut\xe4\xb8", `"cut\ufffd\ufffd"`)
	f("\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`) // a UTF-16 surrogate is not UTF-8
}

// Every control character is escaped as encoding/json escapes it.
func TestAppendStringControlLikeEncodingJSON(t *testing.T) {
	for c := range 0x20 {
		s := string(rune(c))
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: %s, encoding/json %s", s, got, want)
		}
	}
}

func TestAppendStringAllocs(t *testing.T) {
	dst := make([]byte, 0, 256)
	in := []byte("a \"quoted\"\n 世界 \xff value")
	if n := testing.AllocsPerRun(100, func() { dst = AppendString(dst[:0], in) }); n != 0 {
		t.Fatalf("AppendString allocates %.0f times", n)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"\\\n", "世界", "\xff\xfe", "\xe4\xb8", "\u2028", "\b\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := AppendString(nil, in)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q gave invalid JSON %s: %s", in, out, err)
		}
		if utf8.ValidString(in) && back != in {
			t.Fatalf("%q round-trips to %q", in, back)
		}
		if b := AppendString(nil, []byte(in)); string(b) != string(out) {
			t.Fatalf("%q: bytes and string differ: %s vs %s", in, b, out)
		}
		for i := 0; i < len(in); {
			_, want := utf8.DecodeRuneInString(in[i:])
			if r, _ := utf8.DecodeRuneInString(in[i:]); r == utf8.RuneError && want == 1 {
				want = 0
			}
			if in[i] < utf8.RuneSelf {
				i++
				continue
			}
			if got := runeLen(in, i); got != want {
				t.Fatalf("%q at %d: runeLen %d, utf8.DecodeRune says %d", in, i, got, want)
			}
			i += max(want, 1)
		}
	})
}

// runeLen agrees with utf8.DecodeRune on every lead byte followed by every
// second byte, and on the edges of each range.
func TestRuneLen(t *testing.T) {
	check := func(s string) {
		t.Helper()
		r, want := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && want == 1 {
			want = 0
		}
		if got := runeLen(s, 0); got != want {
			t.Fatalf("% x: runeLen %d, utf8.DecodeRune says %d", s, got, want)
		}
	}
	for c := 0x80; c < 0x100; c++ {
		for d := 0; d < 0x100; d++ {
			check(string([]byte{byte(c), byte(d), 0x80, 0x80}))
			check(string([]byte{byte(c), byte(d), 0xbf, 0xbf}))
			check(string([]byte{byte(c), byte(d), 0x80}))
			check(string([]byte{byte(c), byte(d)}))
		}
		check(string([]byte{byte(c)}))
	}
}
