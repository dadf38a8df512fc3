package logsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gptapi/gptapi/internal/throttle"
)

// Options configure a Sink. What the configuration file sets (configs.Logsink)
// is required here: its defaults live in configs.Default alone, and Open
// refuses a zero size, interval or spill folder instead of guessing one. The
// rest take the defaults named.
type Options struct {
	// Driver is DriverSQLite (Path) or DriverPostgres (DSN).
	Driver string
	// Path is the SQLite file; its folder is created. Required with
	// sqlite.
	Path string
	// DSN is the PostgreSQL connection string; required with postgres.
	// Its password never appears in a log line or an error.
	DSN             string
	QueueSize       int           // records waiting in memory
	BatchSize       int           // records per transaction
	FlushInterval   time.Duration // longest a record waits in memory
	StoreBodies     bool          // keep request_body and response_body; else NULL
	MaxBodyLogBytes int           // longer bodies are cut and marked truncated; 0 keeps them whole
	SpillDir        string        // the spill folder; created
	// MaxPendingBytes bounds the spilled records held in memory while the
	// spill folder refuses writes; past it records are dropped and
	// counted (Dropped).
	MaxPendingBytes int64
	// WriteTimeout bounds the writing of one batch, retries included: a
	// batch the database has not taken by then goes to the spill folder
	// and the writer moves on. By default 30s.
	WriteTimeout time.Duration
	// Node is this gateway's name in the node column; by default the
	// host name.
	Node string
	// Now is the clock that decides the month for rotation and
	// partitions; by default time.Now.
	Now    func() time.Time
	Logger *slog.Logger // by default slog.Default()
}

// The drivers of Options.Driver.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

var (
	errNoPath     = errors.New("logsink: no database path")
	errNoDSN      = errors.New("logsink: no dsn for driver postgres")
	errNoSpillDir = errors.New("logsink: no spill folder")
)

