package logsink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the sqlite3 driver
)

// dsnParams: NORMAL sync (durable at checkpoints, never corrupt in WAL
// mode), a busy timeout for other connections (a reader's `sqlite3` shell),
// and BEGIN IMMEDIATE so a transaction takes the write lock at its start
// instead of failing half way. WAL is set by filePragmas, after the page
// size, which WAL mode freezes.
const dsnParams = "?_synchronous=NORMAL&_busy_timeout=5000&_txlock=immediate"

// filePragmas run first on every file opened. A new file gets 16 KiB pages:
// a commit writes each dirty page to the WAL in its own system calls, and
// records of a few KB fill 4 KiB pages (SQLite's default) four times as
// often (BenchmarkInsert/thread measures it). An existing
// file keeps its page size: SQLite ignores the pragma once a file has
// tables. Then WAL, so readers never block the writer; the mode is stored
// in the file.
const filePragmas = "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL;"

// columns are the columns of table requests after id, in insert order, with
// the declaration used to create them or add them to an older file.
var columns = [...]struct{ name, decl string }{
	{"request_id", "TEXT NOT NULL DEFAULT ''"},
	{"ts_ms", "INTEGER NOT NULL DEFAULT 0"},
	{"client_ip", "TEXT NOT NULL DEFAULT ''"},
	{"key_hash", "TEXT NOT NULL DEFAULT ''"},
	{"endpoint", "TEXT NOT NULL DEFAULT ''"},
	{"model", "TEXT NOT NULL DEFAULT ''"},
	{"served_model", "TEXT NOT NULL DEFAULT ''"},
	{"upstream", "TEXT NOT NULL DEFAULT ''"},
	{"tried", "TEXT NOT NULL DEFAULT '[]'"},
	{"stream", "INTEGER NOT NULL DEFAULT 0"},
	{"status", "INTEGER NOT NULL DEFAULT 0"},
	{"error", "TEXT NOT NULL DEFAULT ''"},
	{"prompt_tokens", "INTEGER"},
	{"completion_tokens", "INTEGER"},
	{"total_tokens", "INTEGER"},
	{"has_tools", "INTEGER NOT NULL DEFAULT 0"},
	{"tool_calls", "TEXT NOT NULL DEFAULT '[]'"},
	{"multimodal", "INTEGER NOT NULL DEFAULT 0"},
	{"ttft_ms", "INTEGER NOT NULL DEFAULT 0"},
	{"latency_ms", "INTEGER NOT NULL DEFAULT 0"},
	{"request_body", "TEXT"},
	{"response_body", "TEXT"},
	{"truncated", "INTEGER NOT NULL DEFAULT 0"},
	// Added after the first release: NULL in the rows of older files.
	{"route", "TEXT"},
	{"cached_tokens", "INTEGER"},
	{"node", "TEXT"},
}

var (
	createSQL = func() string {
		var b strings.Builder
		b.WriteString("CREATE TABLE IF NOT EXISTS requests (\n\tid INTEGER PRIMARY KEY")
		for _, c := range columns {
			b.WriteString(",\n\t" + c.name + " " + c.decl)
		}
		b.WriteString("\n);\nCREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);\n")
		return b.String()
	}()
	indexSQL = `CREATE INDEX IF NOT EXISTS requests_ts_ms ON requests(ts_ms);
CREATE INDEX IF NOT EXISTS requests_model ON requests(model);
CREATE INDEX IF NOT EXISTS requests_upstream ON requests(upstream);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status);
`
	insertSQL = func() string {
		var b strings.Builder
		b.WriteString("INSERT INTO requests (")
		for i, c := range columns {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(c.name)
		}
		b.WriteString(") VALUES (")
		for i := range columns {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('?')
		}
		b.WriteString(")")
		return b.String()
	}()
)

// month is a calendar month in UTC.
type month struct{ year, mon int }

func monthOf(t time.Time) month {
	t = t.UTC()
	return month{t.Year(), int(t.Month())}
}

func monthOfMs(ms int64) month { return monthOf(time.UnixMilli(ms)) }

func (m month) before(n month) bool {
	return m.year < n.year || (m.year == n.year && m.mon < n.mon)
}

func (m month) String() string {
	return fmt.Sprintf("%04d-%02d", m.year, m.mon)
}

func parseMonth(s string) (month, bool) {
	t, err := time.Parse("2006-01", s)
	if err != nil {
		return month{}, false
	}
	return monthOf(t), true
}

// sqliteStore is the open database file. Only the writer goroutine uses
// it.
type sqliteStore struct {
	path        string
	node        string // the node column
	storeBodies bool
	db          *sql.DB // nil after a rotation could not open the fresh file
	ins         *insertThread
	mon         month
	file        os.FileInfo // of path when opened: another file there means ours was removed
	log         func(msg string, args ...any)
}

var _ store = (*sqliteStore)(nil)

func (st *sqliteStore) month() month { return st.mon }

