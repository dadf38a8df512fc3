package jsonw

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// decodeJSON is what encoding/json reads from b.
// canonical is what encoding/json reads b as, written back by it: keys
// sorted, numbers and strings in one form, so two texts that mean the same
// compare equal as strings.
func canonical(b []byte) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

func mustCanonical(t *testing.T, b []byte) string {
	t.Helper()
	s, err := canonical(b)
	if err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, b)
	}
	return s
}

// TestAppendValue: strings fastjson decoded, or was given, come out as
// valid JSON that means what the input meant; where fastjson's MarshalTo
// writes Go syntax instead, the test says so, so that it fails if that
// reason to own the writer ever goes away unnoticed.
func TestAppendValue(t *testing.T) {
	for _, in := range []string{
		`{"a":1,"b":[true,false,null,-2.5e3],"c":{"d":"e"}}`,
		`{"content":"say \"hi\" \u0001 \u0007 \u000b \u001b[0m"}`,
		`{"content":"flag \"x\" \ud83c\udff4\udb40\udc67\udb40\udc62\udb40\udc73\udb40\udc63\udb40\udc74\udb40\udc7f"}`,
		`{"k\"ey\u0001":"v","n":12345678901234567890}`,
		`["\u00e9\/", "", "\\"]`,
		`"just a string \u0002"`,
		`{}`, `[]`, `0`, `null`,
	} {
		var p fastjson.Parser
		v, err := p.Parse(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		decodeAll(v) // as a rewrite does: strings read, so decoded
		out := AppendValue(nil, v)
		if got, want := mustCanonical(t, out), mustCanonical(t, []byte(in)); got != want {
			t.Fatalf("%s\nbecame %s", in, out)
		}
	}

	// Where fastjson's MarshalTo writes Go syntax for a decoded string.
	var p fastjson.Parser
	v, err := p.Parse(`{"content":"P: \"x\"\u0001 \udb40\udc67"}`)
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(v)
	if fj := v.MarshalTo(nil); json.Valid(fj) {
		t.Fatalf("fastjson's MarshalTo now writes valid JSON (%s): AppendValue may no longer be needed", fj)
	}
	if out, want := AppendValue(nil, v), "{\"content\":\"P: \\\"x\\\"\\u0001 \U000e0067\"}"; string(out) != want {
		t.Fatalf("AppendValue wrote %s, want %s", out, want)
	}
}

// decodeAll reads every string of v, which makes fastjson decode it.
func decodeAll(v *fastjson.Value) {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		o.Visit(func(_ []byte, e *fastjson.Value) { decodeAll(e) })
	case fastjson.TypeArray:
		for _, e := range v.GetArray() {
			decodeAll(e)
		}
	}
}

func TestAppendValueAllocs(t *testing.T) {
	var p fastjson.Parser
	v, err := p.Parse(`{"messages":[{"role":"user","content":"a \"q\" \u0001"},{"role":"assistant","content":[{"type":"text","text":"b"}]}],"n":1}`)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { dst = AppendValue(dst[:0], v) }); n != 0 {
		t.Fatalf("AppendValue allocates %.0f times", n)
	}
}

// FuzzAppendValue: for any JSON text fastjson accepts, AppendValue writes
// JSON, and one that encoding/json reads as the same value, whether
// fastjson had decoded its strings or not.
func FuzzAppendValue(f *testing.F) {
	for _, s := range []string{`{"a":"\"\u0001"}`, `["\ud83c\udff4\udb40\udc67"]`, `{"x":[1,{"y":null}]}`, `"\u000b"`} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, decode bool) {
		var p fastjson.Parser
		v, err := p.Parse(in)
		if err != nil {
			return
		}
		want, err := canonical([]byte(in))
		if err != nil {
			return // fastjson accepts some text encoding/json does not read
		}
		if decode {
			decodeAll(v)
		}
		out := AppendValue(nil, v)
		got := mustCanonical(t, out)
		// fastjson leaves a lone surrogate escape (\ud800 without its
		// pair) as text, where encoding/json reads U+FFFD.
		if !strings.Contains(strings.ToLower(in), `\ud`) && got != want {
			t.Fatalf("%s\nbecame %s", in, out)
		}
	})
}