// withDefaults checks the required options and fills in the others.
func (o Options) withDefaults() (Options, error) {
	if o.QueueSize <= 0 || o.BatchSize <= 0 || o.FlushInterval <= 0 || o.MaxPendingBytes <= 0 {
		return o, fmt.Errorf("logsink: QueueSize %d, BatchSize %d, FlushInterval %v and MaxPendingBytes %d must be positive",
			o.QueueSize, o.BatchSize, o.FlushInterval, o.MaxPendingBytes)
	}
	if o.SpillDir == "" {
		return o, errNoSpillDir
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Sink takes request records and writes them to the database from one
// background goroutine. Put is safe for concurrent use and never waits for
// the database or the disk.
type Sink struct {
	o  Options
	q  chan *Record
	sp *spiller
	w  *writer
	// full wakes the writer when a batch is queued. Otherwise it sleeps
	// until its flush tick: a writer woken for every record costs each
	// request a goroutine switch, and with more than one P a thread
	// woken by futex, to handle one record.
	full chan struct{}

	// inflight counts Puts between their check of closed and their send,
	// so that Close knows when no send can still land in the queue.
	inflight atomic.Int64
	closed   atomic.Bool

	written atomic.Uint64
	spilled atomic.Uint64

	cachedFn atomic.Pointer[func(upstream []byte, tokens int64)] // route.go

	// Settings a reload changes live (live.go).
	storeBodies atomic.Bool
	maxBody     atomic.Int64

	// hurry, once set, sends everything to the spill folder instead of
	// the database; cancelOps interrupts the write under way.
	hurry     atomic.Bool
	opCtx     context.Context
	cancelOps context.CancelFunc

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens the database (creating it, adding missing columns, rotating it
// if it belongs to an older month) and starts the writer, which first replays
// the spill files an earlier process left. With postgres a database that
// cannot be reached is not an error: records spill and the writer keeps
// trying.
func Open(o Options) (*Sink, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	var st store
	switch o.Driver {
	case DriverSQLite:
		if o.Path == "" {
			return nil, errNoPath
		}
		now := monthOf(o.Now())
		sq, err := openStore(o.Path, o.Node, now)
		if err != nil {
			return nil, err
		}
		sq.storeBodies, sq.log = o.StoreBodies, o.Logger.Warn
		if sq.mon != now {
			old := sq.mon
			name, err := sq.rotate(now)
			if err != nil {
				if sq.db != nil {
					_ = sq.close()
				}
				return nil, err
			}
			o.Logger.Info("request log rotated", "month", old.String(), "file", name)
		}
		st = sq
	case DriverPostgres:
		if o.DSN == "" {
			return nil, errNoDSN
		}
		pg, err := openPGStore(o)
		if err != nil {
			return nil, err
		}
		st = pg
	default:
		return nil, fmt.Errorf("logsink: unknown driver %q", o.Driver)
	}
	sp, err := newSpiller(o.SpillDir, o.MaxPendingBytes, o.Logger)
	if err == nil {
		err = sp.leftovers()
	}
	if err != nil {
		_ = st.close()
		return nil, err
	}
	sp.start()
	s := &Sink{
		o:    o,
		q:    make(chan *Record, o.QueueSize),
		full: make(chan struct{}, 1),
		sp:   sp,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.opCtx, s.cancelOps = context.WithCancel(context.Background())
	s.SetStoreBodies(o.StoreBodies)
	s.SetMaxBodyLogBytes(o.MaxBodyLogBytes)
	s.w = &writer{
		s:    s,
		st:   st,
		dv:   deriver{p: newParser(), maxBody: o.MaxBodyLogBytes},
		rows: make([]row, o.BatchSize),
	}
	go s.w.run()
	return s, nil
}

// Put hands r to the writer and never blocks: when the queue is full, r is
// encoded into the spill buffer, which a background goroutine writes to a
// spill file. The Sink owns r afterwards. After Close, r goes to a spill
// file, which the next Open replays.
func (s *Sink) Put(r *Record) {
	if r.UID == (UID{}) {
		r.UID = newUID(r.TsMs)
	}
	s.inflight.Add(1)
	if !s.closed.Load() {
		select {
		case s.q <- r:
			s.inflight.Add(-1)
			if len(s.q) >= s.o.BatchSize {
				select {
				case s.full <- struct{}{}:
				default: // already woken
				}
			}
			return
		default:
		}
	}
	s.inflight.Add(-1)
	if s.sp.write(r) {
		s.spilled.Add(1)
	}
}

// Close stops accepting records, writes every queued and spilled one,
// checkpoints and closes the database. A record Put after Close goes to a
// spill file. When the database refuses, Close tries a few times, then
// leaves the records in spill files for the next Open and says so.
func (s *Sink) Close() error { return s.CloseContext(context.Background()) }

// CloseContext is Close, until ctx is done: from then on nothing more is
// written to the database, and every record still queued, in the batch
// under way or held in memory goes to the spill folder at once (the next
// Open writes them). Only records the spill folder refuses too are lost,
// counted in Dropped, and the error says how many.
func (s *Sink) CloseContext(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		for s.inflight.Load() != 0 {
			runtime.Gosched()
		}
		close(s.stop)
		select {
		case <-s.done:
		case <-ctx.Done():
			s.Hurry()
			<-s.done
		}
		s.closeErr = errors.Join(s.w.err, s.sp.close())
	})
	return s.closeErr
}

// CloseNow is Close without waiting for the database: every record queued,
// under way or pending goes to the database only if it is already there,
// else to the spill folder, now. It may be called while Close runs in
// another goroutine (a second SIGTERM): both return once every record is
// in the database or the spill folder.
func (s *Sink) CloseNow() error {
	s.Hurry()
	return s.Close()
}

// Hurry makes the writer stop waiting for the database: the write under way
// is interrupted and from then on every record goes to the spill folder.
// Meant for shutdown; CloseNow calls it.
func (s *Sink) Hurry() {
	s.hurry.Store(true)
	s.cancelOps()
}

// QueueDepth is the number of records waiting in memory.
func (s *Sink) QueueDepth() int { return len(s.q) }

// Written is the number of records committed to the database.
func (s *Sink) Written() uint64 { return s.written.Load() }

// Spilled is the number of records that went to the spill folder because
// the queue was full, the Sink was closed, or the database did not take
// them in time.
func (s *Sink) Spilled() uint64 { return s.spilled.Load() }

// Dropped is the number of records lost because the database and the
// spill folder both refused them and MaxPendingBytes of others already
// waited in memory.
func (s *Sink) Dropped() uint64 { return s.sp.dropped.Load() }

// Retry and log pacing of the writer.
const (
	minBackoff    = 50 * time.Millisecond
	maxBackoff    = 5 * time.Second
	failLogEvery  = 10 * time.Second
	rotateBackoff = time.Minute
	// closeAttempts is how often Close tries a failing batch before it
	// puts the records back into spill files for the next Open.
	closeAttempts = 5
)

// store is where the writer puts rows: a SQLite file (sqliteStore) or a
// PostgreSQL database (pgStore). Only the writer goroutine uses it.
type store interface {
	// insert writes rows in one transaction, all or none; ctx bounds it.
	insert(ctx context.Context, rows []row) error
	// month is the month the store writes into. When the clock's month
	// differs, the writer puts the rows of earlier months in, then calls
	// rotate.
	month() month
	// rotate moves on to month now: SQLite renames its file and opens a
	// fresh one; PostgreSQL makes sure now's and next month's partitions
	// exist. It returns what to log as the rotated file, if anything.
	rotate(now month) (string, error)
	close() error
}

// writer is the goroutine that owns the database.
type writer struct {
	s    *Sink
	st   store
	dv   deriver
	rows []row
	n    int // rows in use

	closing     bool
	fails       int // failed attempts since the last log line
	failing     bool
	failLog     throttle.Log
	rotateAfter time.Time // after a failed rotation, when to try again
	err         error     // for Close
	nKept       int       // records Close leaves in the spill folder
	lastErr     error     // of the last failed insert
}

func (w *writer) run() {
	defer close(w.s.done)
	w.replay()
	tick := time.NewTicker(w.s.o.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-w.s.full:
			w.take()
		case <-tick.C:
			w.take()
			w.flush()
			if len(w.s.q) == 0 && w.s.sp.pending() {
				w.replay()
			}
		case <-w.s.stop:
			w.finish()
			return
		}
	}
}

// take moves the records queued now into the batch, writing each batch
// that fills.
func (w *writer) take() {
	for n := len(w.s.q); n > 0; n-- {
		w.add(<-w.s.q)
		if w.n >= w.s.o.BatchSize {
			w.flush()
		}
	}
}

// finish writes everything left and closes the database. In a hurry, the
// queue goes to the spill folder without a look at the database.
func (w *writer) finish() {
	w.closing = true
	for drained := false; !drained; {
		select {
		case r := <-w.s.q:
			if w.s.hurry.Load() {
				w.spill(r)
				w.kept(1, errHurry)
				continue
			}
			w.add(r)
			if w.n >= w.s.o.BatchSize {
				w.flush()
			}
		default:
			drained = true
		}
	}
	w.flush()
	if !w.s.hurry.Load() {
		w.replay()
	}
	if err := w.st.close(); err != nil && w.err == nil {
		w.err = err
	}
}

// spill hands r to the spill folder.
func (w *writer) spill(r *Record) {
	if w.s.sp.write(r) {
		w.s.spilled.Add(1)
	}
}

// add derives r's row, and pauses for requests wherever the records come
// from: replaying a spill file derives up to 8192 of them in a row.
func (w *writer) add(r *Record) {
	if w.n == len(w.rows) {
		w.rows = append(w.rows, row{})
	}
	w.applyLive()
	w.dv.derive(&w.rows[w.n], r)
	w.reportCached(&w.rows[w.n])
	w.n++
	pause()
}

// flush writes the rows in use. Records the database did not take in
// time (WriteTimeout, or Close giving up, or a hurry) go to the spill
// folder.
func (w *writer) flush() {
	if w.n == 0 {
		return
	}
	left := w.write(w.rows[:w.n])
	for i := range left {
		w.spill(left[i].r)
		left[i].r = nil
	}
	if len(left) > 0 && (w.closing || w.s.hurry.Load()) {
		w.kept(len(left), w.cause())
	}
	w.releaseRows()
}

// cause is why the records of a failed write were not written.
func (w *writer) cause() error {
	if w.lastErr != nil {
		return w.lastErr
	}
	return errHurry
}

var errHurry = errors.New("logsink: told not to wait for the database")

// kept notes for Close that n records stay in the spill folder for the
// next Open.
func (w *writer) kept(n int, cause error) {
	w.nKept += n
	w.err = fmt.Errorf("%d request records not written, kept in %s: %w", w.nKept, w.s.o.SpillDir, cause)
}

func (w *writer) releaseRows() {
	for i := range w.rows[:w.n] {
		w.rows[i].release()
	}
	w.n = 0
}

// write stores rows, rotating first if the month changed; rows of an
// earlier month go into the old file before it is closed. It returns the
// rows still unwritten when the database did not take them in time.
func (w *writer) write(rows []row) []row {
	if w.s.hurry.Load() {
		return rows
	}
	now := monthOf(w.s.o.Now())
	if now != w.st.month() && !time.Now().Before(w.rotateAfter) {
		before := func(rw *row) bool { return monthOfMs(rw.r.TsMs).before(now) }
		k := stablePartition(rows, before)
		if left := w.insert(rows[:k]); left != nil {
			return rows
		}
		old := w.st.month()
		name, err := w.st.rotate(now)
		switch {
		case err != nil:
			w.rotateAfter = time.Now().Add(rotateBackoff)
			w.s.o.Logger.Error("cannot rotate request log; writing on in the old file", "err", err)
		case name != "":
			w.s.o.Logger.Info("request log rotated", "month", old.String(), "file", name)
		}
		rows = rows[k:]
	}
	return w.insert(rows)
}

// insert writes rows in one transaction, retrying with backoff for up to
// WriteTimeout (closeAttempts tries when closing); it returns the rows when
// it gives up.
func (w *writer) insert(rows []row) []row {
	if len(rows) == 0 {
		return nil
	}
	backoff := minBackoff
	deadline := time.Now().Add(w.s.o.WriteTimeout)
	for attempt := 1; ; attempt++ {
		if w.s.hurry.Load() {
			return rows
		}
		ctx, cancel := context.WithDeadline(w.s.opCtx, deadline)
		w.applyLive()
		err := w.st.insert(ctx, rows)
		cancel()
		if err == nil {
			w.lastErr = nil
			w.s.written.Add(uint64(len(rows)))
			if w.failing {
				w.s.o.Logger.Info("request records written again", "failures", w.fails)
				w.failing, w.fails = false, 0
			}
			return nil
		}
		w.noteFailure(err, len(rows))
		w.lastErr = err
		if w.closing && attempt >= closeAttempts || w.s.hurry.Load() {
			return rows
		}
		if !time.Now().Add(backoff).Before(deadline) {
			return rows // stuck: to the spill folder, the writer moves on
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-w.s.stop:
			t.Stop()
			w.closing = true
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// noteFailure logs a failing batch at most once per failLogEvery, with the
// number of failed attempts since the last log line, not once per record.
func (w *writer) noteFailure(err error, n int) {
	w.fails++
	w.failing = true
	if ok, _ := w.failLog.Allow(time.Now(), failLogEvery); ok {
		w.s.o.Logger.Error("cannot write request records; retrying", "err", err,
			"failures", w.fails, "batch", n, "queued", len(w.s.q), "spilled", w.s.spilled.Load())
		w.fails = 0
	}
}

// replay inserts what the spiller holds: the spill files, oldest first, one
// transaction each, each deleted once its records are committed; then the
// frames still in memory, a batch at a time. The rows must be free.
func (w *writer) replay() {
	files, mem := w.s.sp.take()
	for i, name := range files {
		if !w.replayFile(name) {
			w.s.sp.putBack(files[i:], mem)
			return
		}
	}
	for len(mem) > 0 {
		rest, err := w.addFrames(mem[0], w.s.o.BatchSize)
		if err != nil {
			w.s.o.Logger.Error("BUG: spill frames in memory do not decode", "err", err)
			rest = nil
		}
		if left := w.write(w.rows[:w.n]); left != nil {
			if w.closing {
				n := 0
				for _, b := range mem {
					n += countFrames(b)
				}
				w.kept(n, w.cause())
			}
			w.releaseRows()
			w.s.sp.putBack(nil, mem)
			return
		}
		w.releaseRows()
		if mem[0] = rest; len(rest) == 0 {
			mem = mem[1:]
		}
	}
}

// addFrames adds the records of up to max frames of b (all if max <= 0)
// and returns the rest of b.
func (w *writer) addFrames(b []byte, max int) ([]byte, error) {
	for k := 0; len(b) > 0 && (max <= 0 || k < max); k++ {
		r := AcquireRecord()
		rest, err := nextSpillFrame(b, r)
		if err != nil {
			ReleaseRecord(r)
			return b, err
		}
		w.add(r)
		b = rest
	}
	return b, nil
}

// replayFile inserts one spill file's records. It returns false when the
// database did not take them; the file then stays for a later replay. A
// file that cannot be read is left for the next Open.
func (w *writer) replayFile(name string) bool {
	data, err := os.ReadFile(name)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.s.o.Logger.Error("cannot read spill file; leaving it for the next start", "file", name, "err", err)
		}
		return true
	}
	_, bad := w.addFrames(data, 0)
	left := w.write(w.rows[:w.n])
	if left != nil && w.closing {
		w.kept(w.n, w.cause())
	}
	w.releaseRows()
	if left != nil {
		return false
	}
	if bad != nil {
		kept := badName(name)
		w.s.o.Logger.Error("spill file has a damaged tail; its readable records are written", "file", kept, "err", bad)
		if err := os.Rename(name, kept); err == nil {
			return true
		}
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		// Emptied, it cannot be replayed a second time.
		terr := os.Truncate(name, 0)
		w.s.o.Logger.Error("cannot delete spill file", "file", name, "err", err, "truncate_err", terr)
	}
	return true
}

// stablePartition moves the rows for which in is true to the front, keeping
// order on both sides, by swapping (a row owns buffers, so it is never
// duplicated), and returns how many there are.
func stablePartition(rows []row, in func(*row) bool) int {
	k := 0
	for i := range rows {
		if !in(&rows[i]) {
			continue
		}
		for j := i; j > k; j-- {
			rows[j], rows[j-1] = rows[j-1], rows[j]
		}
		k++
	}
	return k
}
