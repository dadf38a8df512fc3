package logsink

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

func TestSinkColumns(t *testing.T) {
	o := testOptions(t)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	chunks := ndjsonFromSSE(t, "openai-tool-calls-parallel.sse")
	r := AcquireRecord()
	r.RequestID = append(r.RequestID, "req-1"...)
	r.TsMs = 1767225600123
	r.ClientIP = append(r.ClientIP, "192.0.2.7"...)
	r.KeyHash, r.HasKey = HashKey([]byte("sk-secret")), true
	r.Endpoint = Chat
	r.Model = append(r.Model, "gpt-4o"...)
	r.ServedModel = append(r.ServedModel, "gpt-4o-2024-08-06"...)
	r.Upstream = append(r.Upstream, "openai"...)
	r.Tried = append(r.Tried, `["fleet-a/gpt-4o","openai/gpt-4o-2024-08-06"]`...)
	r.Stream = true
	r.Status = 200
	r.Error = append(r.Error, "none, really"...)
	r.TTFT, r.Latency = 321*time.Millisecond, 4567*time.Millisecond
	r.RequestBody = append(r.RequestBody, `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}],"stream":true}`...)
	r.Chunks = append(r.Chunks, chunks...)
	s.Put(r)

	r = AcquireRecord()
	r.RequestID = append(r.RequestID, "req-2"...)
	r.Endpoint = Embeddings
	r.Status = 404
	r.Error = append(r.Error, `model "x" not found`...)
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Written() != 2 || s.Spilled() != 0 || s.QueueDepth() != 0 {
		t.Fatalf("written %d spilled %d queued %d", s.Written(), s.Spilled(), s.QueueDepth())
	}

	db := openDB(t, o.Path)
	type cols struct {
		requestID, clientIP, keyHash, endpoint, model, servedModel, upstream, tried string
		tsMs, stream, status                                                        int64
		errText                                                                     string
		prompt, completion, total                                                   sql.NullInt64
		hasTools                                                                    int64
		toolCalls                                                                   string
		multimodal, ttft, latency                                                   int64
		reqBody, respBody                                                           sql.NullString
		truncated                                                                   int64
	}
	read := func(id string) cols {
		var c cols
		err := db.QueryRow(`SELECT request_id, ts_ms, client_ip, key_hash, endpoint, model, served_model, upstream,
			tried, stream, status, error, prompt_tokens, completion_tokens, total_tokens, has_tools, tool_calls,
			multimodal, ttft_ms, latency_ms, request_body, response_body, truncated FROM requests WHERE request_id = ?`, id).Scan(
			&c.requestID, &c.tsMs, &c.clientIP, &c.keyHash, &c.endpoint, &c.model, &c.servedModel, &c.upstream,
			&c.tried, &c.stream, &c.status, &c.errText, &c.prompt, &c.completion, &c.total, &c.hasTools, &c.toolCalls,
			&c.multimodal, &c.ttft, &c.latency, &c.reqBody, &c.respBody, &c.truncated)
		if err != nil {
			t.Fatalf("row %s: %v", id, err)
		}
		return c
	}
	c := read("req-1")
	wantKey := fmt.Sprintf("%016x", HashKey([]byte("sk-secret")))
	want := cols{
		requestID: "req-1", tsMs: 1767225600123, clientIP: "192.0.2.7", keyHash: wantKey, endpoint: "chat",
		model: "gpt-4o", servedModel: "gpt-4o-2024-08-06", upstream: "openai",
		tried: `["fleet-a/gpt-4o","openai/gpt-4o-2024-08-06"]`, stream: 1, status: 200, errText: "none, really",
		prompt: sql.NullInt64{Int64: 417, Valid: true}, completion: sql.NullInt64{Int64: 44, Valid: true},
		total: sql.NullInt64{Int64: 461, Valid: true}, hasTools: 1, toolCalls: `["get_weather","get_product_name"]`,
		multimodal: 1, ttft: 321, latency: 4567, reqBody: c.reqBody, respBody: c.respBody,
	}
	if c != want {
		t.Fatalf("row req-1:\n got %+v\nwant %+v", c, want)
	}
	if c.reqBody.String != `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}],"stream":true}` {
		t.Fatalf("request_body %q", c.reqBody.String)
	}
	checkAgainstRef(t, []byte(c.respBody.String), refAssemble(t, chunks), true)
	// text columns hold text, so that SQL comparisons and json_extract work
	var typ string
	var name string
	if err := db.QueryRow(`SELECT typeof(model), json_extract(response_body, '$.choices[0].message.tool_calls[1].function.name')
		FROM requests WHERE model = 'gpt-4o'`).Scan(&typ, &name); err != nil || typ != "text" || name != "get_product_name" {
		t.Fatalf("typeof(model) %q, tool name %q, err %v", typ, name, err)
	}

	c = read("req-2")
	if c.keyHash != "" || c.tried != "[]" || c.toolCalls != "[]" || c.endpoint != "embeddings" || c.status != 404 ||
		c.prompt.Valid || c.completion.Valid || c.total.Valid || c.hasTools != 0 || c.stream != 0 || c.errText != `model "x" not found` {
		t.Fatalf("row req-2: %+v", c)
	}
	if c.reqBody.String != "" || !c.reqBody.Valid {
		t.Fatalf("stored bodies of an empty record: %+v %+v", c.reqBody, c.respBody)
	}

	// the schema: indexes, meta month
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type='index' AND tbl_name='requests' AND name IN
		('requests_ts_ms','requests_model','requests_upstream','requests_status')`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d indexes, err %v", n, err)
	}
	if m := metaMonth(t, o.Path); m != time.Now().UTC().Format("2006-01") {
		t.Fatalf("meta month %q", m)
	}
}

func TestStoreBodiesOff(t *testing.T) {
	o := testOptions(t)
	o.StoreBodies = false
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "a", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var req, resp sql.NullString
	var prompt sql.NullInt64
	if err := openDB(t, o.Path).QueryRow("SELECT request_body, response_body, prompt_tokens FROM requests").Scan(&req, &resp, &prompt); err != nil {
		t.Fatal(err)
	}
	if req.Valid || resp.Valid {
		t.Fatalf("bodies stored with StoreBodies off: %v %v", req, resp)
	}
	if prompt.Int64 != 61 {
		t.Fatalf("usage not derived with StoreBodies off: %v", prompt)
	}
}

func TestTruncation(t *testing.T) {
	f := func(in string, max int, want string, wantCut bool) {
		t.Helper()
		got, cut := cutUTF8([]byte(in), max)
		if string(got) != want || cut != wantCut {
			t.Fatalf("cutUTF8(%q, %d) = %q %v, want %q %v", in, max, got, cut, want, wantCut)
		}
	}
	f("hello", 0, "hello", false)
	f("hello", 5, "hello", false)
	f("hello", 4, "hell", true)
	f("héllo", 2, "h", true) // é is 2 bytes: not split
	f("héllo", 3, "hé", true)
	f("a😀b", 4, "a", true) // 4-byte rune
	f("a😀b", 5, "a😀", true)
	f("😀", 1, "", true)

	o := testOptions(t)
	o.MaxBodyLogBytes = 10
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := AcquireRecord()
	r.RequestID = append(r.RequestID, "long"...)
	r.RequestBody = append(r.RequestBody, `{"a":"ééééé"}`...)
	r.ResponseBody = append(r.ResponseBody, `short`...)
	s.Put(r)
	r = AcquireRecord()
	r.RequestID = append(r.RequestID, "short"...)
	r.RequestBody = append(r.RequestBody, `{}`...)
	s.Put(r)
	r = AcquireRecord()
	r.RequestID = append(r.RequestID, "cut-stream"...)
	r.Stream, r.ChunksCut, r.Endpoint = true, true, Chat
	r.Chunks = append(r.Chunks, `{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}`...)
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	g := func(id, wantReq, wantResp string, wantTrunc int) {
		t.Helper()
		var req, resp string
		var trunc int
		if err := openDB(t, o.Path).QueryRow("SELECT request_body, response_body, truncated FROM requests WHERE request_id=?", id).Scan(&req, &resp, &trunc); err != nil {
			t.Fatal(err)
		}
		if req != wantReq || resp != wantResp || trunc != wantTrunc {
			t.Fatalf("%s: %q %q %d, want %q %q %d", id, req, resp, trunc, wantReq, wantResp, wantTrunc)
		}
	}
	g("long", `{"a":"éé`, "short", 1)
	g("short", `{}`, "", 0)
	g("cut-stream", "", `{"id":"x",`, 1)
}

func TestKeyHash(t *testing.T) {
	f := func(h uint64) {
		t.Helper()
		rw := deriveWith("fastjson", &Record{Endpoint: Chat, KeyHash: h, HasKey: true}, 0)
		if got, want := string(rw.keyHash[:]), fmt.Sprintf("%016x", h); got != want {
			t.Fatalf("key_hash of %d = %s, want %s", h, got, want)
		}
	}
	f(0)
	f(1)
	f(0xdeadbeef)
	f(1 << 63)
	f(^uint64(0))
	f(HashKey([]byte("sk-test")))
	if HashKey([]byte("a")) == HashKey([]byte("b")) || HashKey(nil) != HashKey([]byte{}) {
		t.Fatal("HashKey does not tell keys apart")
	}
	// the raw key is nowhere in the file
	o := testOptions(t)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := smallRecord(AcquireRecord(), "k", 1)
	r.KeyHash = HashKey([]byte("sk-very-secret-key"))
	hexHash := fmt.Appendf(nil, "%016x", r.KeyHash)
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(o.Path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("sk-very-secret-key")) || !bytes.Contains(raw, hexHash) {
		t.Fatal("key_hash is not the hex hash of the key")
	}
}

// Records before and after a month change land in the files of their
// months; the old file is renamed after its month and the new one stamped.
// With queued set, the October records still wait in memory when the month
// turns, so the batch that carries them is split between the files.
func TestRotationClock(t *testing.T) {
	f := func(t *testing.T, queued bool) {
		o := testOptions(t)
		if queued {
			o.FlushInterval, o.BatchSize = time.Hour, 1000
		}
		clk := newClock(time.Date(2026, 10, 31, 23, 59, 0, 0, time.UTC))
		o.Now = clk.now
		s, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("oct-%d", i), clk.ms()))
		}
		if queued {
			// in memory until Close: an hour's tick, a batch of 1000
			if s.Written() != 0 {
				t.Fatal("records written before their batch was full")
			}
		} else {
			waitFor(t, "october records written", func() bool { return s.Written() == 50 })
		}
		clk.set(time.Date(2026, 11, 1, 0, 0, 1, 0, time.UTC))
		for i := range 30 {
			s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("nov-%d", i), clk.ms()))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		old := filepath.Join(filepath.Dir(o.Path), "gptapi-2026-10.db")
		checkFile := func(path, month, prefix string, n int) {
			t.Helper()
			if m := metaMonth(t, path); m != month {
				t.Fatalf("%s: month %s, want %s", path, m, month)
			}
			ids := requestIDs(t, path)
			if len(ids) != n {
				t.Fatalf("%s: %d records, want %d", path, len(ids), n)
			}
			for _, id := range ids {
				if !strings.HasPrefix(id, prefix) {
					t.Fatalf("%s holds %s", path, id)
				}
			}
		}
		// checked before any test connection opens the files
		for _, sfx := range []string{"-wal", "-shm"} {
			if exists(old+sfx) || exists(o.Path+sfx) {
				t.Fatalf("%s left after Close", sfx)
			}
		}
		checkFile(old, "2026-10", "oct-", 50)
		checkFile(o.Path, "2026-11", "nov-", 30)
	}
	t.Run("written", func(t *testing.T) { f(t, false) })
	t.Run("queued", func(t *testing.T) { f(t, true) })
}

