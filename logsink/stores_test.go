package logsink

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

// storeKind is one of the two stores behind the writer, as the table tests
// see it: how to get fresh Options, read the request_id column in id
// order, and make every insert fail until healed.
type storeKind struct {
	name string
	opts func(t *testing.T) Options
	ids  func(t *testing.T, o Options) []string
	fail func(t *testing.T, o Options) (heal func())
}

var storeKinds = []storeKind{
	{
		name: "sqlite",
		opts: func(t *testing.T) Options { return testOptions(t) },
		ids:  func(t *testing.T, o Options) []string { return requestIDs(t, o.Path) },
		fail: func(t *testing.T, o Options) func() { return failInserts(t, o.Path) },
	},
	{
		name: "postgres",
		opts: func(t *testing.T) Options {
			o := testOptions(t)
			o.Driver, o.DSN, o.Path = DriverPostgres, newDB(t, sharedPG(t)), ""
			return o
		},
		ids:  func(t *testing.T, o Options) []string { return pgIDs(t, o.DSN) },
		fail: pgFailInserts,
	},
}

// pgFailInserts makes every insert into requests fail, as a database that
// refuses writes, until heal.
func pgFailInserts(t *testing.T, o Options) (heal func()) {
	t.Helper()
	conn := pgConn(t, o.DSN)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS fail_flag (x int);
		INSERT INTO fail_flag VALUES (1);
		CREATE OR REPLACE FUNCTION fail_insert() RETURNS trigger AS $$
		BEGIN IF EXISTS (SELECT 1 FROM fail_flag) THEN RAISE EXCEPTION 'could not extend file: No space left on device'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
		DROP TRIGGER IF EXISTS fail_insert ON requests;
		CREATE TRIGGER fail_insert BEFORE INSERT ON requests FOR EACH ROW EXECUTE FUNCTION fail_insert();`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.Exec(ctx, "DELETE FROM fail_flag"); err != nil {
			t.Fatal(err)
		}
	}
}

// The writer's guarantees, against each store.
func TestStoreGuarantees(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, k storeKind)
	}{
		// the GPT_API_TESTS phase 2 burst: a 16-slot queue, 3000 records
		// from 8 goroutines; every one written once
		{"burst3000queue16", func(t *testing.T, k storeKind) {
			o := k.opts(t)
			o.QueueSize = 16
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			const g, per = 8, 375
			var wg sync.WaitGroup
			for w := range g {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						s.Put(smallRecord(AcquireRecord(), fmt.Sprintf("w%d-%d", w, i), time.Now().UnixMilli()))
					}
				}()
			}
			wg.Wait()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			ids := k.ids(t, o)
			if len(ids) != g*per || len(uniq(ids)) != g*per || s.Dropped() != 0 {
				t.Fatalf("%d rows, %d distinct, %d dropped, want %d", len(ids), len(uniq(ids)), s.Dropped(), g*per)
			}
			if s.Spilled() == 0 {
				t.Fatal("a 16-slot queue never spilled")
			}
			t.Logf("%d spilled", s.Spilled())
		}},
		// a refusing database: the batch is retried, logged once, then
		// every record is written once
		{"failingRetried", func(t *testing.T, k storeKind) {
			o := k.opts(t)
			var logs testlog.Buffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			heal := k.fail(t, o)
			for i := range 200 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
			}
			time.Sleep(time.Second)
			if s.Written() != 0 {
				t.Fatalf("written %d while inserts fail", s.Written())
			}
			heal()
			waitFor(t, "records after the failure", func() bool { return s.Written() == 200 })
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if ids := k.ids(t, o); len(ids) != 200 || len(uniq(ids)) != 200 {
				t.Fatalf("%d rows, %d distinct", len(ids), len(uniq(ids)))
			}
			if n := strings.Count(logs.String(), "cannot write request records"); n != 1 {
				t.Fatalf("failure logged %d times:\n%s", n, logs.String())
			}
		}},
		// Close on a refusing database keeps the records in spill files;
		// the next Open writes them
		{"closeWhileFailing", func(t *testing.T, k storeKind) {
			o := k.opts(t)
			o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			heal := k.fail(t, o)
			for i := range 100 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
			}
			if err := s.Close(); err == nil || !strings.Contains(err.Error(), "kept in") {
				t.Fatalf("Close: %v", err)
			}
			heal()
			if s, err = Open(o); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if ids := k.ids(t, o); len(ids) != 100 || len(uniq(ids)) != 100 {
				t.Fatalf("%d rows after reopening, %d distinct", len(ids), len(uniq(ids)))
			}
		}},
		// the second signal: CloseNow does not wait for the database
		{"closeNow", func(t *testing.T, k storeKind) {
			o := k.opts(t)
			o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			heal := k.fail(t, o)
			for i := range 300 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
			}
			t0 := time.Now()
			if err := s.CloseNow(); err == nil {
				t.Fatal("CloseNow said every record was written")
			}
			if took := time.Since(t0); took > 2*time.Second {
				t.Fatalf("CloseNow took %v", took)
			}
			heal()
			if s, err = Open(o); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if ids := k.ids(t, o); len(ids) != 300 || len(uniq(ids)) != 300 {
				t.Fatalf("%d rows after reopening, %d distinct", len(ids), len(uniq(ids)))
			}
		}},
		// spill files are replayed while running, once the queue is empty
		{"spillReplayWhileRunning", func(t *testing.T, k storeKind) {
			o := k.opts(t)
			o.QueueSize, o.BatchSize = 1, 1
			o.Logger = slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil))
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			heal := k.fail(t, o)
			for i := range 500 {
				s.Put(smallRecord(AcquireRecord(), fmt.Sprint("r", i), time.Now().UnixMilli()))
			}
			// Spilled, not a file: the writer may take the frames from
			// the spiller's memory before they reach the disk.
			waitFor(t, "spilled records", func() bool { return s.Spilled() > 0 })
			heal()
			waitFor(t, "spilled records written", func() bool { return s.Written() == 500 })
			waitFor(t, "spill files deleted", func() bool { return len(spillFiles(t, o.SpillDir)) == 0 })
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if ids := k.ids(t, o); len(ids) != 500 || len(uniq(ids)) != 500 {
				t.Fatalf("%d rows, %d distinct", len(ids), len(uniq(ids)))
			}
		}},
	}
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, k) })
			}
		})
	}
}
