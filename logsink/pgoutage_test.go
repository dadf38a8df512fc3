package logsink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

const pgPassword = "s3cret-pw"

// pgOptions writes to a fresh database on p.
func pgOptions(t *testing.T, p *pgServer) Options {
	o := testOptions(t)
	o.Driver, o.Path = DriverPostgres, ""
	o.DSN = newDB(t, p)
	return o
}

func checkOnce(t *testing.T, dsn string, n int) {
	t.Helper()
	ids := pgIDs(t, dsn)
	var uids int
	if err := pgConn(t, dsn).QueryRow(context.Background(), "SELECT count(DISTINCT uid) FROM requests").Scan(&uids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != n || len(uniq(ids)) != n || uids != n {
		t.Fatalf("%d rows, %d distinct request ids, %d distinct uids; want %d of each", len(ids), len(uniq(ids)), uids, n)
	}
}

// PostgreSQL stopped before gptapi starts: Open succeeds, says so once
// (without the password), records spill, and once the database is up
// every one is written once.
func TestPGDownAtStart(t *testing.T) {
	p := startPG(t)
	o := pgOptions(t, p)
	o.QueueSize, o.WriteTimeout = 100, time.Second
	var logs testlog.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	p.stop(t, "fast")
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open with the database down: %v", err)
	}
	const n = 1000
	for i := range n {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
		if i%100 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if s.Written() != 0 || s.Spilled() == 0 {
		t.Fatalf("written %d spilled %d with the database down", s.Written(), s.Spilled())
	}
	p.start(t)
	waitFor(t, "records once the database is back", func() bool { return s.Written() == n })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, o.DSN, n)
	out := logs.String()
	if !strings.Contains(out, "not reachable") || strings.Contains(out, pgPassword) {
		t.Fatalf("log:\n%s", out)
	}
	t.Logf("%d spilled and replayed", s.Spilled())
}

// PostgreSQL stopped in the middle of a burst and started again: every
// record has exactly one row.
func TestPGDownMidBurst(t *testing.T) {
	p := startPG(t)
	o := pgOptions(t, p)
	o.QueueSize, o.WriteTimeout = 256, time.Second
	o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
			if i%50 == 0 {
				time.Sleep(20 * time.Millisecond) // ~1.2 s of traffic
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	p.stop(t, "immediate") // as a crash: commits in flight are in doubt
	time.Sleep(700 * time.Millisecond)
	p.start(t)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, o.DSN, n)
	t.Logf("%d spilled and replayed, %d dropped", s.Spilled(), s.Dropped())
}

// commitKiller is a TCP proxy to PostgreSQL that, once, forwards a COMMIT
// that follows a COPY and then closes both sides before the server's reply
// reaches the client: the commit lands, the writer sees an error.
type commitKiller struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	killed atomic.Int32
}

func newCommitKiller(t *testing.T, target string) *commitKiller {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &commitKiller{ln: ln, target: target}
	k.armed.Store(true)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go k.serve(c)
		}
	}()
	return k
}

