//go:build unix

package proxy

import "syscall"

// gone reports whether the caller has closed (or reset) its connection,
// with one non-blocking peek that consumes nothing. Bytes waiting (a
// pipelined request) or nothing yet both mean it is still there.
func (c *callerConn) gone() bool {
	if c.raw == nil {
		return false
	}
	gone := false
	var b [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
		case err != nil:
			gone = true // reset
		case n == 0:
			gone = true // closed: end of stream
		}
		return true // never wait
	})
	return err == nil && gone
}
