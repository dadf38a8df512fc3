package selector

import (
	"sync/atomic"
	"time"
)

// epoch anchors cooldown deadlines. Deadlines are kept as offsets from it so
// that time.Time values carrying a monotonic reading (those from time.Now)
// are compared on the monotonic clock, immune to wall-clock steps.
var epoch = time.Now()

// Health is one upstream's passive health: consecutive failures and the end of
// its cooldown. The zero value is healthy and ready to use. It must not be
// copied after first use.
//
// Updates are not transactional: a Succeed racing a Fail may leave either
// outcome, which is acceptable for a health signal that the next request
// corrects.
type Health struct {
	failures atomic.Int64
	// until is the cooldown deadline as an offset from epoch plus one, so
	// that zero means "not cooling" for every offset.
	until atomic.Int64
}

// Fail counts a failure at now. When the consecutive failures reach threshold,
// it (re)starts a cooldown lasting cooldown from now; failures beyond the
// threshold extend it, so an upstream tried as a last resort while cooling,
// or right after its cooldown ended, goes back to cooling at once. It reports
// whether the upstream is cooling at now.
//
// threshold <= 0 or cooldown <= 0 disables cooldown; failures are still
// counted.
func (h *Health) Fail(now time.Time, threshold int, cooldown time.Duration) (cooling bool) {
	n := h.failures.Add(1)
	at := now.Sub(epoch)
	if threshold > 0 && cooldown > 0 && n >= int64(threshold) {
		h.until.Store(int64(at+cooldown) + 1)
		return true
	}
	return h.coolingAt(at)
}

// Succeed ends any cooldown and resets the failure count. It only writes when
// there is something to reset, so the common healthy case does not bounce the
// cache line between cores.
func (h *Health) Succeed() {
	if h.failures.Load() != 0 {
		h.failures.Store(0)
	}
	if h.until.Load() != 0 {
		h.until.Store(0)
	}
}

// Cooling reports whether the upstream is in cooldown at now.
func (h *Health) Cooling(now time.Time) bool {
	return h.coolingAt(now.Sub(epoch))
}

func (h *Health) coolingAt(at time.Duration) bool {
	u := h.until.Load()
	return u != 0 && int64(at) < u-1
}

// Failures returns the current count of consecutive failures.
func (h *Health) Failures() int {
	return int(h.failures.Load())
}
