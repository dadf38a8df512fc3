//go:build !race

package logsink

import "testing"

// Put does not allocate: the request path pays a channel send and two
// atomic adds.
func TestAllocsPut(t *testing.T) {
	const runs = 200
	s := putSink(t, runs+1, false)
	recs := make([]*Record, runs+1)
	for i := range recs {
		recs[i] = smallRecord(&Record{}, "req", 1)
	}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		s.Put(recs[i])
		i++
	})
	if allocs != 0 {
		t.Fatalf("Put allocates %.1f times", allocs)
	}
	if len(s.q) != runs+1 {
		t.Fatalf("%d records queued, want %d", len(s.q), runs+1)
	}
}

// Filling a record taken from the pool reuses its buffers.
func TestAllocsRecordReuse(t *testing.T) {
	r := smallRecord(&Record{}, "req", 1)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset()
		smallRecord(r, "req", 2)
	})
	if allocs != 0 {
		t.Fatalf("refilling a record allocates %.1f times", allocs)
	}
}