func (k *commitKiller) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", k.target)
	if err != nil {
		return
	}
	defer u.Close()
	go io.Copy(c, u)
	buf := make([]byte, 64<<10)
	copied := false
	for {
		n, err := c.Read(buf)
		if n > 0 {
			b := buf[:n]
			if bytes.Contains(b, []byte(`copy "requests_stage"`)) {
				copied = true
			}
			if copied && k.armed.Load() && bytes.Contains(b, []byte("commit\x00")) && k.armed.CompareAndSwap(true, false) {
				u.Write(b)
				time.Sleep(300 * time.Millisecond) // the server commits
				k.killed.Add(1)
				c.Close()
				u.Close()
				return
			}
			if _, err := u.Write(b); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// The connection is lost between COMMIT and its reply: the batch is
// written again, and the uid key keeps its rows single.
func TestPGCommitInDoubt(t *testing.T) {
	p := sharedPG(t)
	o := pgOptions(t, p)
	k := newCommitKiller(t, fmt.Sprintf("127.0.0.1:%d", p.port))
	o.DSN = strings.Replace(o.DSN, fmt.Sprintf(":%d/", p.port), fmt.Sprintf(":%d/", k.ln.Addr().(*net.TCPAddr).Port), 1)
	o.BatchSize = 100
	var logs testlog.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if k.killed.Load() != 1 {
		t.Fatalf("the proxy cut %d commits, want 1", k.killed.Load())
	}
	if !strings.Contains(logs.String(), "cannot write request records") {
		t.Fatalf("the writer saw no failure:\n%s", logs.String())
	}
	checkOnce(t, strings.Replace(o.DSN, fmt.Sprintf(":%d/", k.ln.Addr().(*net.TCPAddr).Port), fmt.Sprintf(":%d/", p.port), 1), n)
}

// Across a month boundary (injected clock) rows land in their month's
// partition, and the next month's partition exists before it begins.
func TestPGMonthBoundary(t *testing.T) {
	p := sharedPG(t)
	o := pgOptions(t, p)
	clk := newClock(time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC))
	o.Now = clk.now
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	conn := pgConn(t, o.DSN)
	partitions := func() string {
		rows, err := conn.Query(context.Background(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'requests'::regclass ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		return strings.Join(names, " ")
	}
	if got := partitions(); got != "requests_y2026m01 requests_y2026m02" {
		t.Fatalf("partitions at Open on Jan 31: %s", got)
	}
	for i := range 10 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("jan", i), clk.ms()))
	}
	waitFor(t, "January's rows", func() bool { return s.Written() == 10 })
	clk.set(time.Date(2026, 2, 1, 0, 0, 0, 500e6, time.UTC))
	for i := range 10 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("feb", i), clk.ms()))
	}
	// a record of a month long gone (a spill file from last year)
	s.Put(smallRecord(AcquireRecord(), "old", time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC).UnixMilli()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := partitions(); got != "requests_y2025m06 requests_y2026m01 requests_y2026m02 requests_y2026m03" {
		t.Fatalf("partitions after February began: %s", got)
	}
	rows, err := conn.Query(context.Background(), `SELECT tableoid::regclass::text, left(request_id, 3), count(*) FROM requests GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var part, prefix string
		var c int
		rows.Scan(&part, &prefix, &c)
		got = append(got, fmt.Sprint(part, ":", prefix, "=", c))
	}
	if want := "[requests_y2025m06:old=1 requests_y2026m01:jan=10 requests_y2026m02:feb=10]"; fmt.Sprint(got) != want {
		t.Fatalf("rows by partition %v, want %s", got, want)
	}
}

// The columns as PostgreSQL holds them: timestamptz, jsonb, route,
// cached_tokens, node; text PostgreSQL would refuse is cleaned, not a
// reason to refuse the batch.
func TestPGColumns(t *testing.T) {
	o := pgOptions(t, sharedPG(t))
	o.Node = "gw-pg"
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	r := AcquireRecord()
	r.RequestID = append(r.RequestID, "a"...)
	r.TsMs = time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC).UnixMilli()
	r.Endpoint, r.Stream, r.Route, r.Status = Chat, true, RoutePrefixNew, 200
	r.KeyHash, r.HasKey = HashKey([]byte("sk-x")), true
	r.Tried = append(r.Tried, `["fleet-a/qwen"]`...)
	r.Chunks = append(r.Chunks, ndjsonFromSSE(t, "deepseek-reasoning-tool-call.sse")...)
	s.Put(r)
	r = AcquireRecord()
	r.RequestID = append(r.RequestID, "bad\x00\xff"...)
	r.TsMs = time.Now().UnixMilli()
	r.Model = append(r.Model, "m\x00"...)
	r.Tried = append(r.Tried, `not json`...)
	s.Put(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	conn := pgConn(t, o.DSN)
	var (
		ts                                 time.Time
		route, node, keyHash, first, tools string
		cached, prompt                     int64
	)
	if err := conn.QueryRow(context.Background(), `SELECT ts, route, node, key_hash, tried->>0, tool_calls::text, cached_tokens, prompt_tokens
		FROM requests WHERE request_id = 'a'`).Scan(&ts, &route, &node, &keyHash, &first, &tools, &cached, &prompt); err != nil {
		t.Fatal(err)
	}
	if !ts.Equal(time.UnixMilli(r.TsMs)) && ts.UTC() != time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC) || route != "prefix_new" || node != "gw-pg" ||
		keyHash != fmt.Sprintf("%016x", HashKey([]byte("sk-x"))) || first != "fleet-a/qwen" || tools != `["weather"]` || cached != 320 || prompt != 339 {
		t.Fatalf("row a: %v %q %q %q %q %q %d %d", ts.UTC(), route, node, keyHash, first, tools, cached, prompt)
	}
	var rid, model, tried string
	if err := conn.QueryRow(context.Background(), `SELECT request_id, model, tried #>> '{}' FROM requests WHERE request_id LIKE 'bad%'`).Scan(&rid, &model, &tried); err != nil {
		t.Fatal(err)
	}
	if rid != "bad\uFFFD\uFFFD" || model != "m\uFFFD" || tried != "not json" {
		t.Fatalf("cleaned row: %q %q %q", rid, model, tried)
	}
}

// The password of the dsn reaches no error and no log line.
func TestPGPasswordNeverShown(t *testing.T) {
	f := func(dsn string) {
		t.Helper()
		if _, err := parsePGConfig(dsn); err == nil || strings.Contains(err.Error(), pgPassword) {
			t.Fatalf("parsePGConfig(%q): %v", dsn, err)
		}
	}
	f("postgres://u:" + pgPassword + "@127.0.0.1:99999/db")
	f("postgres://u:" + pgPassword + "@[::1/db")
	f("host=127.0.0.1 port=nope password=" + pgPassword)
	if _, err := parsePGConfig("postgres://u:" + pgPassword + "@127.0.0.1:5432/db?sslmode=disable"); err != nil {
		t.Fatalf("a good dsn: %v", err)
	}

	// nothing listens there: connection errors, logged and returned
	o := testOptions(t)
	o.Driver, o.Path = DriverPostgres, ""
	o.DSN = fmt.Sprintf("postgres://u:%s@127.0.0.1:%d/db?sslmode=disable&connect_timeout=1", pgPassword, freePort(t))
	o.WriteTimeout = 200 * time.Millisecond
	var logs testlog.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(smallRecord(AcquireRecord(), "r", 1))
	time.Sleep(400 * time.Millisecond)
	err = s.Close()
	if err == nil || strings.Contains(err.Error(), pgPassword) || strings.Contains(logs.String(), pgPassword) || !strings.Contains(logs.String(), "127.0.0.1") {
		t.Fatalf("Close: %v\nlog:\n%s", err, logs.String())
	}
}
