//go:build !linux || race

package proxy

import "net"

// rawIO is net.Conn's Read and Write where raw system calls are not used
// (rawio_raw.go says why they are on Linux). Under the race detector
// they are not either: net.Conn's calls tell it that what was written
// before a write to a socket happens before what follows the read of it,
// and raw calls would hide that order.
type rawIO struct{ conn net.Conn }

func (s *rawIO) init(conn net.Conn)          { s.conn = conn }
func (s *rawIO) read(p []byte) (int, error)  { return s.conn.Read(p) }
func (s *rawIO) write(p []byte) (int, error) { return s.conn.Write(p) }
