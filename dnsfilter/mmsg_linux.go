package dnsfilter

import (
	"encoding/binary"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The readers move datagrams with recvmmsg and sendmmsg made as raw
// system calls, as the proxy's event loops make theirs (tlsinspect): the
// sockets are non-blocking, so no call blocks, but a send runs the
// client's side of the veth inside the call. Through syscall.Syscall
// (x/net's ReadBatch and WriteBatch) the runtime counts each call as one
// that may block, and its monitor thread wakes every 20 µs while such
// calls go on, hands the processor to another thread when one spans two
// of its wakes, and is woken from its sleep by the next call: on the one
// core of a busy resolver, a third of the samples of a profile were those
// threads switching in and out.

// mmsghdr is struct mmsghdr: a message header and the length the kernel
// moved, padded by Go as by C to the header's alignment (64 bytes on
// 64-bit machines, 32 on 32-bit ones: TestMmsghdrLayout).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// mmsgBatch is the headers, buffers and addresses of one batch of
// datagrams on one socket.
type mmsgBatch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family's address
	bufs  [][]byte
	v4    bool // the socket is an AF_INET one: addresses are sockaddr_in

	// For reads: whether to poll before sleeping, and when the reader
	// last went to sleep (zero while awake).
	polling bool
	slept   time.Time
}

// newMmsgBatch returns an empty batch for datagrams on the socket rc
// (grow makes room, bufs are the caller's).
func newMmsgBatch(rc syscall.RawConn) (*mmsgBatch, error) {
	b := &mmsgBatch{}
	var family int
	var serr error
	if err := rc.Control(func(fd uintptr) { family, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockopt", serr)
	}
	b.v4 = family == unix.AF_INET
	return b, nil
}

// grow makes room for n datagrams.
func (b *mmsgBatch) grow(n int) {
	for len(b.hdrs) < n {
		b.hdrs = append(b.hdrs, mmsghdr{})
		b.iovs = append(b.iovs, unix.Iovec{})
		b.names = append(b.names, unix.RawSockaddrInet6{})
		b.bufs = append(b.bufs, nil)
	}
	// The slices may have moved: every header points anew.
	for i := range b.hdrs {
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.Iovlen = 1
		b.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
}

// prepareRead points the first n headers at bufs[:n], whole, for a read.
func (b *mmsgBatch) prepareRead(n int) {
	for i := range n {
		h := &b.hdrs[i]
		h.hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		h.hdr.Flags = 0
		h.n = 0
		b.iovs[i].Base = unsafe.SliceData(b.bufs[i])
		b.iovs[i].SetLen(len(b.bufs[i]))
	}
}

// recv reads up to n datagrams into bufs[:n], waiting for one in Go's
// poller, and returns how many it read.
//
// Under a heavy load it first polls the socket for a moment (pollFor,
// yielding to every other goroutine meanwhile) before it sleeps: a
// reader that drains its socket in batches finds it empty after each
// and sleeps, and every burst of queries then pays for waking it (an
// interrupt to its core, two context switches, on the clients' side
// as much as on ours). It polls only after a sleep shorter than the
// poll (one that polling would have saved), and stops at the first poll
// that finds nothing: an agent asking a few names a second polls at
// most once per burst (say its A and AAAA questions back to back), and
// a poll that fails costs at most pollFor, once per sleep.
func (b *mmsgBatch) recv(rc syscall.RawConn, n int) (int, error) {
	b.prepareRead(n)
	var got int
	var errno syscall.Errno
	var pollUntil time.Time
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
			if e != unix.EAGAIN {
				if !b.slept.IsZero() {
					b.polling = time.Since(b.slept) < pollFor
					b.slept = time.Time{}
				}
				got, errno = int(r), e
				return true
			}
			if b.polling {
				now := time.Now()
				if pollUntil.IsZero() {
					pollUntil = now.Add(pollFor)
				}
				if now.Before(pollUntil) {
					runtime.Gosched()
					continue
				}
				b.polling = false // found nothing: sleep, and poll again after a short sleep
			}
			b.slept = time.Now()
			return false
		}
	})
	return mmsgResult(got, errno, err)
}

// pollFor is how long a reader polls its empty socket, and the sleep
// after which it polls: one so short that polling would have caught
// what woke it (see recv).
const pollFor = 20 * time.Microsecond

// datagram is the i-th datagram read, and who sent it.
func (b *mmsgBatch) datagram(i int) ([]byte, netip.AddrPort, bool) {
	// A datagram longer than its buffer is cut short (MSG_TRUNC), as
	// ReadFrom cuts it: n is what was copied.
	from, ok := b.addr(i)
	return b.bufs[i][:b.hdrs[i].n], from, ok
}

// addr decodes the i-th name.
func (b *mmsgBatch) addr(i int) (netip.AddrPort, bool) {
	sa := &b.names[i]
	switch sa.Family {
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16(portBytes(&sa.Port))
		addr := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			// A link-local sender's interface, as its index: the reply
			// goes back out of it (setWrite).
			addr = addr.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(addr, port), true
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16(portBytes(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	}
	return netip.AddrPort{}, false
}

// portBytes is a sockaddr's port field as the bytes it holds, in
// network order whatever the machine's.
func portBytes(p *uint16) []byte { return (*[2]byte)(unsafe.Pointer(p))[:] }

// zoneIndex is the interface index an address's zone names (addr makes
// them so), 0 for none; false for a zone that is not one.
func zoneIndex(a netip.Addr) (uint32, bool) {
	if a.Zone() == "" {
		return 0, true
	}
	id, err := strconv.ParseUint(a.Zone(), 10, 32)
	return uint32(id), err == nil
}

// setWrite points the i-th header at p, to be sent to to.
func (b *mmsgBatch) setWrite(i int, p []byte, to netip.AddrPort) bool {
	h := &b.hdrs[i]
	b.iovs[i].Base = unsafe.SliceData(p)
	b.iovs[i].SetLen(len(p))
	h.hdr.Flags = 0
	sa := &b.names[i]
	*sa = unix.RawSockaddrInet6{}
	if b.v4 {
		a := to.Addr().Unmap()
		if !a.Is4() {
			return false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = a.As4()
		binary.BigEndian.PutUint16(portBytes(&sa4.Port), to.Port())
		h.hdr.Namelen = unix.SizeofSockaddrInet4
		return true
	}
	sa.Family = unix.AF_INET6
	sa.Addr = to.Addr().As16()
	id, ok := zoneIndex(to.Addr())
	if !ok {
		return false // a zone by name: addr never makes one
	}
	sa.Scope_id = id
	binary.BigEndian.PutUint16(portBytes(&sa.Port), to.Port())
	h.hdr.Namelen = unix.SizeofSockaddrInet6
	return true
}

// sendFrom sends datagrams from to n-1, set with setWrite, and returns
// how many the kernel took: fewer when the one after them failed.
func (b *mmsgBatch) sendFrom(rc syscall.RawConn, from, n int) (int, error) {
	var sent int
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[from])), uintptr(n-from), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		sent, errno = int(r), e
		return true
	})
	return mmsgResult(sent, errno, err)
}

// mmsgResult is what a batch call returns: the poller's error (a closed
// socket), else the call's, else how many datagrams it moved.
func mmsgResult(n int, errno syscall.Errno, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}
