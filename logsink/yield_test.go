package logsink

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestYieldRunsNetworkWaiters: with one P, a goroutine whose connection
// became readable (here a pipe, which waits in the same poller) runs within
// the writer's yield, not when the writer's batch ends. runtime.Gosched
// alone fails this: the scheduler does not poll the network while a
// goroutine is runnable.
func TestYieldRunsNetworkWaiters(t *testing.T) {
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
