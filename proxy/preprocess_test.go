package proxy

import (
	"testing"

	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/internal/jsonw"
	"github.com/gptapi/gptapi/logsink"
)

var allOn = configs.Preprocess{Strip: true, StripThink: true, DropEmpty: true, MergeUser: "merge"}

// runPreprocess returns the messages array after preprocessing, or "400".
func runPreprocess(t *testing.T, p configs.Preprocess, messages string) string {
	t.Helper()
	var r request
	var a fastjson.Arena
	if e := r.parse([]byte(`{"model":"m","messages":`+messages+`}`), logsink.Chat); e != nil {
		t.Fatalf("parse %s: %s", messages, e.Message)
	}
	if !preprocess(&r, &a, &p) {
		return "400"
	}
	if !r.rewritten {
		return string(r.members[r.iMessages].Val)
	}
	return string(jsonw.AppendValue(nil, r.messages))
}

func TestPreprocess(t *testing.T) {
	f := func(p configs.Preprocess, in, want string) {
		t.Helper()
		if got := runPreprocess(t, p, in); got != want {
			t.Errorf("preprocess %s\n got: %s\nwant: %s", in, got, want)
		}
	}
	off := configs.Preprocess{MergeUser: "off"}
	// Everything off: untouched, byte for byte, unknown fields included.
	f(off, `[{"role":"user","content":"  hi  ","x":1},{"role":"user","content":"yo"}]`,
		`[{"role":"user","content":"  hi  ","x":1},{"role":"user","content":"yo"}]`)
	// strip trims every text content, any role.
	f(configs.Preprocess{Strip: true, MergeUser: "off"}, `[{"role":"system","content":"\n sys \t"},{"role":"user","content":" u "}]`,
		`[{"role":"system","content":"sys"},{"role":"user","content":"u"}]`)
	// strip_think: closed block, only for assistant messages.
	f(allOn, `[{"role":"assistant","content":"<think>plan</think>\n answer"},{"role":"user","content":"<think>keep</think>q"}]`,
		`[{"role":"assistant","content":"answer"},{"role":"user","content":"<think>keep</think>q"}]`)
	// leading unclosed prefix as reasoning models emit it.
	f(allOn, `[{"role":"assistant","content":"reasoning...</think>final"}]`, `[{"role":"assistant","content":"final"}]`)
	// multiple blocks, text between kept.
	f(allOn, `[{"role":"assistant","content":"a<think>1</think>b<think>2</think>c"}]`, `[{"role":"assistant","content":"abc"}]`)
	// an unclosed trailing block is reasoning cut off: removed.
	f(allOn, `[{"role":"assistant","content":"done <think>never closed"}]`, `[{"role":"assistant","content":"done"}]`)
	// tool_call tags removed, contents kept.
	f(allOn, `[{"role":"assistant","content":"<tool_call>{\"name\":\"f\"}</tool_call>"}]`, `[{"role":"assistant","content":"{\"name\":\"f\"}"}]`)
	// strip_think without strip: blocks removed, text still trimmed only if strip is on.
	f(configs.Preprocess{StripThink: true, MergeUser: "off"}, `[{"role":"assistant","content":"<think>x</think> y "}]`,
		`[{"role":"assistant","content":" y "}]`)
	// drop_empty: empty after strip dropped; tool_calls keep a message; tool results kept.
	f(allOn, `[{"role":"user","content":"q"},{"role":"assistant","content":"<think>only</think>"},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"tool","content":"","tool_call_id":"1"}]`,
		`[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"tool","content":"","tool_call_id":"1"}]`)
	// drop_empty off keeps empty messages.
	f(configs.Preprocess{Strip: true, MergeUser: "off"}, `[{"role":"user","content":" "},{"role":"user","content":"q"}]`,
		`[{"role":"user","content":""},{"role":"user","content":"q"}]`)
	// merge_user merge: joined with a blank line; the first's other fields kept.
	f(allOn, `[{"role":"user","content":"a","name":"n"},{"role":"user","content":"b"},{"role":"assistant","content":"c"},{"role":"user","content":"d"}]`,
		`[{"role":"user","content":"a\n\nb","name":"n"},{"role":"assistant","content":"c"},{"role":"user","content":"d"}]`)
	// merge happens after drop_empty: users separated only by a dropped message merge.
	f(allOn, `[{"role":"user","content":"a"},{"role":"assistant","content":"  "},{"role":"user","content":"b"}]`,
		`[{"role":"user","content":"a\n\nb"}]`)
	// merge_user last keeps the last of a run.
	f(configs.Preprocess{MergeUser: "last"}, `[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":"c"}]`,
		`[{"role":"user","content":"c"}]`)
	// parts: text parts stripped, image parts kept, empty text parts dropped.
	f(allOn, `[{"role":"user","content":[{"type":"text","text":"  look "},{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":" "}]}]`,
		`[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:x"}}]}]`)
	// a plain message merged with a parts message becomes a text part.
	f(allOn, `[{"role":"user","content":"first"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]}]`,
		`[{"role":"user","content":[{"type":"text","text":"first"},{"type":"image_url","image_url":{"url":"u"}}]}]`)
	// a run of three texts joins once; a later parts array makes the run's
	// content parts, and each text after it is a part of its own.
	f(allOn, `[{"role":"user","content":"a"},{"role":"user","content":null},{"role":"user","content":"b"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]},{"role":"user","content":"c"},{"role":"user","content":"d"}]`,
		`[{"role":"user","content":[{"type":"text","text":"a\n\nb"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"c"},{"type":"text","text":"d"}]}]`)
	// a parts array first: texts that follow are parts.
	f(allOn, `[{"role":"user","content":[{"type":"text","text":"p"}]},{"role":"user","content":"q"},{"role":"assistant","content":"r"},{"role":"user","content":"s"},{"role":"user","content":"t"}]`,
		`[{"role":"user","content":[{"type":"text","text":"p"},{"type":"text","text":"q"}]},{"role":"assistant","content":"r"},{"role":"user","content":"s\n\nt"}]`)
	// merge_user last after a merge-less run.
	f(configs.Preprocess{MergeUser: "last"}, `[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"user","content":"d"}]`,
		`[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"d"}]`)
	// nothing left: 400.
	f(allOn, `[{"role":"user","content":"  "},{"role":"assistant","content":"<think>x</think>"}]`, "400")
	// unicode and escapes survive a rewrite.
	f(allOn, `[{"role":"user","content":" \u00e9t\u00e9 \"q\" "}]`, `[{"role":"user","content":"été \"q\""}]`)
	// so do characters Go's quoting writes in its own syntax: control
	// characters (\x01, \a), DEL, runes past U+FFFF it deems unprintable
	// (\U000e0067, a flag emoji's tag letter), in stripped, merged and
	// unchanged text alike.
	f(allOn, `[{"role":"user","content":" \"a\"\u0001\u0007 "},{"role":"user","content":"\"b\"\u007f\udb40\udc67"},{"role":"assistant","content":"\"c\"\u001b"}]`,
		`[{"role":"user","content":"\"a\"\u0001\u0007\n\n\"b\"`+"\x7f\U000e0067"+`"},{"role":"assistant","content":"\"c\"\u001b"}]`)
}

func TestStripThink(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		var r request
		if got := stripThink(&r, in); got != want {
			t.Errorf("stripThink(%q) = %q, want %q", in, got, want)
		}
	}
	f("plain", "plain")
	f("<think>a</think>b", "b")
	f("x</think>y", "y")
	f("a<think>b</think>c<think>d</think>e", "ace")
	f("a<think>unclosed", "a")
	f("<tool_call>k</tool_call>", "k")
	f("pre</think>mid<think>x</think>end", "midend")
	f("<think>outer <b>nested text</b></think>after", "after")
	f("a</tool_call>b<tool_call>c", "abc")
	f("x tool_call> y", "x tool_call> y")
}
