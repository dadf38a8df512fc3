package proxy

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// TestReadAfterWriteYields: on one P a read that follows a write lets a
// ready goroutine run first; a read that follows a read does not yield.
// The scheduler serves its global queue first once every 61 rounds, and
// the yielding goroutine waits there: then it runs on before the other.
// So each case runs 20 times and counts.
func TestReadAfterWriteYields(t *testing.T) {
	for _, tc := range []struct {
		name      string
		write     bool
		wantYield bool
	}{
		{"read after write", true, true},
		{"read after read", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			_, conn, peer := socketPair(t)
			var c connIO
			c.init(conn)
			yielded := 0
			for range 20 {
				// The peer's bytes are in our socket before the read, so
				// the read itself never waits: the only scheduling point
				// is the yield.
				if _, err := peer.Write([]byte("xy")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 1)
				if _, err := c.read(buf); err != nil { // the socket now has data and the last call was a read
					t.Fatal(err)
				}
				if tc.write {
					if _, err := c.write([]byte("q")); err != nil {
						t.Fatal(err)
					}
				}
				var ran atomic.Bool
				go ran.Store(true) // ready, but on one P it runs only when this goroutine yields
				if _, err := c.read(buf); err != nil {
					t.Fatal(err)
				}
				if ran.Load() {
					yielded++
				}
			}
			if got := yielded >= 15; got != tc.wantYield || !tc.wantYield && yielded > 0 {
				t.Errorf("a ready goroutine ran before the read returned %d times in 20, want %v", yielded, tc.wantYield)
			}
		})
	}
}
