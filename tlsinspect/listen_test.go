package tlsinspect

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenKeepAliveInherited: connections accepted by a Listen listener
// have keep-alive on with KeepAlive's idle time, though Go set nothing on
// them.
func TestListenKeepAliveInherited(t *testing.T) {
	ln, err := Listen(net.ListenConfig{}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, s := tcpPairOn(t, ln)
	raw, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on, idle int
	var err1, err2 error
	raw.Control(func(fd uintptr) {
		on, err1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		idle, err2 = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if on != 1 || time.Duration(idle)*time.Second != KeepAlive.Idle {
		t.Errorf("accepted connection: SO_KEEPALIVE=%d TCP_KEEPIDLE=%ds, want 1 and %v", on, idle, KeepAlive.Idle)
	}
}
