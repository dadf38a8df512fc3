package logsink

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cachedOf is the cached_tokens column of a derived row; -1 for NULL.
func cachedOf(rw *row) int64 {
	if rw.d.set&usageCached == 0 {
		return -1
	}
	return rw.d.cached
}

// cached_tokens comes from usage.prompt_tokens_details.cached_tokens, in
// streams (the usage-only chunk a caller never sees included) and in
// non-stream answers, the same with every parser.
func TestCachedTokens(t *testing.T) {
	hiddenUsage := []byte(`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}` + "\n")
	for _, pn := range parserNames() {
		t.Run(pn, func(t *testing.T) {
			stream := func(file string, extra []byte, want int64) {
				t.Helper()
				chunks := append(trimDone(ndjsonFromSSE(t, file)), '\n')
				chunks = append(chunks, extra...)
				rw := deriveWith(pn, &Record{Endpoint: Chat, Stream: true, Chunks: chunks}, 0)
				if got := cachedOf(rw); got != want {
					t.Fatalf("%s: cached_tokens %d, want %d", file, got, want)
				}
			}
			stream("deepseek-reasoning-tool-call.sse", nil, 320)
			stream("openai-chat-usage.sse", nil, 0) // usage-only last chunk, as hidden from callers
			stream("vllm-chat.sse", nil, 0)
			stream("zai-glm-reasoning-content.sse", nil, 0)
			stream("openrouter-comments-error.sse", nil, 0)
			stream("azure-chat-filters.sse", nil, -1)
			stream("openai-completions.sse", nil, -1)
			// the hidden usage chunk appended by the relay to a stream without one
			stream("azure-chat-filters.sse", hiddenUsage, 4)
			// a later usage object replaces an earlier one wholly
			stream("deepseek-reasoning-tool-call.sse", []byte(`{"choices":[],"usage":{"prompt_tokens":1}}`+"\n"), -1)

			answer := func(body string, want int64) {
				t.Helper()
				rw := deriveWith(pn, &Record{Endpoint: Chat, ResponseBody: []byte(body)}, 0)
				if got := cachedOf(rw); got != want {
					t.Fatalf("%s: cached_tokens %d, want %d", body, got, want)
				}
			}
			answer(smallAnswer, -1)
			answer(`{"usage":{"prompt_tokens":900,"prompt_tokens_details":{"cached_tokens":768},"total_tokens":900}}`, 768)
			answer(`{"usage":{"prompt_tokens_details":{"audio_tokens":3,"cached_tokens":0}}}`, 0)
			answer(`{"usage":{"prompt_tokens_details":null}}`, -1)
			answer(`{"usage":{"prompt_tokens_details":{"cached_tokens":1.5}}}`, -1)
			answer(`{"usage":{"prompt_tokens_details":{"cached_tokens":"7"}}}`, -1)
			// only under prompt_tokens_details: elsewhere it is another count
			answer(`{"usage":{"cached_tokens":9,"completion_tokens_details":{"cached_tokens":9}}}`, -1)
		})
	}
}

// The recorded streams shared with the other packages are the ones tested
// here, so that a new recording there is not missed.
func TestSharedStreamsTested(t *testing.T) {
	shared, _ := filepath.Glob("../../shared/testdata/streams/*.sse")
	if len(shared) == 0 {
		shared, _ = filepath.Glob("/work/shared/testdata/streams/*.sse")
	}
	if len(shared) == 0 {
		t.Skip("no shared recordings on this machine")
	}
	for _, f := range shared {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(streamsDir, filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s: not the same as %s (%v)", f, filepath.Join(streamsDir, filepath.Base(f)), err)
		}
	}
}

func TestRouteString(t *testing.T) {
	f := func(r Route, want string) {
		t.Helper()
		if got := r.String(); got != want {
			t.Fatalf("Route(%d) = %q, want %q", r, got, want)
		}
	}
	f(0, "")
	f(RouteWeighted, "weighted")
	f(RouteLeastLoaded, "least_loaded")
	f(RoutePrefixHit, "prefix_hit")
	f(RoutePrefixNew, "prefix_new")
	f(RoutePrefixBalanced, "prefix_balanced")
	f(RouteStandby, "standby")
	f(RouteStandby+1, "")
}

