package logsink

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

// failSpill makes every write to a spill file fail as a full disk does,
// until the returned func is called.
func failSpill(t *testing.T) (heal func()) {
	t.Helper()
	var full atomic.Bool
	full.Store(true)
	orig := spillWrite
	spillWrite = func(f *os.File, b []byte) (int, error) {
		if full.Load() {
			return 0, syscall.ENOSPC
		}
		return orig(f, b)
	}
	t.Cleanup(func() { spillWrite = orig })
	return func() { full.Store(false) }
}

func bigRecord(id string, size int) *Record {
	r := smallRecord(AcquireRecord(), id, time.Now().UnixMilli())
	r.RequestBody = append(r.RequestBody[:0], `{"model":"m","messages":[{"role":"user","content":"`...)
	r.RequestBody = append(r.RequestBody, strings.Repeat("x", size)...)
	r.RequestBody = append(r.RequestBody, `"}]}`...)
	return r
}

// Disk full (issue 11 item 7): the database and the spill folder both
// refuse. Records held in memory stay under max_pending_bytes, the rest are
// dropped and counted, the condition is logged once, Put stays fast, and
// once the disk has room again every record not dropped is written.
func TestDiskFullBoundsMemory(t *testing.T) {
	o := testOptions(t)
	o.QueueSize, o.BatchSize = 16, 8
	o.MaxPendingBytes = 4 << 20
	var logs testlog.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	healDB := failInserts(t, o.Path)
	healSpill := failSpill(t)
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)

	const n, size = 1450, 40 << 10 // the figures: 58 MB of records
	var slowest time.Duration
	for i := range n {
		r := bigRecord(fmt.Sprint("r", i), size)
		t0 := time.Now()
		s.Put(r)
		slowest = max(slowest, time.Since(t0))
		if p := s.sp.pend.Load(); p > o.MaxPendingBytes {
			t.Fatalf("%d bytes pending in memory, bound %d", p, o.MaxPendingBytes)
		}
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	// the bound, the queue and one batch of 40 KB records, and slack
	limit := uint64(o.MaxPendingBytes) + uint64(o.QueueSize+2*o.BatchSize)*size + 8<<20
	if grew := m1.HeapAlloc - min(m1.HeapAlloc, m0.HeapAlloc); grew > limit {
		t.Fatalf("heap grew %d MB holding records, bound %d MB", grew>>20, limit>>20)
	}
	dropped := s.Dropped()
	if dropped == 0 || dropped >= n {
		t.Fatalf("dropped %d of %d", dropped, n)
	}
	if slowest > 200*time.Millisecond {
		t.Fatalf("slowest Put %v on a full disk", slowest)
	}
	if c := strings.Count(logs.String(), "request records dropped"); c != 1 {
		t.Fatalf("drop logged %d times:\n%s", c, logs.String())
	}
	healSpill()
	healDB()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ids := requestIDs(t, o.Path)
	if uint64(len(ids))+dropped != n || len(uniq(ids)) != len(ids) {
		t.Fatalf("%d rows + %d dropped, want %d (%d distinct)", len(ids), dropped, n, len(uniq(ids)))
	}
	t.Logf("heap grew %d MB; %d of %d dropped; slowest Put %v", (m1.HeapAlloc-min(m1.HeapAlloc, m0.HeapAlloc))>>20, dropped, n, slowest)
}

// The database, its WAL and the spill files are created 0600 in folders
// created 0700.
func TestFileModes(t *testing.T) {
	o := testOptions(t)
	o.QueueSize = 1
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(t, o.Path)
	for i := range 50 {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), 1))
	}
	waitFor(t, "a spill file", func() bool { return len(spillFiles(t, o.SpillDir)) > 0 })
	mode := func(name string) fs.FileMode {
		t.Helper()
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	for _, d := range []string{filepath.Dir(o.Path), o.SpillDir} {
		if m := mode(d); m != 0o700 {
			t.Errorf("folder %s: %v, want 0700", d, m)
		}
	}
	files := []string{o.Path, o.Path + "-wal", o.Path + "-shm"}
	for _, f := range spillFiles(t, o.SpillDir) {
		files = append(files, filepath.Join(o.SpillDir, f))
	}
	for _, f := range files {
		if m := mode(f); m != 0o600 {
			t.Errorf("%s: %v, want 0600", f, m)
		}
	}
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A batch the database does not take within WriteTimeout goes to the spill
// folder and the writer moves on; once the database takes writes again,
// every record is there once.
func TestStuckBatchSpilled(t *testing.T) {
	o := testOptions(t)
	o.WriteTimeout = 300 * time.Millisecond
	o.BatchSize = 10
	o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	heal := failInserts(t, o.Path)
	const n = 30
	for i := range n {
		s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), 1))
	}
	// the queue (1024) never filled: only the writer spills
	waitFor(t, "stuck batches spilled", func() bool { return s.Spilled() == n })
	heal()
	waitFor(t, "spilled records written", func() bool { return s.Written() == n })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, o.Path); len(ids) != n || len(uniq(ids)) != n {
		t.Fatalf("%d rows, %d distinct, want %d", len(ids), len(uniq(ids)), n)
	}
}

// CloseNow (a second SIGTERM) does not wait for a database that refuses:
// everything queued or under way goes to the spill folder at once, and the
// next Open writes it.
func TestCloseNow(t *testing.T) {
	for _, how := range []string{"CloseNow", "CloseContext", "CloseNow during Close"} {
		t.Run(how, func(t *testing.T) {
			o := testOptions(t)
			o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			heal := failInserts(t, o.Path)
			const n = 500
			for i := range n {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), 1))
			}
			t0 := time.Now()
			switch how {
			case "CloseNow":
				err = s.CloseNow()
			case "CloseContext":
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				err = s.CloseContext(ctx)
				cancel()
			default:
				done := make(chan error)
				go func() { done <- s.Close() }()
				time.Sleep(100 * time.Millisecond) // Close is retrying
				if err := s.CloseNow(); err == nil {
					t.Error("CloseNow said all was written")
				}
				err = <-done
			}
			took := time.Since(t0)
			if err == nil || !strings.Contains(err.Error(), "kept in") {
				t.Fatalf("%s: %v", how, err)
			}
			// Close alone retries closeAttempts times (~1.5 s)
			if took > time.Second {
				t.Fatalf("%s took %v", how, took)
			}
			if s.Spilled() != n || s.Dropped() != 0 || countRows(t, o.Path) != 0 {
				t.Fatalf("spilled %d dropped %d", s.Spilled(), s.Dropped())
			}
			heal()
			s, err = Open(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if ids := requestIDs(t, o.Path); len(ids) != n || len(uniq(ids)) != n {
				t.Fatalf("%d rows after reopening, %d distinct", len(ids), len(uniq(ids)))
			}
		})
	}
}
