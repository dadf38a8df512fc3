package logsink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
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

// cancelAfter is a context that is cancelled once Err was asked n times,
// with no Done channel: the driver runs statements on the caller's
// goroutine, and only insert's own checks can see it.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Done() <-chan struct{} { return nil }

func (c *cancelAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestInsertStopsBetweenRows: a batch whose context ends part way stops at
// the next row and leaves nothing of itself in the file.
func TestInsertStopsBetweenRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stop.db")
	st, err := openStore(path, "gw", monthOf(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	dv := deriver{p: newParser()}
	rows := make([]row, 40)
	for i := range rows {
		dv.derive(&rows[i], smallRecord(&Record{}, fmt.Sprint("stop-", i), int64(i)))
	}
	ctx := &cancelAfter{Context: context.Background(), n: 10}
	if err := st.insert(ctx, rows); err != context.Canceled {
		t.Fatalf("insert: %v, want context.Canceled", err)
	}
	if ctx.n > 0 {
		t.Fatalf("insert stopped before the context ended (%d checks left)", ctx.n)
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
