package logsink

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/valyala/fastjson"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// PostgreSQL keeps the columns of SQLite's table requests, with the request
// start as ts timestamptz (SQLite's ts_ms), tried and tool_calls as jsonb,
// and uid, the record's UID: with ts, a unique key, so that a batch written
// a second time (its commit was in doubt) adds nothing. Bodies stay text:
// they may be cut at max_body_log_bytes or not be JSON at all.
//
// The table is partitioned by month on ts; each partition is created before
// its month begins (at connect, and when the writer's clock enters a new
// month it creates the next), and on demand for a record of a month
// without one (a spill file from long ago). DDL runs under an advisory lock
// so that several gateways starting at once do not collide.
var pgColumns = [...]struct{ name, decl string }{
	{"uid", "uuid NOT NULL"},
	{"ts", "timestamptz NOT NULL"},
	{"request_id", "text NOT NULL DEFAULT ''"},
	{"client_ip", "text NOT NULL DEFAULT ''"},
	{"key_hash", "text NOT NULL DEFAULT ''"},
	{"endpoint", "text NOT NULL DEFAULT ''"},
	{"model", "text NOT NULL DEFAULT ''"},
	{"served_model", "text NOT NULL DEFAULT ''"},
	{"upstream", "text NOT NULL DEFAULT ''"},
	{"tried", "jsonb NOT NULL DEFAULT '[]'"},
	{"stream", "integer NOT NULL DEFAULT 0"},
	{"status", "integer NOT NULL DEFAULT 0"},
	{"error", "text NOT NULL DEFAULT ''"},
	{"prompt_tokens", "bigint"},
	{"completion_tokens", "bigint"},
	{"total_tokens", "bigint"},
	{"has_tools", "integer NOT NULL DEFAULT 0"},
	{"tool_calls", "jsonb NOT NULL DEFAULT '[]'"},
	{"multimodal", "integer NOT NULL DEFAULT 0"},
	{"ttft_ms", "bigint NOT NULL DEFAULT 0"},
	{"latency_ms", "bigint NOT NULL DEFAULT 0"},
	{"request_body", "text"},
	{"response_body", "text"},
	{"truncated", "integer NOT NULL DEFAULT 0"},
	{"route", "text"},
	{"cached_tokens", "bigint"},
	{"node", "text"},
}

// pgDDLLock is the advisory lock key of schema changes ("gptapi" in ASCII).
const pgDDLLock = 0x677074617069

var (
	pgColumnNames = func() []string {
		names := make([]string, len(pgColumns))
		for i, c := range pgColumns {
			names[i] = c.name
		}
		return names
	}()
	pgCreateSQL = func() string {
		var b strings.Builder
		b.WriteString("CREATE TABLE IF NOT EXISTS requests (\n\tid bigint GENERATED ALWAYS AS IDENTITY")
		for _, c := range pgColumns {
			b.WriteString(",\n\t" + c.name + " " + c.decl)
		}
		b.WriteString("\n) PARTITION BY RANGE (ts)")
		return b.String()
	}()
	pgIndexSQL = []string{
		"CREATE UNIQUE INDEX IF NOT EXISTS requests_uid ON requests (uid, ts)",
		"CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
		"CREATE INDEX IF NOT EXISTS requests_model ON requests (model)",
		"CREATE INDEX IF NOT EXISTS requests_upstream ON requests (upstream)",
		"CREATE INDEX IF NOT EXISTS requests_status ON requests (status)",
		"CREATE INDEX IF NOT EXISTS requests_node ON requests (node)",
	}
	pgStageSQL = func() string {
		var b strings.Builder
		b.WriteString("CREATE TEMP TABLE IF NOT EXISTS requests_stage (")
		for i, c := range pgColumns {
			if i > 0 {
				b.WriteString(", ")
			}
			// no defaults, no constraints: every value is given
			b.WriteString(c.name + " " + strings.Fields(c.decl)[0])
		}
		b.WriteString(") ON COMMIT DELETE ROWS")
		return b.String()
	}()
	pgMoveSQL = "INSERT INTO requests (" + strings.Join(pgColumnNames, ", ") + ") SELECT " +
		strings.Join(pgColumnNames, ", ") + " FROM requests_stage ON CONFLICT (uid, ts) DO NOTHING"
)

// pgStore writes to PostgreSQL over one connection, opened lazily and
// again after any failure. Only the writer goroutine uses it.
type pgStore struct {
	cfg         *pgx.ConnConfig
	secret      string // the password, cut out of every error
	node        string
	storeBodies bool

	conn  *pgx.Conn
	mon   month
	parts map[month]bool // partitions known to exist on this connection
	vals  []any
}

var _ store = (*pgStore)(nil)

