package proxy

import (
	"net"
	"runtime"
	"sync/atomic"
)

// connIO is a connection's reads and writes (rawIO) with one rule for a
// process on one P: a read that follows a write first lets the goroutines
// that are ready run (runtime.Gosched).
//
// What answers the write (an upstream's answer to the request, a caller's
// next request after the answer) cannot be there yet. Reading at once finds
// the socket empty: a system call for nothing, then the goroutine parks
// until the network poller reports the socket, which with one P happens
// only once every ready goroutine has run. Letting those run first costs
// the same wait, and by then the answer has usually come: the read gets it
// with no empty read and no park. With nothing else ready Gosched returns
// at once. With more Ps it would go through the global run queue and wake
// an idle P for nothing, so it is not done.
type connIO struct {
	rawIO
	oneP  bool        // GOMAXPROCS was 1 when the connection opened
	wrote atomic.Bool // the last call was a write; read and write may run at once
}

func (c *connIO) init(conn net.Conn) {
	c.rawIO.init(conn)
	c.oneP = runtime.GOMAXPROCS(0) == 1
}

func (c *connIO) read(p []byte) (int, error) {
	if c.oneP && c.wrote.Swap(false) {
		runtime.Gosched()
	}
	return c.rawIO.read(p)
}

func (c *connIO) write(p []byte) (int, error) {
	if c.oneP {
		c.wrote.Store(true)
	}
	return c.rawIO.write(p)
}
