package selector

import (
	"testing"
	"time"
)

func TestHealthCooldown(t *testing.T) {
	const threshold = 3
	const cooldown = 30 * time.Second
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	var h Health
	if h.Cooling(t0) || h.Failures() != 0 {
		t.Fatalf("zero Health is cooling or has failures")
	}
	// below the threshold: counted, not cooling
	for i := 1; i < threshold; i++ {
		if h.Fail(at(time.Duration(i)*time.Second), threshold, cooldown) {
			t.Fatalf("cooling after %d failures, threshold %d", i, threshold)
		}
		if h.Failures() != i {
			t.Fatalf("Failures() = %d, want %d", h.Failures(), i)
		}
	}
	// the threshold-th consecutive failure starts the cooldown at its time
	start := at(5 * time.Second)
	if !h.Fail(start, threshold, cooldown) {
		t.Fatalf("not cooling after %d failures", threshold)
	}
	f := func(now time.Time, want bool) {
		t.Helper()
		if got := h.Cooling(now); got != want {
			t.Fatalf("Cooling(start%+v) = %v, want %v", now.Sub(start), got, want)
		}
	}
	f(start, true)
	f(start.Add(cooldown-time.Nanosecond), true)
	f(start.Add(cooldown), false)
	f(start.Add(time.Hour), false)

	// a failure after expiry goes straight back to cooling, from its own time
	later := start.Add(cooldown + time.Second)
	if !h.Fail(later, threshold, cooldown) {
		t.Fatalf("failure past the threshold after expiry did not cool again")
	}
	f(later.Add(cooldown-time.Nanosecond), true)
	f(later.Add(cooldown), false)

	// one success ends the cooldown and resets the count
	h.Succeed()
	f(later, false)
	if h.Failures() != 0 {
		t.Fatalf("Failures() after Succeed = %d, want 0", h.Failures())
	}
}

func TestHealthSuccessResetsCount(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var h Health
	h.Fail(t0, 3, time.Minute)
	h.Fail(t0, 3, time.Minute)
	h.Succeed()
	// the failures are no longer consecutive: two more stay below 3
	if first, second := h.Fail(t0, 3, time.Minute), h.Fail(t0, 3, time.Minute); first || second {
		t.Fatalf("cooling although a success broke the run of failures")
	}
	if !h.Fail(t0, 3, time.Minute) {
		t.Fatalf("not cooling after 3 consecutive failures")
	}
}

func TestHealthDisabled(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := func(threshold int, cooldown time.Duration) {
		t.Helper()
		var h Health
		for range 5 {
			if h.Fail(t0, threshold, cooldown) {
				t.Fatalf("Fail(threshold=%d, cooldown=%v) started a cooldown", threshold, cooldown)
			}
		}
		if h.Failures() != 5 {
			t.Fatalf("Failures() = %d, want 5", h.Failures())
		}
	}
	f(0, time.Minute)
	f(-1, time.Minute)
	f(1, 0)
}

func TestHealthMonotonicClock(t *testing.T) {
	// time.Now values carry a monotonic reading; Round(0) strips it. Both
	// kinds must agree on a cooldown far from its edges.
	var h Health
	now := time.Now()
	h.Fail(now, 1, time.Minute)
	if !h.Cooling(now.Add(time.Second)) || !h.Cooling(now.Round(0).Add(time.Second)) {
		t.Fatalf("not cooling one second into a one-minute cooldown")
	}
	if h.Cooling(now.Add(2*time.Minute)) || h.Cooling(now.Round(0).Add(2*time.Minute)) {
		t.Fatalf("still cooling after the cooldown")
	}
}