// A file stamped with an older month is rotated at Open, without
// overwriting an earlier file of that name.
func TestRotationAtOpen(t *testing.T) {
	o := testOptions(t)
	clk := newClock(date(2026, 9, 15))
	o.Now = clk.now
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("sep-%d", i), clk.ms()))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(o.Path)
	taken := filepath.Join(dir, "gptapi-2026-09.db")
	if err := os.WriteFile(taken, []byte("an earlier file"), 0o644); err != nil {
		t.Fatal(err)
	}

	clk.set(date(2026, 11, 2))
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "nov-0", clk.ms()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(taken); string(b) != "an earlier file" {
		t.Fatal("rotation overwrote an existing file")
	}
	rotated := filepath.Join(dir, "gptapi-2026-09.1.db")
	if n := countRows(t, rotated); n != 5 || metaMonth(t, rotated) != "2026-09" {
		t.Fatalf("%s: %d rows", rotated, n)
	}
	if ids := requestIDs(t, o.Path); len(ids) != 1 || ids[0] != "nov-0" || metaMonth(t, o.Path) != "2026-11" {
		t.Fatalf("fresh file holds %v", ids)
	}
}

// holdWriteLock takes the database's write lock from another connection
// until the returned func is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db := openDB(t, path)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
			t.Error(err)
		}
		conn.Close()
	}
}

