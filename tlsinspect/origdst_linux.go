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
	err = control(c, func(fd int) (err error) {
		dst, err = originalDst(fd)
		return err
	})
	return dst, err
}

func originalDst(fd int) (netip.AddrPort, error) {
	var dst netip.AddrPort
	err := func() error {
		// A dual-stack socket carries IPv4 connections as mapped
		// addresses; ask for IPv4 first, as its NAT record is the one that
		// exists for them.
		var sa4 unix.RawSockaddrInet4
		n := uint32(unsafe.Sizeof(sa4))
		if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa4), &n); err == nil {
			dst = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:]))
			return nil
		}
		var sa6 unix.RawSockaddrInet6
		n = uint32(unsafe.Sizeof(sa6))
		err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa6), &n)
		if err == nil {
			dst = netip.AddrPortFrom(netip.AddrFrom16(sa6.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa6.Port))[:]))
		}
		return err
	}()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if !dst.Addr().IsValid() || dst.Port() == 0 {
		return netip.AddrPort{}, errors.New("original destination: none recorded")
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), nil
}
