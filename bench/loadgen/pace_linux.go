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
// generator's jitter, not the server's. Where allowed (root, or
// CAP_SYS_NICE) the thread runs at nice -20, so that on waking it takes its
// core at once from the goroutines reading answers there, which otherwise
// hold it for the rest of their time slice. It stays in the normal
// scheduling class: a real-time thread would spin in Go's exitsyscall for a
// P that a thread it starves holds.
type pacer struct{}

func newPacer() *pacer {
	runtime.LockOSThread()
	_, _, _ = syscall.Syscall6(syscall.SYS_PRCTL, prSetTimerslack, 1, 0, 0, 0, 0)
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), -20)
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