// route, cached_tokens and node land in their columns; a record without
// a route stores "".
func TestNewColumns(t *testing.T) {
	o := testOptions(t)
	o.Node = "gw-7"
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := AcquireRecord()
	r.RequestID = append(r.RequestID, "a"...)
	r.Endpoint, r.Stream, r.Route = Chat, true, RoutePrefixHit
	r.Chunks = append(r.Chunks, ndjsonFromSSE(t, "deepseek-reasoning-tool-call.sse")...)
	s.Put(r)
	r = AcquireRecord()
	r.RequestID = append(r.RequestID, "b"...)
	r.Endpoint, r.Status = Chat, 404
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, o.Path)
	f := func(id, wantRoute string, wantCached sql.NullInt64) {
		t.Helper()
		var route, node string
		var cached sql.NullInt64
		if err := db.QueryRow("SELECT route, cached_tokens, node FROM requests WHERE request_id = ?", id).Scan(&route, &cached, &node); err != nil {
			t.Fatal(err)
		}
		if route != wantRoute || cached != wantCached || node != "gw-7" {
			t.Fatalf("%s: route %q cached %v node %q", id, route, cached, node)
		}
	}
	f("a", "prefix_hit", sql.NullInt64{Int64: 320, Valid: true})
	f("b", "", sql.NullInt64{})
}

// By default node is the host name.
func TestNodeDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skipf("no host name: %v", err)
	}
	o := testOptions(t)
	o.Node = ""
	if o, err := o.withDefaults(); err != nil || o.Node != host {
		t.Fatalf("default node %q (%v), want %q", o.Node, err, host)
	}
}

// testdata/schema-v1.db was written by the release before route,
// cached_tokens and node (commit cdc9273): three records, WAL checkpointed.
// Opening it adds the columns, NULL in its rows, and keeps every row as it
// was.
func TestMigrateRelease1File(t *testing.T) {
	o := testOptions(t)
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "schema-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.Path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	dump := func() []string {
		rows, err := openDB(t, o.Path).Query(`SELECT id, request_id, ts_ms, model, tried, prompt_tokens,
			response_body, truncated FROM requests WHERE id <= 3 ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id, ts, trunc int64
			var rid, model, tried string
			var prompt sql.NullInt64
			var body sql.NullString
			if err := rows.Scan(&id, &rid, &ts, &model, &tried, &prompt, &body, &trunc); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(id, rid, ts, model, tried, prompt, body, trunc))
		}
		return out
	}
	before := dump()
	if len(before) != 3 {
		t.Fatalf("fixture has %d rows", len(before))
	}
	// the fixture's month is in the past: Open would rotate it away
	o.Now = func() time.Time { return time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC) }
	if m := metaMonth(t, o.Path); m != "2026-01" {
		t.Fatalf("fixture month %q", m)
	}
	o.Node = "gw-new"
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := smallRecord(AcquireRecord(), "after", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC).UnixMilli())
	r.Route = RouteWeighted
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := dump(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("old rows changed:\n%v\n%v", before, after)
	}
	db := openDB(t, o.Path)
	var nulls int
	if err := db.QueryRow(`SELECT count(*) FROM requests WHERE id <= 3 AND route IS NULL AND cached_tokens IS NULL AND node IS NULL`).Scan(&nulls); err != nil || nulls != 3 {
		t.Fatalf("old rows with NULL new columns: %d, %v", nulls, err)
	}
	var route, node string
	if err := db.QueryRow(`SELECT route, node FROM requests WHERE request_id = 'after'`).Scan(&route, &node); err != nil || route != "weighted" || node != "gw-new" {
		t.Fatalf("new row: route %q node %q err %v", route, node, err)
	}
}
