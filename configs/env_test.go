package configs

import (
	"strings"
	"testing"
)

func testLookup(name string) (string, bool) {
	switch name {
	case "A":
		return "1", true
	case "LONG_name_2":
		return "value", true
	case "EMPTY":
		return "", true
	case "REF":
		return "${A}", true
	}
	return "", false
}

func TestExpand(t *testing.T) {
	f := func(in, want, wantErr string) {
		t.Helper()
		got, err := expand(in, testLookup)
		if wantErr != "" {
			if err == nil || err.Error() != wantErr {
				t.Errorf("expand(%q) error = %v, want %q", in, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	f("", "", "")
	f("plain $A {A} $", "plain $A {A} $", "")
	f("${A}", "1", "")
	f("x${A}y${LONG_name_2}z", "x1yvaluez", "")
	f("${EMPTY}", "", "")
	f("${REF}", "${A}", "") // a value is not expanded again
	f("$${A}", "${A}", "")
	f("a$${A}${A}", "a${A}1", "")
	f("${B}", "", "environment variable B is not set")
	f("${A", "", `unterminated reference "${A"`)
	f("${}", "", `invalid variable name in "${}"`)
	f("${A-b}", "", `invalid variable name in "${A-b}"`)
	f("${9A}", "", `invalid variable name in "${9A}"`)
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "${A}", "$${A}", "x${LONG_name_2}y", "${", "${}", "$$${A}", "}{$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := expand(s, testLookup)
		if !strings.Contains(s, "${") {
			if err != nil || got != s {
				t.Fatalf("expand(%q) = %q, %v; want it unchanged", s, got, err)
			}
			return
		}
		if err == nil && len(got) > len(s)*3 {
			t.Fatalf("expand(%q) = %q grew beyond its references", s, got)
		}
	})
}

func TestComparePaths(t *testing.T) {
	f := func(a, b string, want int) {
		t.Helper()
		got := comparePaths(a, b)
		if got < 0 {
			got = -1
		} else if got > 0 {
			got = 1
		}
		if got != want {
			t.Errorf("comparePaths(%q, %q) = %d, want %d", a, b, got, want)
		}
	}
	f("a", "a", 0)
	f("a", "b", -1)
	f("openai_clients[2].name", "openai_clients[10].name", -1)
	f("openai_clients[10].name", "openai_clients[9].name", 1)
	f("x[02]", "x[2]", 0)
	f("openai_clients", "openai_clients[0]", -1)
	f("openai_clients[0].base_url", "openai_clients[0].name", -1)
}
