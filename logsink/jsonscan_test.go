package logsink

import (
	"encoding/json"
	"runtime"
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
		ms, err := ScanObject(nil, []byte(in), 8)
		if err != nil {
			t.Errorf("ScanObject(%s): %v", in, err)
			return
		}
		if len(ms) != len(want) {
			t.Errorf("ScanObject(%s): %d members, want %d", in, len(ms), len(want))
			return
		}
		for i, m := range ms {
			if w := want[i]; string(m.Key) != w.key || string(m.Val) != w.val || m.Values != w.values {
				t.Errorf("ScanObject(%s)[%d] = %q:%q (%d values), want %q:%q (%d)", in, i, m.Key, m.Val, m.Values, w.key, w.val, w.values)
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
		_, err := ScanObject(nil, []byte(in), 3)
		if err == nil || want != nil && err != want {
			t.Errorf("ScanObject(%.40s) = %v, want %v", in, err, want)
		}
	}
	f(``, errJSONEnd)
	f(`[1]`, ErrNotObject)
	f(`"s"`, ErrNotObject)
	f(`{"a":1,"b":2,"c":3,"d":4}`, ErrTooManyMembers)
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
		ms, err := ScanObject(nil, []byte(in), 1<<20)
		plain := !strings.ContainsFunc(in, func(r rune) bool { return r == '\\' || r < 0x20 && r != ' ' && r != '\t' && r != '\n' && r != '\r' }) &&
			!strings.Contains(in, strings.Repeat("[", 100)) && !strings.Contains(in, strings.Repeat("{", 100))
		stdOK := json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{")
		if plain && (err == nil) != stdOK {
			t.Fatalf("ScanObject(%q) error %v, encoding/json valid object: %v", in, err, stdOK)
		}
		if err == nil && plain {
			for _, m := range ms {
				if !json.Valid(m.Val) {
					t.Fatalf("member %q value %q is not one JSON value", m.Key, m.Val)
				}
				if n, err := CountValues(m.Val); err != nil || n != m.Values {
					t.Fatalf("member %q: %d values, CountValues says %d, %v", m.Key, m.Values, n, err)
				}
			}
		}
	})
}

// An answer of many small values (embeddings) costs the writer a scan, not
// a value per number, and its usage is still read; a hostile tool call
// list keeps the tool_calls column bounded.
func TestAnswerHugeShapes(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[`)
	for i := 0; i < 2_000_000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("0.1")
	}
	b.WriteString(`]}],"usage":{"prompt_tokens":7,"total_tokens":7}}`)
	body := []byte(b.String())
	fp := &fastParser{}
	var d derived
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	d.reset()
	fp.answer(body, &d)
	runtime.ReadMemStats(&ms)
	if d.usage.set&usagePrompt == 0 || d.usage.prompt != 7 {
		t.Fatalf("usage %+v", d.usage)
	}
	if got := ms.TotalAlloc - before; got > 1<<20 {
		t.Fatalf("%d bytes allocated for an 8 MB embeddings answer", got)
	}

	b.Reset()
	b.WriteString(`{"choices":[{"message":{"tool_calls":[`)
	for i := 0; i < 20000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"function","function":{"name":"tool_with_a_long_name_` + strings.Repeat("x", 40) + `"}}`)
	}
	b.WriteString(`]}}]}`)
	d.reset()
	fp.answer([]byte(b.String()), &d)
	if cols := d.toolNamesJSON(); d.nTools != 20000 || len(cols) > maxToolNamesBytes+200 || !json.Valid(cols) {
		t.Fatalf("%d tools, column %d bytes, valid %v", d.nTools, len(cols), json.Valid(cols))
	}
}
