package proxy

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScanObject(t *testing.T) {
	type kv struct {
		key, val string
		values   int
	}
	f := func(in string, want ...kv) {
		t.Helper()
		ms, err := scanObject(nil, []byte(in), 8)
		if err != nil {
			t.Errorf("scanObject(%s): %v", in, err)
			return
		}
		if len(ms) != len(want) {
			t.Errorf("scanObject(%s): %d members, want %d", in, len(ms), len(want))
			return
		}
		for i, m := range ms {
			if w := want[i]; string(m.key) != w.key || string(m.val) != w.val || m.values != w.values {
				t.Errorf("scanObject(%s)[%d] = %q:%q (%d values), want %q:%q (%d)", in, i, m.key, m.val, m.values, w.key, w.val, w.values)
			}
		}
	}
	f(`{}`)
	f(" {\n} ")
	f(`{"a":1}`, kv{"a", "1", 1})
	f(`{ "a" : "x\"y" , "b\\" : [ 1 , {"c":null,"d":[]} , -2.5e+3 ] }`,
		kv{"a", `"x\"y"`, 1}, kv{`b\\`, `[ 1 , {"c":null,"d":[]} , -2.5e+3 ]`, 6})
	f(`{"t":true,"f":false,"n":null,"s":"\\","o":{}}`,
		kv{"t", "true", 1}, kv{"f", "false", 1}, kv{"n", "null", 1}, kv{"s", `"\\"`, 1}, kv{"o", "{}", 1})
	f(`{"deep":`+strings.Repeat("[", 300)+strings.Repeat("]", 300)+`}`,
		kv{"deep", strings.Repeat("[", 300) + strings.Repeat("]", 300), 300})
}

func TestScanObjectErrors(t *testing.T) {
	f := func(in string, want error) {
		t.Helper()
		_, err := scanObject(nil, []byte(in), 3)
		if err == nil || want != nil && err != want {
			t.Errorf("scanObject(%.40s) = %v, want %v", in, err, want)
		}
	}
	f(``, errJSONEnd)
	f(`[1]`, errNotObject)
	f(`"s"`, errNotObject)
	f(`{"a":1,"b":2,"c":3,"d":4}`, errTooManyMembers)
	f(`{"a":1}x`, errJSONTail)
	f(`{"a":1`, errJSONEnd)
	f(`{"a"}`, nil)
	f(`{a:1}`, nil)
	f(`{"a":1,}`, nil)
	f(`{"a":[1,]}`, nil)
	f(`{"a":[1 2]}`, nil)
	f(`{"a":{"b":1]}`, nil)
	f(`{"a":tru}`, nil)
	f(`{"a":-}`, nil)
	f(`{"a":1.}`, nil)
	f(`{"a":1e}`, nil)
	f(`{"a":01}`, nil)
	f(`{"a":"x}`, errJSONEnd)
	f(`{"a":"x\"}`, errJSONEnd)
	f(`{"a":`+strings.Repeat("[", 301)+strings.Repeat("]", 301)+`}`, errJSONDepth)
	f(`{"a":`+strings.Repeat("[", 5_000_000), errJSONDepth) // no recursion, no stack
	f(`not json`, nil)
}

// The scanner agrees with encoding/json on what is a JSON object, except
// for what it leaves to the string's reader (escapes, control bytes), as
// fastjson does, and for nesting past 300 levels, which it refuses.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}],"c":"\u00e9"}`, `{"a":1e5,"b":-0.5}`, `[]`, `{"a":}`, `{"a":[[[]]]}`, `{"a":01}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := scanObject(nil, []byte(in), 1<<20)
		plain := !strings.ContainsFunc(in, func(r rune) bool { return r == '\\' || r < 0x20 && r != ' ' && r != '\t' && r != '\n' && r != '\r' }) &&
			!strings.Contains(in, strings.Repeat("[", 100)) && !strings.Contains(in, strings.Repeat("{", 100))
		stdOK := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
		if plain && (err == nil) != stdOK {
			t.Fatalf("scanObject(%q) error %v, encoding/json valid object: %v", in, err, stdOK)
		}
		if err == nil && plain {
			for _, m := range ms {
				if !json.Valid(m.val) {
					t.Fatalf("member %q value %q is not one JSON value", m.key, m.val)
				}
				if n, err := countValues(m.val); err != nil || n != m.values {
					t.Fatalf("member %q: %d values, countValues says %d, %v", m.key, m.values, n, err)
				}
			}
		}
	})
}
