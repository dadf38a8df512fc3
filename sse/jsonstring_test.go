package sse

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendJSONString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := string(AppendJSONString(nil, in))
		if got != want {
			t.Fatalf("AppendJSONString(%q) = %s, want %s", in, got, want)
		}
		if gotB := string(AppendJSONString(nil, []byte(in))); gotB != got {
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
	f("\x00\x1f", `"\u0000\u001f"`)
	f("héllo 世界 🙂", `"héllo 世界 🙂"`)
	f("</script>&", `"</script>&"`)
	f("bad\xffbyte", `"bad\ufffdbyte"`)
	f("cut\xe4\xb8", `"cut\ufffd\ufffd"`)
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a\"\\\n", "世界", "\xff\xfe", "\xe4\xb8", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := AppendJSONString(nil, in)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q gave invalid JSON %s: %s", in, out, err)
		}
		if utf8.ValidString(in) && back != in {
			t.Fatalf("%q round-trips to %q", in, back)
		}
	})
}
