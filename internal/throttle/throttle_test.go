package throttle

import (
	"sync"
	"testing"
	"time"
)

func TestLog(t *testing.T) {
	var l Log
	t0 := time.Unix(1000, 0)
	f := func(at time.Duration, wantOK bool, wantHeld int64) {
		t.Helper()
		ok, held := l.Allow(t0.Add(at), 10*time.Second)
		if ok != wantOK || held != wantHeld {
			t.Errorf("at %v: Allow = %v, %d; want %v, %d", at, ok, held, wantOK, wantHeld)
		}
	}
	f(0, true, 0)
	f(time.Second, false, 0)
	f(9*time.Second, false, 0)
	f(10*time.Second, true, 2)
	f(11*time.Second, false, 0)
	f(30*time.Second, true, 1)
}

// Of many goroutines logging at once, one line gets through, and the next
// one accounts for every other.
func TestLogConcurrent(t *testing.T) {
	var l Log
	now := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 64 {
		wg.Go(func() {
			if ok, _ := l.Allow(now, time.Minute); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d lines let through at once, want 1", allowed)
	}
	if ok, held := l.Allow(now.Add(time.Minute), time.Minute); !ok || held != 63 {
		t.Fatalf("after the interval: %v, %d held; want true, 63", ok, held)
	}
}
