//go:build !unix

package proxy

// gone cannot peek without blocking here: a caller that leaves is noticed
// when its answer is written.
func (c *callerConn) gone() bool { return false }
