package proxy

import (
	"encoding/json"
	"testing"
)

func TestTriedPath(t *testing.T) {
	f := func(hops []string, wantJSON, wantText string) {
		t.Helper()
		var p triedPath
		for i := 0; i+1 < len(hops); i += 2 {
			p.add(hops[i], []byte(hops[i+1]))
		}
		if got := string(p.appendJSON(nil)); got != wantJSON {
			t.Errorf("JSON %s, want %s", got, wantJSON)
		}
		if got := string(p.appendText(nil)); got != wantText {
			t.Errorf("text %s, want %s", got, wantText)
		}
		var list []string
		if err := json.Unmarshal(p.appendText(nil), &list); err != nil || len(list) != len(hops)/2 {
			t.Errorf("text is not a JSON array of %d: %v %q", len(hops)/2, err, list)
		}
	}
	f(nil, `[]`, `[]`)
	f([]string{"a", "m"}, `["a/m"]`, `["a/m"]`)
	f([]string{"fleet-a", "qwen-72b", "fleet-b", "qwen-72b", "backup", "gpt-4o-mini"},
		`["fleet-a/qwen-72b","fleet-b/qwen-72b","backup/gpt-4o-mini"]`,
		`["fleet-a/qwen-72b", "fleet-b/qwen-72b", "backup/gpt-4o-mini"]`)
	// A model may hold any text: entries stay valid JSON strings, and a
	// comma or quote inside one is not a separator.
	f([]string{"a", `m,"x"`, "b", "m\n"}, `["a/m,\"x\"","b/m\n"]`, `["a/m,\"x\"", "b/m\n"]`)
}

// A reused path adds and renders without allocating, and a model added
// is a copy: the request's bytes may go.
func TestTriedPathReuse(t *testing.T) {
	var p triedPath
	model := []byte("qwen")
	buf := make([]byte, 0, 256)
	run := func() {
		p.reset()
		p.add("up0", model)
		p.add("up1", model)
		buf = p.appendJSON(buf[:0])
		buf = p.appendText(buf)
	}
	run()
	if n := testing.AllocsPerRun(100, run); n > 0 {
		t.Errorf("%.1f allocations per reused path, want 0", n)
	}
	copy(model, "XXXX")
	if got := string(p.appendJSON(nil)); got != `["up0/qwen","up1/qwen"]` {
		t.Errorf("path %s changed with the caller's bytes", got)
	}
}
