package logsink

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchSink keeps benchmark results alive.
var benchSink any

// BenchmarkDerive is the background JSON work for one record, each parser
// forced explicitly: a recorded stream parsed (simdjson-go: one ParseND over
// all chunks), assembled and re-encoded; and a ~6 KB non-stream answer with
// its request.
func BenchmarkDerive(b *testing.B) {
	type input struct {
		name string
		r    *Record
	}
	var inputs []input
	for _, file := range streamFiles(b) {
		ep := Chat
		if strings.Contains(file, "completions") {
			ep = Completions
		}
		inputs = append(inputs, input{strings.TrimSuffix(file, ".sse"), &Record{Endpoint: ep, Stream: true, Chunks: ndjsonFromSSE(b, file)}})
	}
	inputs = append(inputs, input{"answer-6KB", &Record{Endpoint: Chat, RequestBody: []byte(smallRequest), ResponseBody: answer6KB(b)}})
	for _, in := range inputs {
		for _, pn := range parserNames() {
			b.Run(in.name+"/"+pn, func(b *testing.B) {
				dv := deriver{p: parsers[pn]()}
				var rw row
				b.ReportAllocs()
				b.SetBytes(int64(len(in.r.Chunks) + len(in.r.RequestBody) + len(in.r.ResponseBody)))
				for b.Loop() {
					dv.derive(&rw, in.r)
				}
				benchSink = rw.respBody
			})
		}
	}
}

// benchWriter Puts b.N records made by fill, then Closes, and reports the
// whole rate: queue, parsing, inserts, and the spill path when the producer
// outruns the writer.
func benchWriter(b *testing.B, fill func(r *Record, i int)) {
	benchWriterTo(b, testOptions(b), fill)
}

func benchWriterTo(b *testing.B, o Options, fill func(r *Record, i int)) {
	o.QueueSize, o.BatchSize, o.FlushInterval = 65536, 512, 200*time.Millisecond
	s, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		r := AcquireRecord()
		fill(r, i)
		s.Put(r)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	if s.Written() != uint64(b.N) {
		b.Fatalf("written %d of %d", s.Written(), b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(s.Spilled())/float64(b.N), "spilled/record")
	// CPU per record is steadier than the rate on a shared machine; it
	// counts the producer loop as well as the writer.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/record")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkWriter1KB(b *testing.B) {
	benchWriter(b, func(r *Record, i int) {
		smallRecord(r, "req-"+fmt.Sprint(i), int64(i))
	})
}

// BenchmarkWriterStores is the writer's rate for ~1 KB records into each
// store in one run: SQLite (WAL, synchronous=NORMAL) and a local
// PostgreSQL with fsync on, as production runs it.
func BenchmarkWriterStores(b *testing.B) {
	fill := func(r *Record, i int) { smallRecord(r, "req-"+fmt.Sprint(i), time.Now().UnixMilli()) }
	b.Run("sqlite", func(b *testing.B) { benchWriter(b, fill) })
	b.Run("postgres", func(b *testing.B) {
		p := startPGOpts(b, true)
		o := testOptions(b)
		o.Driver, o.Path = DriverPostgres, ""
		o.DSN = newDB(b, p)
		benchWriterTo(b, o, fill)
	})
}

func BenchmarkWriter8KB(b *testing.B) {
	req := largeRequest()
	ans := answer6KB(b)
	benchWriter(b, func(r *Record, i int) {
		smallRecord(r, "req-"+fmt.Sprint(i), int64(i))
		r.RequestBody = append(r.RequestBody[:0], req...)
		r.ResponseBody = append(r.ResponseBody[:0], ans...)
	})
}

// BenchmarkWriterStream writes records of a recorded 4 KB stream, assembled
// in the writer.
func BenchmarkWriterStream(b *testing.B) {
	chunks := ndjsonFromSSE(b, "openai-tool-calls-parallel.sse")
	benchWriter(b, func(r *Record, i int) {
		smallRecord(r, "req-"+fmt.Sprint(i), int64(i))
		r.Stream = true
		r.ResponseBody = r.ResponseBody[:0]
		r.Chunks = append(r.Chunks[:0], chunks...)
	})
}

// largeRequest is a ~2 KB chat request.
func largeRequest() string {
	var sb strings.Builder
	sb.WriteString(`{"model":"qwen-72b","stream":false,"messages":[`)
	for i := range 8 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"role":"user","content":"Turn %d: please summarise the previous answer in two sentences and list three follow-up questions a careful reader would ask about it."}`, i)
	}
	sb.WriteString(`],"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]}`)
	return sb.String()
}

