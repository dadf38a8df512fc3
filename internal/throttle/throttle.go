// Package throttle keeps a repeated log line to one per interval: an
// upstream that is down, or a disk that refuses writes, costs a line per
// interval instead of one per request, and the line says how many it
// stands for. It is the one log throttle of the tree.
package throttle

import (
	"sync/atomic"
	"time"
)

// Log lets one line through per interval and counts the ones it holds back.
// Its zero value is ready; it is safe for concurrent use and takes no lock.
type Log struct {
	next atomic.Int64 // Unix ns before which lines are held back
	held atomic.Int64 // lines held back since the last one let through
}

// Allow reports whether a line may be logged at now, at most one per every,
// and how many were held back since the last one let through.
func (l *Log) Allow(now time.Time, every time.Duration) (bool, int64) {
	n := l.next.Load()
	if now.UnixNano() < n || !l.next.CompareAndSwap(n, now.Add(every).UnixNano()) {
		l.held.Add(1)
		return false, 0
	}
	return true, l.held.Swap(0)
}
