package tlsinspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6):
// the destination a connection had before nftables redirected it.
const soOriginalDst = 80

// OriginalDst returns where the agent meant c to go. It fails when the
// connection was not redirected (the kernel then has no NAT record for it),
// and callers drop the connection: there is no destination to check.
func OriginalDst(c *net.TCPConn) (dst netip.AddrPort, err error) {
	var port uint16
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok {
		port = uint16(local.Port)
	}
	err = control(c, func(fd int) (err error) {
		dst, err = originalDst(fd, port)
		return err
	})
	return dst, err
}

// originalDst is where fd's connection, accepted from a listener on
// port listenPort (0: not known), was meant to go.
func originalDst(fd int, listenPort uint16) (netip.AddrPort, error) {
	dst, err := natDst(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if !dst.Addr().IsValid() || dst.Port() == 0 {
		return netip.AddrPort{}, errors.New("original destination: none recorded")
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	// Where conntrack runs (a host that NATs for containers), a connection
	// made straight to the listener has a record too, whose original
	// destination is the listener itself: it was not redirected. A socket
	// accepted from a listener has the listener's port, so only a
	// destination on that port needs the socket's address (a system call
	// less for every connection on 443).
	if listenPort != 0 && dst.Port() != listenPort {
		return dst, nil
	}
	if local, ok := localAddr(fd); ok && local == dst {
		return netip.AddrPort{}, errors.New("original destination: none, the connection was not redirected")
	}
	return dst, nil
}

// localAddr is the address fd is bound to.
func localAddr(fd int) (netip.AddrPort, bool) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, false
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// natDst reads the NAT record of fd's connection. A dual-stack socket
// carries IPv4 connections as mapped addresses, and the record that exists
// for them is an IPv4 one: that is asked first.
func natDst(fd int) (netip.AddrPort, error) {
	var sa4 unix.RawSockaddrInet4
	n := uint32(unsafe.Sizeof(sa4))
	if getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa4), &n) == nil {
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), binary.BigEndian.Uint16(netPort(&sa4.Port))), nil
	}
	var sa6 unix.RawSockaddrInet6
	n = uint32(unsafe.Sizeof(sa6))
	if err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa6), &n); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa6.Addr), binary.BigEndian.Uint16(netPort(&sa6.Port))), nil
}

// netPort is a sockaddr's port field as the bytes it holds: network order.
func netPort(p *uint16) []byte { return (*[2]byte)(unsafe.Pointer(p))[:] }