// While another connection holds the write lock, Put stays fast: the queue
// fills, records spill, and once the lock is gone every record is written.
func TestLockedDatabase(t *testing.T) {
	o := testOptions(t)
	o.QueueSize = 256
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(t, o.Path)
	const writers, per = 4, 3000
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		maxPut time.Duration
	)
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var worst time.Duration
			for i := range per {
				r := smallRecord(AcquireRecord(), fmt.Sprintf("w%d-%d", w, i), 1)
				t0 := time.Now()
				s.Put(r)
				worst = max(worst, time.Since(t0))
				if i%100 == 0 {
					time.Sleep(5 * time.Millisecond) // spread the Puts over the lock's life
				}
			}
			mu.Lock()
			maxPut = max(maxPut, worst)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if held := time.Since(start); held < 2*time.Second {
		time.Sleep(2*time.Second - held)
	}
	if s.Spilled() == 0 {
		t.Fatal("nothing spilled while the database was locked")
	}
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A Put that waited on the database would take the whole 2 s lock;
	// the bound leaves room for emulated (qemu) and loaded machines.
	if maxPut > 500*time.Millisecond {
		t.Fatalf("slowest Put took %v while the database was locked", maxPut)
	}
	if n := countRows(t, o.Path); n != writers*per || s.Written() != writers*per {
		t.Fatalf("%d rows (Written %d), want %d", n, s.Written(), writers*per)
	}
	if ids := requestIDs(t, o.Path); len(uniq(ids)) != writers*per {
		t.Fatal("duplicate records")
	}
	if f := spillFiles(t, o.SpillDir); len(f) != 0 {
		t.Fatalf("spill files left: %v", f)
	}
	t.Logf("slowest Put %v, %d of %d spilled", maxPut, s.Spilled(), writers*per)
}

