package tlsinspect

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenOptionsInherited: connections accepted from a Listen
// listener with a bare accept4(2), as the event loops do, have keep-alive
// with keepAlive's idle time and no Nagle delay.
func TestListenOptionsInherited(t *testing.T) {
	ln, err := Listen(net.ListenConfig{}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial(t, ln)
	var fd int
	err = control(ln, func(lnfd int) (err error) {
		fd, _, err = unix.Accept4(lnfd, unix.SOCK_CLOEXEC)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	checkSockopts(t, fd)
}

// checkSockopts: a proxy socket has no Nagle delay and the proxy's
// keep-alive.
func checkSockopts(t *testing.T, fd int) {
	t.Helper()
	want := map[[2]int]int{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY}:  1,
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE}:  1,
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}: int(keepAlive().Idle / time.Second),
	}
	for opt, v := range want {
		got, err := unix.GetsockoptInt(fd, opt[0], opt[1])
		if err != nil {
			t.Fatal(err)
		}
		if got != v {
			t.Errorf("socket option %v = %d, want %d", opt, got, v)
		}
	}
}
