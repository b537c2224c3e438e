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
	var on, idle int
	err = control(s, func(fd int) (err error) {
		if on, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE); err != nil {
			return err
		}
		idle, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if on != 1 || time.Duration(idle)*time.Second != KeepAlive.Idle {
		t.Errorf("accepted connection: SO_KEEPALIVE=%d TCP_KEEPIDLE=%ds, want 1 and %v", on, idle, KeepAlive.Idle)
	}
}