func uniq(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// With a queue of one and the writer blocked, records spill; the writer
// replays them once the queue is empty, without waiting for Close, and
// deletes the files.
func TestSpillReplayWhileRunning(t *testing.T) {
	o := testOptions(t)
	o.QueueSize = 1
	o.BatchSize = 1
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(t, o.Path)
	const n = 500
	for i := range n {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("r%d", i), int64(i)))
	}
	if s.Spilled() < n-3 {
		t.Fatalf("spilled %d of %d with a queue of one", s.Spilled(), n)
	}
	waitFor(t, "a spill file", func() bool { return len(spillFiles(t, o.SpillDir)) > 0 })
	release()
	waitFor(t, "spilled records written", func() bool { return s.Written() == n })
	waitFor(t, "spill files deleted", func() bool { return len(spillFiles(t, o.SpillDir)) == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); len(uniq(ids)) != n || len(ids) != n {
		t.Fatalf("%d rows, %d distinct, want %d", len(ids), len(uniq(ids)), n)
	}
}

// Spill files a dead process left are replayed at Open; a file with a torn
// last frame gives up its readable records and is kept aside.
func TestLeftoverSpillReplayedAtOpen(t *testing.T) {
	o := testOptions(t)
	if err := os.MkdirAll(o.SpillDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var sealed, open []byte
	for i := range 100 {
		sealed = appendSpillFrame(sealed, smallRecord(&Record{}, fmt.Sprintf("sealed-%d", i), int64(i)))
	}
	for i := range 10 {
		open = appendSpillFrame(open, smallRecord(&Record{}, fmt.Sprintf("open-%d", i), int64(i)))
	}
	open = open[:len(open)-7] // the process died mid-write
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(o.SpillDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("00000000000000000001-99-1.spill", sealed)
	write("00000000000000000002-99-2.open", open)
	write("unrelated.txt", []byte("not a spill file"))

	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "leftovers written", func() bool { return s.Written() == 109 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ids := uniq(requestIDs(t, o.Path))
	if len(ids) != 109 || !ids["sealed-99"] || !ids["open-8"] || ids["open-9"] {
		t.Fatalf("%d records replayed", len(ids))
	}
	left := spillFiles(t, o.SpillDir)
	if len(left) != 2 || !strings.HasPrefix(left[0], "00000000000000000002-99-2.bad-") || left[1] != "unrelated.txt" {
		t.Fatalf("spill dir holds %v", left)
	}
}

// A record Put after Close is not lost: it waits in a spill file for the
// next Open.
func TestPutAfterClose(t *testing.T) {
	o := testOptions(t)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "before", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "after-1", 2))
	s.Put(smallRecord(AcquireRecord(), "after-2", 3))
	if s.Spilled() != 2 || len(spillFiles(t, o.SpillDir)) == 0 {
		t.Fatalf("spilled %d, files %v", s.Spilled(), spillFiles(t, o.SpillDir))
	}
	for _, f := range spillFiles(t, o.SpillDir) {
		if !strings.HasSuffix(f, spillSealedExt) {
			t.Fatalf("file %s left open after Close", f)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := uniq(requestIDs(t, o.Path)); len(ids) != 3 || !ids["after-1"] || !ids["after-2"] {
		t.Fatalf("records %v", ids)
	}
}

// Many goroutines Put while Close runs: every record ends up either in the
// database or in a spill file the next Open replays.
func TestCloseRace(t *testing.T) {
	o := testOptions(t)
	o.QueueSize = 64
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const writers, per = 4, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("w%d-%d", w, i), 1))
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); len(ids) != writers*per || len(uniq(ids)) != writers*per {
		t.Fatalf("%d records, %d distinct, want %d", len(ids), len(uniq(ids)), writers*per)
	}
}

