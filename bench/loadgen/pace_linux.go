package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerslack is prctl's PR_SET_TIMERSLACK.
const prSetTimerslack = 29

// pacer sleeps with nanosleep on an OS thread of its own whose timer slack is
// 1ns, so wake-ups come within microseconds of the asked time. Go's own
// timers round an idle wait up to the millisecond, which would be the
// generator's jitter, not the server's.
type pacer struct{}

func newPacer() *pacer {
	runtime.LockOSThread()
	_, _, _ = syscall.Syscall6(syscall.SYS_PRCTL, prSetTimerslack, 1, 0, 0, 0, 0)
	return &pacer{}
}

func (p *pacer) sleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}

// close gives the thread back. Unlocking (rather than letting a locked
// goroutine end, which kills its thread) matters to callers that start
// child processes with Pdeathsig: the child dies with the thread that
// started it.
func (p *pacer) close() { runtime.UnlockOSThread() }
