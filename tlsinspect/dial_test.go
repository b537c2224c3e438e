package tlsinspect

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDialSend(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) { testDialSend(t, addr) })
	}
}

func testDialSend(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, size := range []int{0, 517, 4 << 20} { // nothing, a hello, more than the send buffer
		first := make([]byte, size)
		rand.Read(first)
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer c.Close()
			time.Sleep(50 * time.Millisecond) // a slow reader: the write has to wait
			b, _ := io.ReadAll(c)
			got <- b
		}()
		up, err := dialSend(dst, first, 5*time.Second)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		checkSockopts(t, up)
		if err := up.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if b := <-got; !bytes.Equal(b, first) {
			t.Errorf("%d bytes sent, the server read %d", size, len(b))
		}
		up.Close()
	}
}

func TestDialSendRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nothing listens there now
	for _, first := range [][]byte{nil, []byte("hello")} {
		if _, err := dialSend(dst, first, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("first=%q: %v, want connection refused", first, err)
		}
	}
}

// TestDialSendTimeout: a destination that never answers the SYN (here a
// listener whose accept queue is full) fails at the timeout.
func TestDialSendTimeout(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	for range 4 { // fill the accept queue
		c, err := net.DialTimeout("tcp", dst.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
	}
	start := time.Now()
	_, err = dialSend(dst, []byte("hello"), 300*time.Millisecond)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("%v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// checkSockopts: the upstream socket has no Nagle delay and the proxy's
// keep-alive, as the agent's side has.
func checkSockopts(t *testing.T, up *upstream) {
	t.Helper()
	want := map[[2]int]int{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY}:  1,
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE}:  1,
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}: int(KeepAlive.Idle / time.Second),
	}
	err := control(up, func(fd int) error {
		for opt, v := range want {
			got, err := unix.GetsockoptInt(fd, opt[0], opt[1])
			if err != nil {
				return err
			}
			if got != v {
				t.Errorf("socket option %v = %d, want %d", opt, got, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