// failInserts makes every insert fail, as a full disk would, until the
// returned func is called.
func failInserts(t *testing.T, path string) (heal func()) {
	t.Helper()
	db := openDB(t, path)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS fail_flag (x);
		INSERT INTO fail_flag VALUES (1);
		CREATE TRIGGER IF NOT EXISTS fail_insert BEFORE INSERT ON requests
		WHEN (SELECT count(*) FROM fail_flag) > 0 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := db.Exec("DELETE FROM fail_flag"); err != nil {
			t.Fatal(err)
		}
	}
}

// A failing batch is kept and retried, not dropped, and the failure is
// logged once per interval, not once per attempt or record.
func TestFailingBatchRetried(t *testing.T) {
	o := testOptions(t)
	var logs testlog.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	heal := failInserts(t, o.Path)
	for i := range 200 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("r%d", i), 1))
	}
	time.Sleep(time.Second) // several attempts with backoff
	if s.Written() != 0 {
		t.Fatalf("written %d while every insert fails", s.Written())
	}
	heal()
	waitFor(t, "records after the failure", func() bool { return s.Written() == 200 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); len(ids) != 200 || len(uniq(ids)) != 200 {
		t.Fatalf("%d records, %d distinct", len(ids), len(uniq(ids)))
	}
	out := logs.String()
	if n := strings.Count(out, "cannot write request records"); n != 1 || !strings.Contains(out, "disk is full") {
		t.Fatalf("failure logged %d times:\n%s", n, out)
	}
	if !strings.Contains(out, "request records written again") {
		t.Fatalf("recovery not logged:\n%s", out)
	}
}

