package selector

import (
	"slices"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tb := New([]Upstream{
		{Name: "exact-one", Exact: true, Values: []string{"gpt-4o"}, Priority: 1},
		{Name: "exact-list", Exact: true, Values: []string{"Qwen-72B", "llama-3-70b"}, Priority: 1},
		{Name: "kw-qwen", Values: []string{"qwen"}, Priority: 1},
		{Name: "kw-list", Values: []string{"DeepSeek", "GPT"}, Priority: 0},
		{Name: "kw-utf8", Values: []string{"Ärger"}, Priority: 1},
	}, nil)
	f := func(model string, want []int) {
		t.Helper()
		got := tb.Match(nil, model)
		if !slices.Equal(got, want) {
			t.Fatalf("Match(%q) = %v, want %v", model, got, want)
		}
	}
	// exact: equal, case-sensitive; keyword "gpt" matches too
	f("gpt-4o", []int{0, 3})
	f("GPT-4o", []int{3})
	f("gpt-4o-mini", []int{3})
	// exact lists: any value; keyword is a case-insensitive substring
	f("Qwen-72B", []int{1, 2})
	f("qwen-72b", []int{2})
	f("llama-3-70b", []int{1})
	f("Llama-3-70b", nil)
	f("my-QWEN2.5-coder", []int{2})
	f("deepseek-r1", []int{3})
	f("DEEPSEEK-V3", []int{3})
	// keyword at the very end and partial at the end
	f("x-deepseek", []int{3})
	f("x-deepsee", nil)
	// non-ASCII bytes compare exactly: ASCII letters fold, Ä does not
	f("ÄRGER", []int{4})
	f("äRGER", nil)
	// no match
	f("mistral", nil)
	f("", nil)
}

func TestMatchAppends(t *testing.T) {
	tb := New([]Upstream{
		{Name: "a", Values: []string{"m"}, Priority: 1},
		{Name: "b", Values: []string{"x"}, Priority: 1},
		{Name: "c", Values: []string{"M"}, Priority: 1},
	}, nil)
	dst := make([]int, 1, 8)
	dst[0] = 42
	got := tb.Match(dst, "model")
	if !slices.Equal(got, []int{42, 0, 2}) {
		t.Fatalf("Match appended %v, want [42 0 2]", got)
	}
	if &got[0] != &dst[0] {
		t.Fatalf("Match reallocated although cap(dst) sufficed")
	}
}

func TestNewCopiesUpstreams(t *testing.T) {
	vals := []string{"qwen"}
	ups := []Upstream{{Name: "a", Values: vals, Priority: 3}}
	tb := New(ups, nil)
	vals[0] = "llama"
	ups[0].Name = "changed"
	if got := tb.Match(nil, "qwen-7b"); !slices.Equal(got, []int{0}) {
		t.Fatalf("Match after caller changed its slice = %v, want [0]", got)
	}
	if u := tb.Upstream(0); u.Name != "a" || u.Values[0] != "qwen" || u.Priority != 3 {
		t.Fatalf("Upstream(0) = %+v, want the values passed to New", *u)
	}
	if tb.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", tb.Len())
	}
}

func TestNewHealth(t *testing.T) {
	kept := new(Health)
	ups := []Upstream{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	tb := New(ups, []*Health{kept, nil})
	if tb.Health(0) != kept {
		t.Fatalf("Health(0) is not the Health passed to New")
	}
	if tb.Health(1) == nil || tb.Health(2) == nil {
		t.Fatalf("nil or missing Health entries were not filled")
	}
	if tb.Health(1) == tb.Health(2) || tb.Health(1) == kept {
		t.Fatalf("fresh Health values are shared")
	}
}

func TestContainsFold(t *testing.T) {
	f := func(s, sub string, want bool) {
		t.Helper()
		if got := containsFold(s, asciiLower(sub)); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	}
	f("", "", true)
	f("abc", "", true)
	f("", "a", false)
	f("ab", "abc", false)
	f("ABC", "abc", true)
	f("xxAbCxx", "aBc", true)
	f("aab", "ab", true)
	f("abab", "bab", true)
	f("abaX", "abab", false)
	f("[", "{", false) // '[' is 'Z'+1, must not fold to '{'
	f("@", "`", false)
	f("ÉCOLE", "école", false)
	f("école", "ÉCOLE", false)
	f("xécolex", "éCOLE", true)
}

// asciiLowerRef is the obvious definition containsFold must agree with.
func asciiLowerRef(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 32
		}
		b.WriteByte(c)
	}
	return b.String()
}

func FuzzContainsFold(f *testing.F) {
	f.Add("Qwen2.5-72B-Instruct", "QWEN")
	f.Add("deepseek-r1", "seek")
	f.Add("ÄÖÜ", "äöü")
	f.Add("abc", "")
	f.Fuzz(func(t *testing.T, s, sub string) {
		want := strings.Contains(asciiLowerRef(s), asciiLowerRef(sub))
		if got := containsFold(s, asciiLower(sub)); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	})
}

func TestLabel(t *testing.T) {
	tb := New([]Upstream{
		{Name: "a", Exact: true, Values: []string{"gpt-4o", "Qwen-72B"}},
		{Name: "b", Values: []string{"Llama", "qwen"}},
	}, nil)
	f := func(model, want string) {
		t.Helper()
		if got := tb.Label(model); got != want {
			t.Errorf("Label(%q) = %q, want %q", model, got, want)
		}
	}
	f("gpt-4o", "gpt-4o")
	f("Qwen-72B", "Qwen-72B") // exact client first, in config order
	f("qwen-7b", "qwen")      // keyword: the configured spelling, not the caller's
	f("META-LLAMA-3", "Llama")
	f("gpt-4o-mini", "other")
	f(strings.Repeat("x", 1<<20), "other")
}
