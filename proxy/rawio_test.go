package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// socketPair is a loopback TCP connection: ours wrapped in a rawIO, and
// the peer.
func socketPair(t testing.TB) (*rawIO, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); peer.Close() })
	s := &rawIO{}
	s.init(conn)
	return s, conn, peer
}

// TestRawIO: reads and writes through rawIO keep net.Conn's contract:
// everything written arrives even when the socket buffer fills, deadlines
// give timeout errors, the peer's close is a bare io.EOF, its reset an
// errno callers can match, and a closed connection net.ErrClosed.
func TestRawIO(t *testing.T) {
	t.Run("round trip", func(t *testing.T) {
		s, _, peer := socketPair(t)
		if _, err := peer.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := s.read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		if n, err := s.write([]byte("pong")); n != 4 || err != nil {
			t.Fatalf("write %d, %v", n, err)
		}
		if _, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:4]) != "pong" {
			t.Fatalf("peer read %q, %v", buf[:4], err)
		}
	})
	t.Run("write larger than the socket buffers", func(t *testing.T) {
		s, _, peer := socketPair(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
		got := make(chan []byte)
		go func() {
			time.Sleep(50 * time.Millisecond) // let the buffers fill
			b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
			got <- b
		}()
		if n, err := s.write(big); n != len(big) || err != nil {
			t.Fatalf("write %d of %d, %v", n, len(big), err)
		}
		if b := <-got; !bytes.Equal(b, big) {
			t.Fatalf("peer got %d bytes, not what was written", len(b))
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		s, conn, _ := socketPair(t)
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := s.read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past its deadline: %v", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		s, conn, _ := socketPair(t)
		big := make([]byte, 64<<20) // more than the socket buffers; the peer never reads
		_ = conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := s.write(big)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(big) {
			t.Fatalf("write past its deadline: %d bytes, %v", n, err)
		}
	})
	t.Run("peer closes", func(t *testing.T) {
		s, _, peer := socketPair(t)
		peer.Close()
		n, err := s.read(make([]byte, 8))
		if n != 0 || err != io.EOF {
			t.Fatalf("read after the peer closed: %d, %v; want a bare io.EOF", n, err)
		}
	})
	t.Run("peer resets", func(t *testing.T) {
		s, _, peer := socketPair(t)
		_ = peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		time.Sleep(10 * time.Millisecond)
		var err error
		for range 3 { // the first write may still be taken
			if _, err = s.write([]byte("x")); err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("write to a reset connection: %v", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s, conn, _ := socketPair(t)
		conn.Close()
		if _, err := s.read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read of a closed connection: %v", err)
		}
		if _, err := s.write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write to a closed connection: %v", err)
		}
	})
}

// BenchmarkRawIO: a 600-byte write and the peer's read of it, the
// proxy's calls against net.Conn's, on one loopback connection.
func BenchmarkRawIO(b *testing.B) {
	for _, raw := range []bool{false, true} {
		name := "net.Conn"
		if raw {
			name = "rawIO"
		}
		b.Run(name, func(b *testing.B) {
			r, c, a := socketPair(b)
			var w rawIO
			w.init(a)
			msg, buf := make([]byte, 600), make([]byte, 4096)
			var err error
			b.ReportAllocs()
			for b.Loop() {
				if raw {
					_, err = w.write(msg)
				} else {
					_, err = a.Write(msg)
				}
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for n < len(msg) && err == nil {
					var k int
					if raw {
						k, err = r.read(buf)
					} else {
						k, err = c.Read(buf)
					}
					n += k
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
