package tlsinspect

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops make every system call raw: none of them blocks (the
// sockets, pipes and the epoll wait are all non-blocking), but on a veth
// a connect or a write runs the other namespace's network stack inside
// the call, for tens of microseconds. Through syscall.Syscall the runtime
// would count that as a blocking call, and its monitor thread would hand
// the processor to another thread meanwhile, waking it and switching
// back for every such call: at one connection at a time that doubled the
// context switches per connection and cost the set-up tens of
// microseconds. A raw call keeps the processor; its length is bounded by
// the kernel's work on a non-blocking socket.

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawSplice(from, to, n int) (int, error) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

func rawClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

func rawSetsockopt(fd, level, name int, val unsafe.Pointer, size uintptr) error {
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(val), size, 0)
	return errnoErr(e)
}

func rawSetsockoptInt(fd, level, name, v int) error {
	i := int32(v)
	return rawSetsockopt(fd, level, name, unsafe.Pointer(&i), 4)
}

func rawGetsockoptInt(fd, level, name int) (int, error) {
	var v int32
	n := uint32(4)
	err := getsockopt(fd, level, name, unsafe.Pointer(&v), &n)
	return int(v), err
}

// getsockopt is getsockopt(2) into val, of *n bytes.
func getsockopt(fd, level, name int, val unsafe.Pointer, n *uint32) error {
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(val), uintptr(unsafe.Pointer(n)), 0)
	return errnoErr(e)
}

// setReset makes the next close of fd send a reset (SO_LINGER, 0 s).
func setReset(fd int) error {
	l := unix.Linger{Onoff: 1}
	return rawSetsockopt(fd, unix.SOL_SOCKET, unix.SO_LINGER, unsafe.Pointer(&l), unsafe.Sizeof(l))
}

// unsent is how much of what was written to fd its peer has not
// acknowledged yet (SIOCOUTQ).
func unsent(fd int) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&v)))
	return int(v), errnoErr(e)
}

func rawSocket(family int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// rawConnect starts connecting fd to dst.
func rawConnect(fd int, dst netip.AddrPort) error {
	var e syscall.Errno
	addr := dst.Addr().Unmap()
	if addr.Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.As4()}
		binary.BigEndian.PutUint16(netPort(&sa.Port), dst.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.As16()}
		binary.BigEndian.PutUint16(netPort(&sa.Port), dst.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	return errnoErr(e)
}

func rawGetpeername(fd int) error {
	var sa unix.RawSockaddrAny
	n := uint32(unsafe.Sizeof(sa))
	_, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)))
	return errnoErr(e)
}

func rawAccept(lnfd int) (int, syscall.Errno) {
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lnfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	return int(fd), e
}

func rawEpollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// rawEpollPoll takes the events ready now, without waiting.
func rawEpollPoll(ep int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
