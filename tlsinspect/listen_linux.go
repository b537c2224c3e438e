package tlsinspect

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listen opens a proxy listener on address with lc (its Control runs
// first). Keep-alive (keepAlive) and no Nagle delay are set once on the
// listening socket, and the kernel copies them into every connection
// accepted from it: the event loops accept with no system call of Go's,
// and need none per connection for them.
func Listen(lc net.ListenConfig, address string) (*net.TCPListener, error) {
	control := lc.Control
	lc.KeepAlive = -1 // inherited from the listening socket, see setKeepAlive
	lc.KeepAliveConfig = net.KeepAliveConfig{}
	lc.Control = func(network, address string, c syscall.RawConn) error {
		if control != nil {
			if err := control(network, address, c); err != nil {
				return err
			}
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(setKeepAlive(int(fd)), rawSetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
		})
		return errors.Join(err, serr)
	}
	ln, err := lc.Listen(context.Background(), "tcp", address)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// setKeepAlive turns keep-alive on with keepAlive's idle time. The order
// matters on a connection that has lived a while (see keepAliveAfter):
// TCP_KEEPIDLE set after SO_KEEPALIVE reschedules the first probe from
// the last data received, not from now.
func setKeepAlive(fd int) error {
	return errors.Join(
		rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1),
		rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive().Idle/time.Second)))
}
