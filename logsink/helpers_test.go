package logsink

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// streamsDir holds the recorded upstream streams; the sse package, whose
// input they are, keeps the one copy.
var streamsDir = filepath.Join("..", "sse", "testdata")

// ndjsonFromSSE returns the data payloads of a recorded SSE stream, one a
// line, the way the relay hands them to a Record (the [DONE] payload
// included when the stream had one).
func ndjsonFromSSE(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(streamsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data:")) {
			continue
		}
		line = bytes.TrimPrefix(line[len("data:"):], []byte(" "))
		out = append(out, line...)
		out = append(out, '\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s has no data lines", name)
	}
	return out
}

// streamFiles lists every recorded stream.
func streamFiles(t testing.TB) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(streamsDir, "*.sse"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no recorded streams: %v", err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	sort.Strings(names)
	return names
}

// parserNames lists the parsers compiled in and runnable on this CPU.
func parserNames() []string {
	var names []string
	for n := range parsers {
		if n != "fastjson" && defaultParser == "fastjson" {
			continue // compiled in, but this CPU lacks AVX2 or CLMUL
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// deriveWith derives r with a fresh deriver on the named parser.
func deriveWith(name string, r *Record, maxBody int) *row {
	dv := deriver{p: parsers[name](), maxBody: maxBody}
	rw := &row{}
	dv.derive(rw, r)
	return rw
}

// clock is a settable time source for rotation tests.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *clock) ms() int64       { return c.now().UnixMilli() }
func date(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 12, 0, 0, 0, time.UTC)
}

// testOptions writes into a fresh folder.
func testOptions(t testing.TB) Options {
	dir := t.TempDir()
	return Options{
		Driver:          DriverSQLite,
		Path:            filepath.Join(dir, "data", "gptapi.db"),
		SpillDir:        filepath.Join(dir, "spill"),
		QueueSize:       1024,
		BatchSize:       64,
		FlushInterval:   10 * time.Millisecond,
		MaxPendingBytes: 256 << 20,
		StoreBodies:     true,
		MaxBodyLogBytes: 1 << 20,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func countRows(t testing.TB, path string) int {
	t.Helper()
	var n int
	if err := openDB(t, path).QueryRow("SELECT count(*) FROM requests").Scan(&n); err != nil {
		t.Fatalf("count %s: %v", path, err)
	}
	return n
}

func metaMonth(t testing.TB, path string) string {
	t.Helper()
	var m string
	if err := openDB(t, path).QueryRow("SELECT value FROM meta WHERE key='month'").Scan(&m); err != nil {
		t.Fatalf("month of %s: %v", path, err)
	}
	return m
}

// requestIDs returns the request_id column in id order.
func requestIDs(t testing.TB, path string) []string {
	t.Helper()
	rows, err := openDB(t, path).Query("SELECT request_id FROM requests ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s)
	}
	return ids
}

func spillFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// smallRecord is a typical small chat record of about 1 KB.
func smallRecord(r *Record, id string, tsMs int64) *Record {
	r.RequestID = append(r.RequestID[:0], id...)
	r.TsMs = tsMs
	r.ClientIP = append(r.ClientIP[:0], "10.1.2.3"...)
	r.KeyHash, r.HasKey = HashKey([]byte("sk-test")), true
	r.Endpoint = Chat
	r.Model = append(r.Model[:0], "qwen-72b"...)
	r.ServedModel = append(r.ServedModel[:0], "qwen-72b"...)
	r.Upstream = append(r.Upstream[:0], "fleet-a"...)
	r.Tried = append(r.Tried[:0], `["fleet-a/qwen-72b"]`...)
	r.Status = 200
	r.TTFT, r.Latency = 120*time.Millisecond, 870*time.Millisecond
	r.RequestBody = append(r.RequestBody[:0], smallRequest...)
	r.RequestScanned = true // as the proxy sends it: smallRequest offers no tools, has no images
	r.ResponseBody = append(r.ResponseBody[:0], smallAnswer...)
	return r
}

const smallRequest = `{"model":"qwen-72b","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly and precisely; cite sources when you can."},{"role":"user","content":"What is the capital of France, and roughly how many people live there? Please also name two famous museums in the city and say in one sentence what each is known for."}],"temperature":0.7,"max_tokens":512,"stream":false}`

const smallAnswer = `{"id":"chatcmpl-9f8e7d6c5b4a","object":"chat.completion","created":1730000000,"model":"qwen-72b","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France, with about 2.1 million people in the city proper. The Louvre is known for the Mona Lisa and its vast collection; the Musée d'Orsay for Impressionist paintings in a former railway station."},"finish_reason":"stop"}],"usage":{"prompt_tokens":61,"completion_tokens":52,"total_tokens":113}}`

// answer6KB is a ~6 KB non-streaming chat answer: the text of a recorded
// reasoning stream, one tool call and usage, encoded with encoding/json.
func answer6KB(t testing.TB) []byte {
	t.Helper()
	ref := refAssemble(t, ndjsonFromSSE(t, "zai-glm-reasoning-content.sse"))
	text := ref.choices[0].reasoningContent + ref.choices[0].content
	for len(text) < 5800 {
		text += "\n\n" + text
	}
	text = text[:5800]
	for !utf8.ValidString(text) {
		text = text[:len(text)-1]
	}
	b, err := json.Marshal(map[string]any{
		"id": "chatcmpl-6kb", "object": "chat.completion", "created": 1730000000, "model": "glm-4.7",
		"choices": []any{map[string]any{
			"index": 0, "finish_reason": "tool_calls",
			"message": map[string]any{
				"role": "assistant", "content": text,
				"tool_calls": []any{map[string]any{"id": "call_1", "type": "function",
					"function": map[string]any{"name": "lookup", "arguments": `{"q":"capital of France"}`}}},
			},
		}},
		"usage": map[string]any{"prompt_tokens": 1200, "completion_tokens": 1400, "total_tokens": 2600},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