// openStore opens path, creating it and its folder, brings the schema up to
// date and reads the file's month; a fresh file gets now's. A new file and
// its folder are private (0600, 0700): prompts are private data. SQLite
// gives the WAL and shared-memory files the mode of the database file.
func openStore(path, node string, now month) (*sqliteStore, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("cannot create folder for %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	file, err := f.Stat()
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	db, err := sql.Open("sqlite3", path+dsnParams)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	st := &sqliteStore{path: path, node: node, db: db, file: file, log: func(string, ...any) {}}
	if err := st.init(now); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	if st.ins, err = openInsertThread(path, insertSQL, len(columns)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	return st, nil
}

func (st *sqliteStore) init(now month) error {
	if _, err := st.db.Exec(filePragmas); err != nil {
		return fmt.Errorf("cannot set page size and WAL: %w", err)
	}
	if _, err := st.db.Exec(createSQL); err != nil {
		return fmt.Errorf("cannot create tables: %w", err)
	}
	if err := st.migrate(); err != nil {
		return err
	}
	if _, err := st.db.Exec(indexSQL); err != nil {
		return fmt.Errorf("cannot create indexes: %w", err)
	}
	var v string
	err := st.db.QueryRow("SELECT value FROM meta WHERE key = 'month'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := st.db.Exec("INSERT INTO meta (key, value) VALUES ('month', ?)", now.String()); err != nil {
			return fmt.Errorf("cannot stamp month: %w", err)
		}
		st.mon = now
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read month: %w", err)
	}
	m, ok := parseMonth(v)
	if !ok {
		return fmt.Errorf("meta month %q is not YYYY-MM", v)
	}
	st.mon = m
	return nil
}

// migrate adds the columns an older file lacks.
func (st *sqliteStore) migrate() error {
	rows, err := st.db.Query("SELECT name FROM pragma_table_info('requests')")
	if err != nil {
		return fmt.Errorf("cannot read columns: %w", err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			_ = rows.Close()
			return fmt.Errorf("cannot read columns: %w", err)
		}
		have[n] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("cannot read columns: %w", err)
	}
	for _, c := range columns {
		if have[c.name] {
			continue
		}
		if _, err := st.db.Exec("ALTER TABLE requests ADD COLUMN " + c.name + " " + c.decl); err != nil {
			return fmt.Errorf("cannot add column %s: %w", c.name, err)
		}
	}
	return nil
}

// maxKeptBatch is the largest packed batch whose memory is kept for the
// next one; a replay of big records should not pin its size for good.
const maxKeptBatch = 16 << 20

// insert writes rows in one transaction, on the insert thread.
func (st *sqliteStore) insert(ctx context.Context, rows []row) error {
	if st.db != nil && st.removed() {
		// Someone deleted or replaced the file (to start afresh, or by
		// a rotation of their own): records written on would go to a
		// file no one can open. Its last records are in it already.
		st.log("request log file was removed or replaced; writing to a new one", "file", st.path)
		_ = st.close()
		st.db = nil
	}
	if st.db == nil {
		// A rotation could not open the fresh file, or ours was removed;
		// open one at path.
		fresh, err := openStore(st.path, st.node, st.mon)
		if err != nil {
			return err
		}
		fresh.storeBodies, fresh.log = st.storeBodies, st.log
		*st = *fresh
	}
	buf := st.ins.buf[:0]
	for i := range rows {
		buf = rows[i].appendPacked(buf, st.storeBodies, st.node)
		pause()
	}
	err := st.ins.run(ctx, buf, len(rows))
	if cap(buf) <= maxKeptBatch {
		st.ins.buf = buf
	}
	return err
}

// removed reports whether path no longer names the file opened: a stat
// per batch.
func (st *sqliteStore) removed() bool {
	fi, err := os.Stat(st.path)
	return errors.Is(err, fs.ErrNotExist) || err == nil && !os.SameFile(fi, st.file)
}

// close checkpoints the WAL into the file and closes it, so that the file
// stands alone.
func (st *sqliteStore) close() error {
	if st.db == nil {
		return nil
	}
	st.ins.close()
	_, err := st.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	if cerr := st.db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot close %s: %w", st.path, err)
	}
	return nil
}

// rotate closes the file, renames it to <stem>-YYYY-MM<ext> after the month
// it holds, and opens a fresh one for now. If closing or renaming fails the
// old file is reopened, so that records keep a home; the caller retries
// later.
func (st *sqliteStore) rotate(now month) (string, error) {
	dst := rotatedName(st.path, st.mon)
	renameErr := st.close()
	if renameErr == nil {
		renameErr = os.Rename(st.path, dst)
	}
	if renameErr == nil {
		// A clean close removes both; move any left so that they are
		// not taken for the fresh file's.
		for _, sfx := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(st.path + sfx); err == nil {
				_ = os.Rename(st.path+sfx, dst+sfx)
			}
		}
	}
	fresh, err := openStore(st.path, st.node, now)
	if err != nil {
		st.db = nil // insert tries again
		return "", err
	}
	fresh.storeBodies, fresh.log = st.storeBodies, st.log
	*st = *fresh
	if renameErr != nil {
		return "", fmt.Errorf("cannot rotate %s to %s: %w", st.path, dst, renameErr)
	}
	return dst, nil
}

// rotatedName is <stem>-YYYY-MM<ext> beside path; if that exists, a numeric
// suffix is added rather than overwrite it.
func rotatedName(path string, m month) string {
	ext := filepath.Ext(path)
	stem := strings.TrimSuffix(path, ext) + "-" + m.String()
	name := stem + ext
	for i := 1; exists(name); i++ {
		name = stem + "." + strconv.Itoa(i) + ext
	}
	return name
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}
