package logsink

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Sink. Zero values take the defaults named.
type Options struct {
	Path            string        // SQLite file; its folder is created. Required.
	QueueSize       int           // records waiting in memory; by default 65536
	BatchSize       int           // records per transaction; by default 512
	FlushInterval   time.Duration // longest a record waits in memory; by default 200ms
	StoreBodies     bool          // keep request_body and response_body; else NULL
	MaxBodyLogBytes int           // longer bodies are cut and marked truncated; 0 keeps them whole
	SpillDir        string        // by default "spill" beside Path
	// Node is this gateway's name in the node column; by default the
	// host name.
	Node string
	// Now is the clock that decides the month for rotation; by default
	// time.Now.
	Now    func() time.Time
	Logger *slog.Logger // by default slog.Default()
}

var errNoPath = errors.New("logsink: no database path")

func (o Options) withDefaults() Options {
	if o.QueueSize <= 0 {
		o.QueueSize = 65536
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 200 * time.Millisecond
	}
	if o.SpillDir == "" {
		o.SpillDir = filepath.Join(filepath.Dir(o.Path), "spill")
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
	return o
}

// Sink takes request records and writes them to SQLite from one background
// goroutine. Put is safe for concurrent use and never waits for the
// database.
type Sink struct {
	o  Options
	q  chan *Record
	sp *spiller
	w  *writer

	// inflight counts Puts between their check of closed and their send,
	// so that Close knows when no send can still land in the queue.
	inflight atomic.Int64
	closed   atomic.Bool

	written  atomic.Uint64
	spilled  atomic.Uint64
	spillLog atomic.Int64 // Unix ns of the last spill error logged

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens the database (creating it, adding missing columns, rotating it
// if it belongs to an older month) and starts the writer, which first replays
// the spill files an earlier process left.
func Open(o Options) (*Sink, error) {
	if o.Path == "" {
		return nil, errNoPath
	}
	o = o.withDefaults()
	now := monthOf(o.Now())
	st, err := openStore(o.Path, o.Node, now)
	if err != nil {
		return nil, err
	}
	if st.month != now {
		old := st.month
		name, err := st.rotate(now)
		if err != nil {
			if st.db != nil {
				_ = st.close()
			}
			return nil, err
		}
		o.Logger.Info("request log rotated", "month", old.String(), "file", name)
	}
	sp, err := newSpiller(o.SpillDir)
	if err == nil {
		err = sp.leftovers()
	}
	if err != nil {
		_ = st.close()
		return nil, err
	}
	s := &Sink{
		o:    o,
		q:    make(chan *Record, o.QueueSize),
		sp:   sp,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
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
// appended to a spill file instead. The Sink owns r afterwards. After Close,
// r goes to a spill file, which the next Open replays.
func (s *Sink) Put(r *Record) {
	if r.UID == (UID{}) {
		r.UID = newUID(r.TsMs)
	}
	s.inflight.Add(1)
	if !s.closed.Load() {
		select {
		case s.q <- r:
			s.inflight.Add(-1)
			return
		default:
		}
	}
	s.inflight.Add(-1)
	s.spilled.Add(1)
	if err := s.sp.write(r); err != nil {
		s.logSpillError(err)
	}
}

// logSpillError logs at most one spill failure a second; the record itself
// is kept in memory for the writer.
func (s *Sink) logSpillError(err error) {
	now := time.Now().UnixNano()
	last := s.spillLog.Load()
	if now-last < int64(time.Second) || !s.spillLog.CompareAndSwap(last, now) {
		return
	}
	s.o.Logger.Error("cannot spill request record; keeping it in memory", "err", err)
}

// Close stops accepting records, writes every queued and spilled one,
// checkpoints and closes the database. A record Put after Close goes to a
// spill file.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		for s.inflight.Load() != 0 {
			runtime.Gosched()
		}
		close(s.stop)
		<-s.done
		s.sp.close()
		s.closeErr = s.w.err
	})
	return s.closeErr
}

// QueueDepth is the number of records waiting in memory.
func (s *Sink) QueueDepth() int { return len(s.q) }

// Written is the number of records committed to the database.
func (s *Sink) Written() uint64 { return s.written.Load() }

// Spilled is the number of records that went to a spill file because the
// queue was full (or the Sink closed).
func (s *Sink) Spilled() uint64 { return s.spilled.Load() }

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

// writer is the goroutine that owns the database.
type writer struct {
	s    *Sink
	st   *store
	dv   deriver
	rows []row
	n    int // rows in use
	args []driver.NamedValue

	closing     bool
	fails       int // failed attempts since the last log line
	failing     bool
	lastLog     time.Time
	rotateAfter time.Time // after a failed rotation, when to try again
	err         error     // for Close
}

func (w *writer) run() {
	defer close(w.s.done)
	w.replay()
	tick := time.NewTicker(w.s.o.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case r := <-w.s.q:
			w.add(r)
			if w.n >= w.s.o.BatchSize {
				w.flush()
			}
		case <-tick.C:
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

// finish writes everything left and closes the database.
func (w *writer) finish() {
	w.closing = true
	for drained := false; !drained; {
		select {
		case r := <-w.s.q:
			w.add(r)
			if w.n >= w.s.o.BatchSize {
				w.flush()
			}
		default:
			drained = true
		}
	}
	w.flush()
	w.replay()
	if w.st.db != nil {
		if err := w.st.close(); err != nil && w.err == nil {
			w.err = err
		}
	}
}

// add derives r into the next free row.
// add derives r's row. It yields every yieldRows rows, wherever the
// records come from: replaying a spill file derives up to 8192 of them in a
// row, tens of milliseconds that would otherwise hold the only P until Go
// preempts at 10 ms.
func (w *writer) add(r *Record) {
	if w.n == len(w.rows) {
		w.rows = append(w.rows, row{})
	}
	w.dv.derive(&w.rows[w.n], r)
	w.n++
	if w.n%yieldRows == 0 {
		yield()
	}
}

// flush writes the rows in use. Only when Close gives up on a failing
// database are records put back into spill files.
func (w *writer) flush() {
	if w.n == 0 {
		return
	}
	left := w.write(w.rows[:w.n])
	for i := range left {
		w.s.spilled.Add(1)
		_ = w.s.sp.write(left[i].r) // on failure kept in memory
		left[i].r = nil
	}
	w.releaseRows()
}

func (w *writer) releaseRows() {
	for i := range w.rows[:w.n] {
		w.rows[i].release()
	}
	w.n = 0
}

// write stores rows, rotating the file first if the month changed; rows of
// an earlier month go into the old file before it is closed. It retries a
// failing database until the rows are in, and returns those still unwritten
// only when closing gives up.
func (w *writer) write(rows []row) []row {
	now := monthOf(w.s.o.Now())
	if w.st.db != nil && now != w.st.month && !time.Now().Before(w.rotateAfter) {
		before := func(rw *row) bool { return monthOfMs(rw.r.TsMs).before(now) }
		k := stablePartition(rows, before)
		if left := w.insert(rows[:k]); left != nil {
			return rows
		}
		old := w.st.month
		name, err := w.st.rotate(now)
		if err != nil {
			w.rotateAfter = time.Now().Add(rotateBackoff)
			w.s.o.Logger.Error("cannot rotate request log; writing on in the old file", "err", err)
		} else {
			w.s.o.Logger.Info("request log rotated", "month", old.String(), "file", name)
		}
		rows = rows[k:]
	}
	return w.insert(rows)
}

// insert writes rows in one transaction, retrying with backoff.
func (w *writer) insert(rows []row) []row {
	if len(rows) == 0 {
		return nil
	}
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		err := w.tryInsert(rows)
		if err == nil {
			w.s.written.Add(uint64(len(rows)))
			if w.failing {
				w.s.o.Logger.Info("request records written again", "failures", w.fails)
				w.failing, w.fails = false, 0
			}
			return nil
		}
		w.noteFailure(err, len(rows))
		if w.closing && attempt >= closeAttempts {
			if w.err == nil {
				w.err = fmt.Errorf("cannot write %d request records, kept in %s: %w", len(rows), w.s.o.SpillDir, err)
			}
			return rows
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

func (w *writer) tryInsert(rows []row) error {
	if w.st.db == nil {
		// A rotation could not open the fresh file; try again.
		st, err := openStore(w.st.path, w.s.o.Node, monthOf(w.s.o.Now()))
		if err != nil {
			return err
		}
		w.st = st
	}
	var err error
	w.args, err = w.st.insert(rows, w.args, w.s.o.StoreBodies)
	return err
}

// noteFailure logs a failing batch at most once per failLogEvery, with the
// number of failed attempts since the last line, not once per record.
func (w *writer) noteFailure(err error, n int) {
	w.fails++
	w.failing = true
	if now := time.Now(); now.Sub(w.lastLog) >= failLogEvery {
		w.s.o.Logger.Error("cannot write request records; retrying", "err", err,
			"failures", w.fails, "batch", n, "queued", len(w.s.q), "spilled", w.s.spilled.Load())
		w.lastLog = now
		w.fails = 0
	}
}

// replay inserts what the spiller holds: records the disk refused, then the
// spill files, oldest first, one transaction each; a file is deleted once its
// records are committed. The rows must be free.
func (w *writer) replay() {
	files, mem := w.s.sp.take()
	for len(mem) > 0 {
		k := min(len(mem), w.s.o.BatchSize)
		for _, r := range mem[:k] {
			w.add(r)
		}
		mem = mem[k:]
		w.flush()
	}
	for i, name := range files {
		if !w.replayFile(name) {
			w.s.sp.putBack(files[i:], nil)
			return
		}
	}
}

// replayFile inserts one spill file's records. It returns false only when
// Close gave up on a failing database; the file then stays. A file that
// cannot be read is left for the next Open.
func (w *writer) replayFile(name string) bool {
	data, err := os.ReadFile(name)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.s.o.Logger.Error("cannot read spill file; leaving it for the next start", "file", name, "err", err)
		}
		return true
	}
	var bad error
	for rest := data; len(rest) > 0; {
		r := AcquireRecord()
		rest, err = nextSpillFrame(rest, r)
		if err != nil {
			ReleaseRecord(r)
			bad = err
			break
		}
		w.add(r)
	}
	left := w.write(w.rows[:w.n])
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