// When the database still refuses at Close, the records go back to spill
// files, Close says so, and the next Open writes them.
func TestCloseKeepsRecordsOfFailingDatabase(t *testing.T) {
	o := testOptions(t)
	o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	heal := failInserts(t, o.Path)
	for i := range 100 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("r%d", i), 1))
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "kept in") {
		t.Fatalf("Close of a failing database: %v", err)
	}
	if countRows(t, o.Path) != 0 || len(spillFiles(t, o.SpillDir)) == 0 {
		t.Fatal("records not put back into spill files")
	}
	heal()
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); len(ids) != 100 || len(uniq(ids)) != 100 {
		t.Fatalf("%d records after reopening", len(ids))
	}
	if f := spillFiles(t, o.SpillDir); len(f) != 0 {
		t.Fatalf("spill files left: %v", f)
	}
}

// A file from an older version lacks columns: Open adds them.
func TestMigrate(t *testing.T) {
	o := testOptions(t)
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, o.Path)
	if _, err := db.Exec(`CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, model TEXT NOT NULL);
		INSERT INTO requests (request_id, ts_ms, model) VALUES ('old', 1, 'm');
		CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
		INSERT INTO meta VALUES ('month', '` + time.Now().UTC().Format("2006-01") + `');`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "new", 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var tried, tools string
	var multi int
	if err := openDB(t, o.Path).QueryRow("SELECT tried, tool_calls, multimodal FROM requests WHERE request_id='old'").Scan(&tried, &tools, &multi); err != nil {
		t.Fatal(err)
	}
	if tried != "[]" || tools != "[]" || multi != 0 {
		t.Fatalf("added columns read %q %q %d", tried, tools, multi)
	}
	if ids := requestIDs(t, o.Path); len(ids) != 2 || ids[1] != "new" {
		t.Fatalf("records %v", ids)
	}
}

func TestOpenErrors(t *testing.T) {
	f := func(change func(o *Options), want string) {
		t.Helper()
		o := testOptions(t)
		change(&o)
		if _, err := Open(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Open: %v, want an error with %q", err, want)
		}
	}
	f(func(o *Options) { o.Path = "" }, errNoPath.Error())
	f(func(o *Options) { o.Driver = "" }, "unknown driver")
	f(func(o *Options) { o.SpillDir = "" }, errNoSpillDir.Error())
	f(func(o *Options) { o.QueueSize = 0 }, "must be positive")
	f(func(o *Options) { o.BatchSize = 0 }, "must be positive")
	f(func(o *Options) { o.FlushInterval = 0 }, "must be positive")
	f(func(o *Options) { o.MaxPendingBytes = 0 }, "must be positive")
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := testOptions(t)
	o.Path = filepath.Join(blocker, "x.db")
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), blocker) {
		t.Fatalf("Open under a file: %v", err)
	}
}

// Deriving rows yields to the request goroutines once the writer has
// worked yieldEvery since its last yield, whoever calls it: a spill file's
// replay derives thousands in a row.
func TestAddYields(t *testing.T) {
	n := 0
	defer func(f func()) { yield = f }(yield)
	yield = func() { n++ }
	var now int64
	defer func(f func() int64) { yieldClock = f }(yieldClock)
	yieldClock = func() int64 { return now }
	lastYield.Store(0)
	step := int64(yieldEvery) / 4 // each row takes a quarter of the slice
	w := &writer{dv: deriver{p: newParser()}}
	for i := range 40 {
		now += step
		w.add(smallRecord(&Record{}, fmt.Sprint("r", i), int64(i)))
	}
	if n != 10 {
		t.Fatalf("%d yields for 40 rows of a quarter slice each, want 10", n)
	}
}

// TestWriterWakesPerBatch: the writer sleeps while a batch is filling (a
// wake per record costs every request a goroutine switch) and writes the
// batch as soon as it is full, long before its flush tick.
func TestWriterWakesPerBatch(t *testing.T) {
	o := testOptions(t)
	o.FlushInterval, o.BatchSize = time.Hour, 64
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range o.BatchSize - 1 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r-", i), int64(i)))
	}
	// nobody woke the writer to take them
	if d := s.QueueDepth(); d != o.BatchSize-1 {
		t.Fatalf("queue depth %d, want %d", d, o.BatchSize-1)
	}
	s.Put(smallRecord(AcquireRecord(), "last", 1))
	waitFor(t, "the full batch written", func() bool { return s.Written() == uint64(o.BatchSize) })
}
