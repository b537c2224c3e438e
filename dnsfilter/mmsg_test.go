package dnsfilter

import (
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestMmsghdrLayout: mmsghdr is the kernel's struct mmsghdr, a msghdr
// and an unsigned int padded to the msghdr's (a pointer's) alignment, on
// whatever machine this is built for (GOARCH=386 too).
func TestMmsghdrLayout(t *testing.T) {
	ptr := unsafe.Sizeof(uintptr(0))
	want := (unsafe.Sizeof(unix.Msghdr{}) + 4 + ptr - 1) &^ (ptr - 1)
	if got := unsafe.Sizeof(mmsghdr{}); got != want || unsafe.Offsetof(mmsghdr{}.n) != unsafe.Sizeof(unix.Msghdr{}) {
		t.Errorf("sizeof(mmsghdr) = %d, n at %d; the kernel's is %d, n at %d", got, unsafe.Offsetof(mmsghdr{}.n), want, unsafe.Sizeof(unix.Msghdr{}))
	}
}

// TestMmsgAddrs: an address written for a reply reads back the same,
// IPv4 on an AF_INET socket, IPv4-mapped and IPv6 on a dual-stack one,
// and a link-local one with its interface (the zone, as an index): the
// reply goes back out of the interface the query came in on.
func TestMmsgAddrs(t *testing.T) {
	for _, tc := range []struct {
		v4   bool
		addr string
	}{
		{true, "192.0.2.1:53"},
		{false, "[::ffff:192.0.2.1]:53"},
		{false, "[2001:db8::1]:5353"},
		{false, "[fe80::1%3]:53"},
	} {
		b := &mmsgBatch{v4: tc.v4}
		b.grow(1)
		to := netip.MustParseAddrPort(tc.addr)
		if !b.setWrite(0, []byte("x"), to) {
			t.Errorf("%s: not written", tc.addr)
			continue
		}
		if got, ok := b.addr(0); !ok || got != to {
			t.Errorf("%s: reads back as %v, %v", tc.addr, got, ok)
		}
	}
	b := &mmsgBatch{}
	b.grow(1)
	if b.setWrite(0, []byte("x"), netip.MustParseAddrPort("[fe80::1%eth0]:53")) {
		t.Error("a zone by name was written")
	}
	b4 := &mmsgBatch{v4: true}
	b4.grow(1)
	if b4.setWrite(0, []byte("x"), netip.MustParseAddrPort("[2001:db8::1]:53")) {
		t.Error("an IPv6 address was written on an AF_INET socket")
	}
}
