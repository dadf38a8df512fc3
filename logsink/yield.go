package logsink

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// yieldEvery is the most the writer works between yields, so about the
// longest a request that became ready meanwhile waits for it with one P.
const yieldEvery = 100 * time.Microsecond

// pause is called by the writer after each row it derives or inserts; it
// yields once the writer has worked yieldEvery since its last yield.
func pause() {
	now := yieldClock()
	if now-lastYield.Load() < int64(yieldEvery) {
		return
	}
	yield()
	lastYield.Store(yieldClock())
}

var (
	lastYield  atomic.Int64 // of yieldClock
	clockStart = time.Now()
	yieldClock = func() int64 { return int64(time.Since(clockStart)) }
)

// yield lets the requests that became ready while the writer worked run
// before it goes on. A batch is milliseconds of work that Go would not
// preempt for 10 ms.
//
// With one P (GOMAXPROCS=1, a one-core box), Go's scheduler looks for
// connections that became readable only when the P has nothing else to run,
// or every 10 ms from sysmon; runtime.Gosched alone does not reach them,
// since the scheduler takes the yielding goroutine back from the global
// queue before it polls. So the writer waits for a pipe that it makes
// readable itself, which only the network poller can report: the poll that
// wakes the writer also queues the requests that were ready, and a Gosched
// then lets them run first. BenchmarkYield gives the cost: a write, a read
// and a poll, ~5 µs.
//
// With more Ps an idle P polls while the writer runs, and waking one would
// only cost CPU, so yield does nothing.
var yield = func() {
	if runtime.GOMAXPROCS(0) > 1 {
		return
	}
	if py := pollPipe(); py != nil {
		py.wait()
	}
	runtime.Gosched()
}

// pollPipe is the process's one pipe for yield, nil if it cannot be made
// (yield then only reaches runnable goroutines).
var pollPipe = sync.OnceValue(func() *pollYield {
	r, w, err := os.Pipe() // non-blocking, registered with the poller
	if err != nil {
		return nil
	}
	rc, err := r.SyscallConn()
	if err != nil {
		r.Close()
		w.Close()
		return nil
	}
	py := &pollYield{r: r, w: w, rc: rc}
	py.stepFn = py.step
	return py
})

type pollYield struct {
	mu     sync.Mutex // one waiter at a time; the fields below are its
	r, w   *os.File   // r is kept so that its finalizer does not close the pipe
	rc     syscall.RawConn
	stepFn func(fd uintptr) bool
	armed  bool
	buf    [16]byte
}

func (py *pollYield) wait() {
	py.mu.Lock()
	py.armed = false
	_ = py.rc.Read(py.stepFn)
	py.mu.Unlock()
}

// step is called by RawConn.Read after it has cleared the pipe's earlier
// readiness, so the byte written here is reported by the next poll.
func (py *pollYield) step(fd uintptr) bool {
	if !py.armed {
		py.armed = true
		_, err := py.w.Write(py.buf[:1])
		return err != nil // not armed: do not wait
	}
	_, err := syscall.Read(int(fd), py.buf[:])
	return err != syscall.EAGAIN
}