// parsePGConfig reads a PostgreSQL connection string; the error never holds
// the password.
func parsePGConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, redactErr(fmt.Errorf("logsink: bad dsn: %w", err), dsnPassword(dsn))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "gptapi"
	}
	return cfg, nil
}

// dsnPassword digs the password out of a dsn that did not parse, so that
// it can still be cut from the error: URL userinfo or a password= pair.
func dsnPassword(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				return rest[c+1 : at]
			}
		}
	}
	if i := strings.Index(dsn, "password="); i >= 0 {
		v := dsn[i+len("password="):]
		if j := strings.IndexAny(v, " \t"); j >= 0 {
			v = v[:j]
		}
		return strings.Trim(v, "'")
	}
	return ""
}

// redactErr replaces the password wherever it appears in err's text.
func redactErr(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return redacted{msg: strings.ReplaceAll(err.Error(), secret, "xxxxx"), err: err}
}

// redacted keeps the wrapped error for errors.Is, but its text without the
// password.
type redacted struct {
	msg string
	err error
}

func (r redacted) Error() string { return r.msg }
func (r redacted) Unwrap() error { return r.err }

// openPGStore parses the dsn and tries to connect once; a database that
// cannot be reached now is logged and tried again by every insert.
func openPGStore(o Options) (*pgStore, error) {
	cfg, err := parsePGConfig(o.DSN)
	if err != nil {
		return nil, err
	}
	st := &pgStore{
		cfg:         cfg,
		secret:      cfg.Password,
		node:        o.Node,
		storeBodies: o.StoreBodies,
		mon:         monthOf(o.Now()),
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout+5*time.Second)
	defer cancel()
	if err := st.connect(ctx); err != nil {
		o.Logger.Error("PostgreSQL is not reachable; records spill until it is", "db", st.where(), "err", err)
	}
	return st, nil
}

// where names the database for log lines: host, port, database, user.
func (st *pgStore) where() string {
	return fmt.Sprintf("%s:%d/%s user=%s", st.cfg.Host, st.cfg.Port, st.cfg.Database, st.cfg.User)
}

func (st *pgStore) month() month { return st.mon }

// connect opens the connection, brings the schema up to date, makes the
// partitions of this month and the next, and the staging table.
func (st *pgStore) connect(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, st.cfg)
	if err != nil {
		return redactErr(err, st.secret)
	}
	st.conn, st.parts = conn, map[month]bool{}
	if err := st.schema(ctx); err != nil {
		st.drop()
		return redactErr(err, st.secret)
	}
	if _, err := conn.Exec(ctx, pgStageSQL); err != nil {
		st.drop()
		return redactErr(fmt.Errorf("cannot create staging table: %w", err), st.secret)
	}
	if err := st.ensure(ctx, st.mon, st.mon.next()); err != nil {
		st.drop()
		return err
	}
	return nil
}

// drop closes the connection after a failure; the next insert reconnects.
func (st *pgStore) drop() {
	if st.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = st.conn.Close(ctx)
		cancel()
	}
	st.conn, st.parts = nil, nil
}

// schema creates the table and indexes when missing and adds the columns an
// older version lacks; nothing is dropped.
func (st *pgStore) schema(ctx context.Context) error {
	return st.ddl(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pgCreateSQL); err != nil {
			return fmt.Errorf("cannot create table requests: %w", err)
		}
		for _, c := range pgColumns {
			if _, err := tx.Exec(ctx, "ALTER TABLE requests ADD COLUMN IF NOT EXISTS "+c.name+" "+c.decl); err != nil {
				return fmt.Errorf("cannot add column %s: %w", c.name, err)
			}
		}
		for _, q := range pgIndexSQL {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("cannot create index: %w", err)
			}
		}
		return nil
	})
}

// ddl runs f in a transaction holding the schema lock.
func (st *pgStore) ddl(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := st.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it does nothing
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgDDLLock)); err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// partitionName is requests_yYYYYmMM.
func partitionName(m month) string { return fmt.Sprintf("requests_y%04dm%02d", m.year, m.mon) }

func (m month) next() month {
	if m.mon == 12 {
		return month{m.year + 1, 1}
	}
	return month{m.year, m.mon + 1}
}

func (m month) start() time.Time {
	return time.Date(m.year, time.Month(m.mon), 1, 0, 0, 0, 0, time.UTC)
}

// ensure creates the partitions of months not known to exist.
func (st *pgStore) ensure(ctx context.Context, months ...month) error {
	var missing []month
	for _, m := range months {
		if !st.parts[m] && !containsMonth(missing, m) {
			missing = append(missing, m)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	err := st.ddl(ctx, func(tx pgx.Tx) error {
		for _, m := range missing {
			q := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF requests FOR VALUES FROM ('%s') TO ('%s')",
				partitionName(m), m.start().Format(time.RFC3339), m.next().start().Format(time.RFC3339))
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("cannot create partition %s: %w", partitionName(m), err)
			}
		}
		return nil
	})
	if err != nil {
		return redactErr(err, st.secret)
	}
	for _, m := range missing {
		st.parts[m] = true
	}
	return nil
}

