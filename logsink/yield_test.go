package logsink

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestYieldRunsNetworkWaiters: with one P, a goroutine whose connection
// became readable (here a pipe, which waits in the same poller) runs within
// the writer's yield, not when the writer's batch ends. runtime.Gosched
// alone fails this: the scheduler does not poll the network while a
// goroutine is runnable.
//
// It runs in a process of its own: goroutines the package's other tests
// left behind (writers finishing, pollers, the garbage collector's workers)
// would share the one P and make the rounds' order a matter of chance. Where
// the test binary cannot start itself (run by qemu-user without binfmt), it
// runs here.
func TestYieldRunsNetworkWaiters(t *testing.T) {
	if os.Getenv("LOGSINK_YIELD_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestYieldRunsNetworkWaiters$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LOGSINK_YIELD_CHILD=1", "GOMAXPROCS=1")
		out, err := cmd.CombinedOutput()
		if !errors.Is(err, syscall.ENOEXEC) {
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			return
		}
		t.Log("cannot start the test binary; running in this process:", err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	server, client, err := os.Pipe() // both ends wait in the network poller
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	defer client.Close()

	for round := range 3 {
		var read atomic.Bool
		parked := make(chan struct{})
		go func() {
			close(parked)
			var b [1]byte
			if _, err := server.Read(b[:]); err == nil {
				read.Store(true)
			}
		}()
		<-parked
		runtime.Gosched() // let the reader reach its Read and park
		if _, err := client.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		// The writer's batch: work, then a yield, with no blocking call
		// that would let the scheduler poll on its own.
		for range 3 {
			yield()
			if read.Load() {
				break
			}
		}
		if !read.Load() {
			t.Fatalf("round %d: the reader did not run during three yields", round)
		}
	}
}

// BenchmarkYield is what a yield costs the writer with one P and nothing
// else to run.
func BenchmarkYield(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b.ReportAllocs()
	for b.Loop() {
		yield()
	}
}