// putSink is a Sink without a writer, its queue drained by a goroutine that
// only releases records, so that a benchmark measures Put alone.
func putSink(b testing.TB, queue int, drain bool) *Sink {
	sp, err := newSpiller(b.TempDir(), testOptions(b).MaxPendingBytes, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	sp.start()
	b.Cleanup(func() { _ = sp.close() })
	s := &Sink{q: make(chan *Record, queue), sp: sp}
	if drain {
		stop := make(chan struct{})
		b.Cleanup(func() { close(stop) })
		go func() {
			for {
				select {
				case r := <-s.q:
					ReleaseRecord(r)
				case <-stop:
					return
				}
			}
		}()
	}
	return s
}

// BenchmarkPut is the request path's cost of logging: acquire a pooled
// record, fill it with ~1 KB of copies, Put.
func BenchmarkPut(b *testing.B) {
	b.Run("queue", func(b *testing.B) {
		s := putSink(b, 65536, true)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Put(smallRecord(AcquireRecord(), "req", 1))
			}
		})
	})
	// the overload path: the queue is full, every record is appended to a
	// spill file
	b.Run("spill", func(b *testing.B) {
		s := putSink(b, 0, false)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Put(smallRecord(AcquireRecord(), "req", 1))
			}
		})
	})
}

// BenchmarkPutSlowSpill is the request path while the queue is full and
// the spill folder's disk is slow: every write to a spill file takes 1 ms.
// ns/op is what each request waits to log; 4x GOMAXPROCS goroutines put
// at once, as request goroutines would.
func BenchmarkPutSlowSpill(b *testing.B) {
	defer func(f func(*os.File, []byte) (int, error)) { spillWrite = f }(spillWrite)
	spillWrite = func(f *os.File, p []byte) (int, error) {
		time.Sleep(time.Millisecond)
		return f.Write(p)
	}
	s := putSink(b, 0, false)
	s.sp.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Put(smallRecord(AcquireRecord(), "req", 1))
		}
	})
	// past max_pending_bytes of frames waiting for the disk, records are
	// dropped rather than the request path slowed
	b.ReportMetric(float64(s.sp.dropped.Load())/float64(b.N), "dropped/op")
}

// insertDatabaseSQL is the plain database/sql form of store.insert, kept as
// the "before" of BenchmarkInsert.
func insertDatabaseSQL(st *sqliteStore, rows []row, storeBodies bool) error {
	tx, err := st.db.Begin()
	if err != nil {
		return err
	}
	stmt, err := tx.Prepare(insertSQL)
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	var packed []byte
	args := make([]any, len(columns))
	for i := range rows {
		packed = rows[i].appendPacked(packed[:0], storeBodies, st.node)
		unpack(args, packed)
		if _, err := stmt.Exec(args...); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	_ = stmt.Close()
	return tx.Commit()
}

// BenchmarkInsert is the SQLite cost alone: batches of 512 derived ~1 KB
// rows, through database/sql and through the insert thread.
func BenchmarkInsert(b *testing.B) {
	dv := deriver{p: newParser()}
	rows := make([]row, 512)
	for i := range rows {
		dv.derive(&rows[i], smallRecord(&Record{}, fmt.Sprint("req-", i), int64(i)))
	}
	run := func(b *testing.B, insert func(st *sqliteStore) error) {
		st, err := openStore(filepath.Join(b.TempDir(), "bench.db"), "bench", monthOf(time.Now()))
		if err != nil {
			b.Fatal(err)
		}
		defer st.close()
		b.ReportAllocs()
		n := 0
		cpu0 := cpuTime()
		for b.Loop() {
			if err := insert(st); err != nil {
				b.Fatal(err)
			}
			n += len(rows)
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/row")
	}
	b.Run("database-sql", func(b *testing.B) {
		run(b, func(st *sqliteStore) error { return insertDatabaseSQL(st, rows, true) })
	})
	b.Run("thread", func(b *testing.B) {
		run(b, func(st *sqliteStore) error {
			st.storeBodies = true
			// as the writer calls it: with a deadline (WriteTimeout)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return st.insert(ctx, rows)
		})
	})
}

// unpack reads one packed row (row.appendPacked) into dst, a value a column.
func unpack(dst []any, b []byte) {
	for k := range dst {
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagNull:
			dst[k] = nil
		case tagInt64:
			dst[k] = int64(binary.LittleEndian.Uint64(b))
			b = b[8:]
		case tagText:
			n := binary.LittleEndian.Uint32(b)
			dst[k] = string(b[4 : 4+n])
			b = b[4+n:]
		}
	}
}