func containsMonth(ms []month, m month) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

// rotate makes sure now's and next month's partitions exist.
func (st *pgStore) rotate(now month) (string, error) {
	st.mon = now
	if st.conn == nil {
		return "", nil // connect makes them
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.ensure(ctx, now, now.next()); err != nil {
		st.drop()
		return "", err
	}
	return "", nil
}

// insert copies rows into the session's staging table and moves them into
// requests in one transaction; a row whose uid is already there (an
// earlier attempt whose commit was in doubt) is skipped. Any failure drops
// the connection: the next attempt starts clean.
func (st *pgStore) insert(ctx context.Context, rows []row) error {
	if st.conn == nil {
		if err := st.connect(ctx); err != nil {
			return err
		}
	}
	err := st.tryInsert(ctx, rows)
	if err != nil {
		st.drop()
		return redactErr(err, st.secret)
	}
	return nil
}

func (st *pgStore) tryInsert(ctx context.Context, rows []row) error {
	var months []month
	for i := range rows {
		if m := monthOfMs(rows[i].r.TsMs); !st.parts[m] && !containsMonth(months, m) {
			months = append(months, m)
		}
	}
	if err := st.ensure(ctx, months...); err != nil {
		return err
	}
	tx, err := st.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it does nothing
	src := &pgRows{st: st, rows: rows, i: -1}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"requests_stage"}, pgColumnNames, src); err != nil {
		return fmt.Errorf("cannot copy %d records: %w", len(rows), err)
	}
	if _, err := tx.Exec(ctx, pgMoveSQL); err != nil {
		return fmt.Errorf("cannot insert %d records: %w", len(rows), err)
	}
	return tx.Commit(ctx)
}

func (st *pgStore) close() error {
	st.drop()
	return nil
}

// pgRows feeds rows to COPY.
type pgRows struct {
	st   *pgStore
	rows []row
	i    int
}

func (s *pgRows) Next() bool {
	s.i++
	if s.i > 0 {
		pause()
	}
	return s.i < len(s.rows)
}

func (s *pgRows) Err() error { return nil }

// Values are the row's columns in pgColumns order. Text is a view of the
// record's bytes when PostgreSQL accepts them as they are (valid UTF-8, no
// NUL), else a cleaned copy; COPY encodes them before insert returns.
func (s *pgRows) Values() ([]any, error) {
	rw := &s.rows[s.i]
	r := rw.r
	keyHash := ""
	if r.HasKey {
		keyHash = b2s(rw.keyHash[:])
	}
	var reqBody, respBody any
	if s.st.storeBodies {
		reqBody, respBody = pgText(rw.reqBody), pgText(rw.respBody)
	}
	s.st.vals = append(s.st.vals[:0],
		[16]byte(r.UID),
		time.UnixMilli(r.TsMs).UTC(),
		pgText(r.RequestID),
		pgText(r.ClientIP),
		keyHash,
		r.Endpoint.String(),
		pgText(r.Model),
		pgText(r.ServedModel),
		pgText(r.Upstream),
		pgJSON(r.Tried),
		boolInt(r.Stream),
		int64(r.Status),
		pgText(r.Error),
		rw.d.count(usagePrompt, rw.d.prompt),
		rw.d.count(usageCompletion, rw.d.completion),
		rw.d.count(usageTotal, rw.d.total),
		boolInt(rw.d.hasTools),
		pgJSON(rw.tools),
		boolInt(rw.d.multimodal),
		r.TTFT.Milliseconds(),
		r.Latency.Milliseconds(),
		reqBody,
		respBody,
		boolInt(rw.truncated),
		r.Route.String(),
		rw.d.count(usageCached, rw.d.cached),
		s.st.node,
	)
	return s.st.vals, nil
}

// pgText is b as PostgreSQL text: invalid UTF-8 and NUL bytes, which it
// refuses (and with them the whole batch), become U+FFFD.
func pgText(b []byte) string {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return b2s(b)
	}
	return strings.ReplaceAll(strings.ToValidUTF8(string(b), "\uFFFD"), "\x00", "\uFFFD")
}

// pgJSON is b as a jsonb value: "[]" for none, b when it is JSON that
// PostgreSQL takes (it refuses \u0000), else b as a JSON string.
func pgJSON(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	if fastjson.ValidateBytes(b) == nil && !bytes.Contains(b, []byte(`\u0000`)) && utf8.Valid(b) {
		return b2s(b)
	}
	return string(jsonw.AppendString(nil, []byte(pgText(bytes.ReplaceAll(b, []byte(`\u0000`), nil)))))
}
