package tlsinspect

import (
	"syscall"

	"golang.org/x/sys/unix"
)

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

// dupFd returns a duplicate of c's descriptor, unknown to Go's poller:
// closing c then leaves the socket to an event loop.
func dupFd(c syscall.Conn) (fd int, err error) {
	err = control(c, func(cfd int) (err error) {
		fd, err = unix.FcntlInt(uintptr(cfd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	return fd, err
}
