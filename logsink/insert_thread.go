//go:build cgo

package logsink

/*
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// SQLite's C API, from the library go-sqlite3 links into the binary.
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
int sqlite3_close(sqlite3 *db);
int sqlite3_busy_timeout(sqlite3 *db, int ms);
int sqlite3_exec(sqlite3 *db, const char *sql, int (*cb)(void *, int, char **, char **), void *arg, char **err);
int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int n, sqlite3_stmt **stmt, const char **tail);
int sqlite3_step(sqlite3_stmt *stmt);
int sqlite3_reset(sqlite3_stmt *stmt);
int sqlite3_finalize(sqlite3_stmt *stmt);
int sqlite3_clear_bindings(sqlite3_stmt *stmt);
int sqlite3_bind_null(sqlite3_stmt *stmt, int i);
int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, long long v);
int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *v, int n, void (*free)(void *));
int sqlite3_get_autocommit(sqlite3 *db);
const char *sqlite3_errmsg(sqlite3 *db);
void sqlite3_interrupt(sqlite3 *db);

#define GPTAPI_SQLITE_OK 0
#define GPTAPI_SQLITE_MISUSE 21
#define GPTAPI_SQLITE_DONE 101
#define GPTAPI_SQLITE_OPEN_READWRITE 0x00000002
#define GPTAPI_SQLITE_OPEN_NOMUTEX 0x00008000

// An inserter is one connection and the thread that runs its batches.
typedef struct {
	sqlite3 *db;
	sqlite3_stmt *begin, *insert, *commit, *rollback;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int job;  // 1: a batch waits, 2: the thread must end
	int done; // written once per finished batch
	int64_t slice_ns; // the longest the thread works before it yields
	int64_t yields;   // how often it did, for tests
	// the batch: rows of cols values, each a tag byte (0 NULL, 1 int64,
	// 2 text) then 8 bytes of int64 or a 4-byte length and the text
	const unsigned char *buf;
	size_t len;
	int rows, cols;
	int rc;
	char err[256];
} gptapi_inserter;

static int gptapi_step(sqlite3_stmt *s) {
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == GPTAPI_SQLITE_DONE ? GPTAPI_SQLITE_OK : rc;
}

static int gptapi_bind_row(gptapi_inserter *in, const unsigned char **pp, const unsigned char *end) {
	const unsigned char *p = *pp;
	for (int c = 1; c <= in->cols; c++) {
		if (p >= end) return GPTAPI_SQLITE_MISUSE;
		int rc;
		switch (*p++) {
		case 0:
			rc = sqlite3_bind_null(in->insert, c);
			break;
		case 1: {
			int64_t v;
			if (end - p < 8) return GPTAPI_SQLITE_MISUSE;
			memcpy(&v, p, 8);
			p += 8;
			rc = sqlite3_bind_int64(in->insert, c, v);
			break;
		}
		case 2: {
			uint32_t n;
			if (end - p < 4) return GPTAPI_SQLITE_MISUSE;
			memcpy(&n, p, 4);
			p += 4;
			if ((size_t)(end - p) < n) return GPTAPI_SQLITE_MISUSE;
			// static: the batch outlives the statement's use of it
			rc = sqlite3_bind_text(in->insert, c, (const char *)p, (int)n, (void (*)(void *))0);
			p += n;
			break;
		}
		default:
			return GPTAPI_SQLITE_MISUSE;
		}
		if (rc != GPTAPI_SQLITE_OK) return rc;
	}
	*pp = p;
	return GPTAPI_SQLITE_OK;
}

static int64_t gptapi_now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int gptapi_run_batch(gptapi_inserter *in) {
	const unsigned char *p = in->buf, *end = in->buf + in->len;
	int64_t worked_since = gptapi_now_ns();
	int rc = gptapi_step(in->begin);
	for (int r = 0; rc == GPTAPI_SQLITE_OK && r < in->rows; r++) {
		rc = gptapi_bind_row(in, &p, end);
		if (rc == GPTAPI_SQLITE_OK) rc = gptapi_step(in->insert);
		// The kernel lets a running thread finish its slice before a
		// request thread that woke meanwhile gets the core; a yield ends
		// the slice (and costs a system call when nothing waits).
		int64_t now = gptapi_now_ns();
		if (now - worked_since >= in->slice_ns) {
			sched_yield();
			in->yields++;
			worked_since = gptapi_now_ns();
		}
	}
	sqlite3_clear_bindings(in->insert); // no pointer into the batch stays
	if (rc == GPTAPI_SQLITE_OK) rc = gptapi_step(in->commit);
	if (rc != GPTAPI_SQLITE_OK) {
		strncpy(in->err, sqlite3_errmsg(in->db), sizeof in->err - 1);
		if (!sqlite3_get_autocommit(in->db)) gptapi_step(in->rollback);
	}
	return rc;
}

static void *gptapi_inserter_main(void *arg) {
	gptapi_inserter *in = arg;
	pthread_mutex_lock(&in->mu);
	for (;;) {
		while (in->job == 0) pthread_cond_wait(&in->cv, &in->mu);
		if (in->job == 2) break;
		pthread_mutex_unlock(&in->mu);
		int rc = gptapi_run_batch(in);
		pthread_mutex_lock(&in->mu);
		in->rc = rc;
		in->job = 0;
		char b = 1;
		while (write(in->done, &b, 1) < 0 && errno == EINTR) {
		}
	}
	pthread_mutex_unlock(&in->mu);
	return NULL;
}

static int gptapi_prepare(gptapi_inserter *in, const char *sql, sqlite3_stmt **s) {
	return sqlite3_prepare_v2(in->db, sql, -1, s, NULL);
}

static void gptapi_inserter_free(gptapi_inserter *in) {
	sqlite3_finalize(in->begin);
	sqlite3_finalize(in->insert);
	sqlite3_finalize(in->commit);
	sqlite3_finalize(in->rollback);
	sqlite3_close(in->db);
	free(in);
}

// gptapi_inserter_open opens path, prepares the statements and starts the
// thread; on failure it returns NULL and the reason in err.
static gptapi_inserter *gptapi_inserter_open(const char *path, const char *insert_sql, int cols, int done, int64_t slice_ns, char *err, size_t errlen) {
	gptapi_inserter *in = calloc(1, sizeof *in);
	if (in == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	in->cols = cols;
	in->done = done;
	in->slice_ns = slice_ns;
	int rc = sqlite3_open_v2(path, &in->db, GPTAPI_SQLITE_OPEN_READWRITE | GPTAPI_SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == GPTAPI_SQLITE_OK) rc = sqlite3_busy_timeout(in->db, 5000);
	if (rc == GPTAPI_SQLITE_OK) rc = sqlite3_exec(in->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	if (rc == GPTAPI_SQLITE_OK) rc = gptapi_prepare(in, "BEGIN IMMEDIATE", &in->begin);
	if (rc == GPTAPI_SQLITE_OK) rc = gptapi_prepare(in, insert_sql, &in->insert);
	if (rc == GPTAPI_SQLITE_OK) rc = gptapi_prepare(in, "COMMIT", &in->commit);
	if (rc == GPTAPI_SQLITE_OK) rc = gptapi_prepare(in, "ROLLBACK", &in->rollback);
	if (rc == GPTAPI_SQLITE_OK) {
		pthread_mutex_init(&in->mu, NULL);
		pthread_cond_init(&in->cv, NULL);
		if (pthread_create(&in->thread, NULL, gptapi_inserter_main, in) != 0) {
			pthread_mutex_destroy(&in->mu);
			pthread_cond_destroy(&in->cv);
			snprintf(err, errlen, "cannot start a thread");
			gptapi_inserter_free(in);
			return NULL;
		}
		return in;
	}
	snprintf(err, errlen, "%s", in->db ? sqlite3_errmsg(in->db) : "out of memory");
	gptapi_inserter_free(in);
	return NULL;
}

static void gptapi_inserter_submit(gptapi_inserter *in, const unsigned char *buf, size_t len, int rows) {
	pthread_mutex_lock(&in->mu);
	in->buf = buf;
	in->len = len;
	in->rows = rows;
	in->err[0] = 0;
	in->job = 1;
	pthread_cond_signal(&in->cv);
	pthread_mutex_unlock(&in->mu);
}

static int gptapi_inserter_result(gptapi_inserter *in, char *err, size_t errlen) {
	pthread_mutex_lock(&in->mu);
	int rc = in->rc;
	snprintf(err, errlen, "%s", in->err);
	in->buf = NULL;
	pthread_mutex_unlock(&in->mu);
	return rc;
}

static int64_t gptapi_inserter_yields(gptapi_inserter *in) {
	pthread_mutex_lock(&in->mu);
	int64_t n = in->yields;
	pthread_mutex_unlock(&in->mu);
	return n;
}

static void gptapi_inserter_interrupt(gptapi_inserter *in) { sqlite3_interrupt(in->db); }

static void gptapi_inserter_close(gptapi_inserter *in) {
	pthread_mutex_lock(&in->mu);
	in->job = 2;
	pthread_cond_signal(&in->cv);
	pthread_mutex_unlock(&in->mu);
	pthread_join(in->thread, NULL);
	pthread_mutex_destroy(&in->mu);
	pthread_cond_destroy(&in->cv);
	gptapi_inserter_free(in);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe" // cgo's conversions only: C strings to free, the pinned batch for the thread
)

// insertThread writes a database file's batches on a C thread of its own,
// through a connection of its own. A cgo call keeps its goroutine's P until
// Go's monitor thread notices, up to 10 ms later: with one P every request
// waited for each commit (a millisecond or more, tens when a checkpoint
// syncs). Here the writer hands the batch over and waits on a pipe, so the
// P serves requests meanwhile and the kernel shares the core between them
// and the thread. Binding a packed batch in C also spares the driver's cgo
// call, Go allocation and copy per value (BenchmarkInsert compares it with
// go-sqlite3's statement, which the rest of the store still uses).
type insertThread struct {
	c    *C.gptapi_inserter
	done *os.File // the read end of the pipe: a byte per finished batch
	wend *os.File // the write end, the thread's
	buf  []byte   // the last packed batch, reused for the next
}

func openInsertThread(path, insertSQL string, cols int) (*insertThread, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	wfd := w.Fd() // blocking from here on, as the thread wants it
	cpath, csql := C.CString(path), C.CString(insertSQL)
	// Safe: C.CString's copies are C memory of ours, freed once, after the
	// open has copied what it keeps (SQLite copies the path and the SQL).
	defer C.free(unsafe.Pointer(cpath))
	defer C.free(unsafe.Pointer(csql))
	var cerr [256]C.char
	c := C.gptapi_inserter_open(cpath, csql, C.int(cols), C.int(wfd), C.int64_t(yieldEvery.Nanoseconds()), &cerr[0], C.size_t(len(cerr)))
	if c == nil {
		r.Close()
		w.Close()
		return nil, errors.New(C.GoString(&cerr[0]))
	}
	return &insertThread{c: c, done: r, wend: w}, nil
}

// run inserts rows rows packed in batch (row.appendPacked) in one
// transaction. When ctx ends first the statement is interrupted, and run
// still waits for the thread to let go of the batch.
func (t *insertThread) run(ctx context.Context, batch []byte, rows int) error {
	if rows == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var pin runtime.Pinner
	pin.Pin(&batch[0]) // the thread reads it after the submit call returns
	defer pin.Unpin()
	// Safe: batch is our own byte slice, non-empty (rows > 0), holding no
	// Go pointers, and pinned until the thread has let go of it (run waits
	// for the thread's byte on the pipe before Unpin), which cgo's rules
	// require of a Go pointer C keeps after the call; the thread only reads
	// the len(batch) bytes from its start, and clears SQLite's bindings to
	// them before the batch ends.
	C.gptapi_inserter_submit(t.c, (*C.uchar)(unsafe.Pointer(&batch[0])), C.size_t(len(batch)), C.int(rows))
	var deadline time.Time
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	_ = t.done.SetReadDeadline(deadline)
	ended := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = t.done.SetReadDeadline(time.Now())
		close(ended)
	})
	var b [1]byte
	_, err := t.done.Read(b[:])
	if !stop() {
		<-ended // its deadline must not reach the next batch's wait
	}
	if err != nil {
		C.gptapi_inserter_interrupt(t.c)
		_ = t.done.SetReadDeadline(time.Time{})
		if _, err := t.done.Read(b[:]); err != nil {
			// The pipe is ours and open: this does not happen.
			panic(fmt.Sprintf("BUG: insert thread's pipe: %v", err))
		}
	}
	var cerr [256]C.char
	rc := C.gptapi_inserter_result(t.c, &cerr[0], C.size_t(len(cerr)))
	if rc != 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("sqlite insert: %s (code %d)", C.GoString(&cerr[0]), int(rc))
	}
	return nil
}

// yields is how often the thread has yielded the core.
func (t *insertThread) yields() int64 { return int64(C.gptapi_inserter_yields(t.c)) }

// close ends the thread and closes its connection.
func (t *insertThread) close() {
	C.gptapi_inserter_close(t.c)
	t.c = nil
	t.done.Close()
	t.wend.Close()
}
