package tlsinspect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// upstream is the proxy's connection to the original destination. It is
// made by dialSend rather than net.Dialer because of one difference that
// costs a proxy a scheduling round and five system calls per connection:
// the destination's handshake is usually complete when connect(2)
// returns (on a veth or loopback the SYN-ACK is processed within the
// call), so the replayed bytes are written at once, as HAProxy does,
// instead of first waiting for the poller to report the socket writable
// and then reading back the error, the local and the peer address.
type upstream struct{ *os.File }

// CloseWrite sends the FIN of a half-close.
func (u upstream) CloseWrite() error {
	return control(u, func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// control runs f on c's descriptor and returns the first error.
func control(c syscall.Conn, f func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// dialSend connects to dst and writes first (the replayed hello, or
// nothing), within timeout. The socket gets the proxy's keep-alive and no
// Nagle delay before the SYN leaves.
func dialSend(dst netip.AddrPort, first []byte, timeout time.Duration) (*upstream, error) {
	addr := dst.Addr().Unmap()
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(dst.Port()), Addr: addr.As16()})
	if addr.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: addr.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1),
		setKeepAlive(fd)); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", dst, err)
	}
	// The poller takes the descriptor here; from now on it closes it.
	up := &upstream{os.NewFile(uintptr(fd), "upstream")}
	if err := up.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		up.Close()
		return nil, err
	}
	raw, err := up.SyscallConn()
	if err != nil {
		up.Close()
		return nil, err
	}
	rest := first
	var werr error
	for {
		err = raw.Write(func(fd uintptr) bool {
			if len(rest) == 0 {
				werr = connected(int(fd))
				return !errors.Is(werr, unix.ENOTCONN)
			}
			// A write to a connection still in its handshake fails with
			// EAGAIN, and the poller reports the socket writable once it
			// is established; a refused or unreachable destination fails
			// it with the connection's error.
			var n int
			n, werr = unix.Write(int(fd), rest)
			if errors.Is(werr, unix.EAGAIN) {
				return false
			}
			if werr == nil {
				rest = rest[n:]
			}
			return true
		})
		if err == nil {
			err = werr
		}
		if err != nil || len(rest) == 0 {
			break
		}
	}
	if err != nil {
		up.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = syscall.ETIMEDOUT
		}
		return nil, fmt.Errorf("connect %s: %w", dst, err)
	}
	_ = up.SetWriteDeadline(time.Time{})
	return up, nil
}

// connected reports a finished handshake as nil, one still under way as
// ENOTCONN, and a failed one as its error.
func connected(fd int) error {
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return err
	case soerr != 0:
		return syscall.Errno(soerr)
	}
	_, err = unix.Getpeername(fd)
	return err
}
