package logsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

// TestFilePages: a new file gets 16 KiB pages and WAL; a file written with
// other pages keeps them (SQLite cannot change them in WAL mode) and still
// takes records.
func TestFilePages(t *testing.T) {
	pragma := func(path, name string) string {
		var v string
		if err := openDB(t, path).QueryRow("PRAGMA " + name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name    string
		fixture string // copied in first; "" = no file yet
		page    string
	}{
		{"new file", "", "16384"},
		{"release 1 file, 4 KiB pages", "schema-v1.db", "4096"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := testOptions(t)
			o.Now = func() time.Time { return time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC) }
			if c.fixture != "" {
				b, err := os.ReadFile(filepath.Join("testdata", c.fixture))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(o.Path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			s.Put(smallRecord(AcquireRecord(), "pages", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC).UnixMilli()))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := pragma(o.Path, "page_size"); got != c.page {
				t.Errorf("page_size %s, want %s", got, c.page)
			}
			if got := pragma(o.Path, "journal_mode"); got != "wal" {
				t.Errorf("journal_mode %s, want wal", got)
			}
			var n int
			if err := openDB(t, o.Path).QueryRow("SELECT count(*) FROM requests WHERE request_id = 'pages'").Scan(&n); err != nil || n != 1 {
				t.Fatalf("record: %d, %v", n, err)
			}
		})
	}
}

// TestInsertInterrupted: a batch whose context ends while the insert thread
// works is interrupted: insert returns the context's error and leaves
// nothing of the batch in the file, and the next batch goes in.
func TestInsertInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stop.db")
	st, err := openStore(path, "gw", monthOf(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	rows := sharedRows("stop-", 200_000) // seconds of work
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := st.insert(ctx, rows); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("insert: %v, want context.DeadlineExceeded", err)
	}
	if err := st.insert(ctx, rows[:3]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("insert with an ended context: %v, want context.DeadlineExceeded", err)
	}
	if err := st.insert(context.Background(), rows[:3]); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, path); n != 3 {
		t.Fatalf("%d rows in the file, want the 3 of the batch that finished", n)
	}
}

// TestInsertWaitsOffThread: while SQLite works on a batch (here: waits for
// a write lock another connection holds) the writer's goroutine waits on
// the network poller, not in a C call, so with one P the requests keep
// running. A goroutine in a cgo call shows as [syscall].
func TestInsertWaitsOffThread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wait.db")
	st, err := openStore(path, "gw", monthOf(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := openDB(t, path).Begin() // BEGIN DEFERRED ...
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec("DELETE FROM requests"); err != nil { // ... now holds the write lock
		t.Fatal(err)
	}
	rows := sharedRows("wait-", 3)
	done := make(chan error, 1)
	go func() { done <- st.insert(context.Background(), rows) }()
	state := ""
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if state = goroutineState("(*insertThread).run"); state == "IO wait" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if state != "IO wait" {
		t.Fatalf("the writer waits for the locked batch in state %q, want IO wait", state)
	}
	select {
	case err := <-done:
		t.Fatalf("insert returned while the file was locked: %v", err)
	default:
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, path); n != 3 {
		t.Fatalf("%d rows in the file, want 3", n)
	}
}

// goroutineState is the state runtime.Stack gives the goroutine whose stack
// has fn in it, "" if none has.
func goroutineState(fn string) string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte(fn)) {
			continue
		}
		head, _, _ := bytes.Cut(g, []byte("\n"))
		_, st, ok := bytes.Cut(head, []byte("["))
		if !ok {
			return ""
		}
		st, _, _ = bytes.Cut(st, []byte("]"))
		st, _, _ = bytes.Cut(st, []byte(",")) // "IO wait, 2 minutes"
		return string(st)
	}
	return ""
}

// TestInsertThreadYields: a batch longer than yieldEvery is cut into
// slices, each ended with a yield of the core.
func TestInsertThreadYields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "yield.db")
	st, err := openStore(path, "gw", monthOf(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	rows := sharedRows("y-", 4000)
	if err := st.insert(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	// 4000 rows are milliseconds of work on any machine (~7 µs a row
	// here): dozens of slices
	if n := st.ins.yields(); n < 10 {
		t.Fatalf("%d yields in a batch of %d rows, want 10 or more", n, len(rows))
	}
}

// sharedRows is n derived rows of ~1 KB records, at most 40 distinct: a big
// batch shares the records (a row is only read by insert).
func sharedRows(idPrefix string, n int) []row {
	dv := deriver{p: newParser()}
	base := make([]row, min(n, 40))
	for i := range base {
		dv.derive(&base[i], smallRecord(&Record{}, fmt.Sprint(idPrefix, i), int64(i)))
	}
	rows := make([]row, n)
	for i := range rows {
		rows[i] = base[i%len(base)]
	}
	return rows
}

// TestInsertKeepsOnlySmallBatches: the packed batch's memory is reused for
// the next batch unless it grew past maxKeptBatch.
func TestInsertKeepsOnlySmallBatches(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "keep.db"), "gw", monthOf(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	st.storeBodies = true // rows of ~1 KB
	if err := st.insert(context.Background(), sharedRows("k-", 10)); err != nil {
		t.Fatal(err)
	}
	if cap(st.ins.buf) == 0 {
		t.Fatal("a small batch's buffer was not kept")
	}
	big := sharedRows("b-", 2*maxKeptBatch/1000)
	if err := st.insert(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	if c := cap(st.ins.buf); c > maxKeptBatch {
		t.Fatalf("a batch of %d bytes kept after the insert", c)
	}
}

// A database file someone deletes, or replaces with another, while gptapi
// runs is followed: the records after it go to a new file at the path, not
// to one no one can open, and the writer says so once.
func TestRemovedFileReopened(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			o := testOptions(t)
			var logs testlog.Buffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("before-", i), 1))
			}
			waitFor(t, "the first records", func() bool { return s.Written() == 5 })
			for _, sfx := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(o.Path + sfx); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
			}
			if how == "replaced" {
				if err := os.WriteFile(o.Path, nil, 0o600); err != nil { // an empty file is an empty database to SQLite
					t.Fatal(err)
				}
			}
			for i := range 7 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("after-", i), 1))
			}
			waitFor(t, "the later records", func() bool { return s.Written() == 12 })
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			ids := requestIDs(t, o.Path)
			if len(ids) != 7 {
				t.Fatalf("the file at the path holds %v, want the 7 records written after it was %s", ids, how)
			}
			if n := strings.Count(logs.String(), "request log file was removed or replaced"); n != 1 {
				t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
			}
		})
	}
}
