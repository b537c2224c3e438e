package firewall

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/testing/nstest"
)

// conntrackIn is a connection-tracking client of ns, closed with the test.
func conntrackIn(t testing.TB, ns *nstest.NS) *conntrack.Conn {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestForgetFlows: the entries of flows from the agent's subnets (v4 and
// v6) are deleted, others are kept.
func TestForgetFlows(t *testing.T) {
	_, ns := newManager(t, false) // a namespace with connection tracking in use
	c := conntrackIn(t, ns)
	a := netip.MustParseAddr
	dst := a("203.0.113.5")
	flows := []conntrack.Flow{
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("198.18.0.2"), dst, 40000, 443, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_UDP, 0, a("198.18.0.2"), dst, 40001, 53, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("2001:db8:a::2"), a("2001:db8:ff::5"), 40000, 443, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("192.0.2.9"), dst, 40000, 443, 600, 0), // not the agent's
	}
	ping := conntrack.NewFlow(unix.IPPROTO_ICMP, 0, a("198.18.0.2"), dst, 0, 0, 600, 0) // no ports: the kernel's tuple is used as is
	ping.TupleOrig.Proto.ICMPv4, ping.TupleOrig.Proto.ICMPID, ping.TupleOrig.Proto.ICMPType = true, 77, 8
	ping.TupleReply.Proto.ICMPv4, ping.TupleReply.Proto.ICMPID, ping.TupleReply.Proto.ICMPType = true, 77, 0
	flows = append(flows, ping)
	for _, f := range flows {
		if err := c.Create(f); err != nil {
			t.Fatalf("create %v: %v", f.TupleOrig, err)
		}
	}
	prefixes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/30"), netip.MustParsePrefix("2001:db8:a::/64")}
	n, err := ForgetFlows(ns.Fd(), prefixes)
	if err != nil || n != 4 {
		t.Fatalf("ForgetFlows = %d, %v; want 4 deleted", n, err)
	}
	left, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].TupleOrig.IP.SourceAddress != a("192.0.2.9") {
		t.Errorf("left after ForgetFlows: %+v, want only the flow from 192.0.2.9", left)
	}
	if n, err := ForgetFlows(ns.Fd(), prefixes); err != nil || n != 0 {
		t.Errorf("second ForgetFlows = %d, %v; want 0, nil", n, err)
	}
}

// BenchmarkForgetFlows: one call against a table of 100,000 flows, 1,000
// of them the agent's, recreated before each call.
func BenchmarkForgetFlows(b *testing.B) {
	_, ns := newManagerB(b)
	c := conntrackIn(b, ns)
	other, agent := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("198.18.0.2")
	dst := netip.MustParseAddr("203.0.113.5")
	for i := range 99_000 {
		f := conntrack.NewFlow(unix.IPPROTO_TCP, 0, other, dst, uint16(1024+i%60000), uint16(1+i/60000), 3600, 0)
		if err := c.Create(f); err != nil {
			b.Fatal(err)
		}
	}
	prefixes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/30")}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		for i := range 1000 {
			if err := c.Create(conntrack.NewFlow(unix.IPPROTO_TCP, 0, agent, dst, uint16(20000+i), 443, 3600, 0)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if n, err := ForgetFlows(ns.Fd(), prefixes); err != nil || n != 1000 {
			b.Fatalf("ForgetFlows = %d, %v", n, err)
		}
	}
}

// ctMessage is a ctnetlink entry as the kernel sends it: family header,
// CTA_TUPLE_ORIG with the source and destination, and a zone.
func ctMessage(src, dst netip.Addr) []byte {
	attr := nlAttr
	srcType, dstType := uint16(ctaIPv4Src), uint16(2)
	if src.Is6() {
		srcType, dstType = ctaIPv6Src, 4
	}
	ip := append(attr(srcType, src.AsSlice()), attr(dstType, dst.AsSlice())...)
	tuple := attr(ctaTupleOrig|unix.NLA_F_NESTED, attr(ctaTupleIP|unix.NLA_F_NESTED, ip))
	msg := append([]byte{unix.AF_INET, 0, 0, 0}, tuple...)
	return append(msg, attr(ctaZone|unix.NLA_F_NET_BYTEORDER, []byte{0, 7})...)
}

func TestDeleteBody(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/30"), netip.MustParsePrefix("2001:db8:a::/64")}
	for _, tc := range []struct {
		src  string
		want bool
	}{{"198.18.0.2", true}, {"198.18.0.9", false}, {"2001:db8:a::2", true}, {"2001:db8:b::2", false}} {
		msg := ctMessage(netip.MustParseAddr(tc.src), netip.MustParseAddr("203.0.113.5"))
		if tc.src[0] == '2' {
			msg = ctMessage(netip.MustParseAddr(tc.src), netip.MustParseAddr("2001:db8:ff::5"))
		}
		d := deleteBody(msg, prefixes)
		if (d != nil) != tc.want {
			t.Errorf("%s: delete %v, want %v", tc.src, d != nil, tc.want)
		}
		if d != nil && !bytes.Equal(d, msg) { // the family header, tuple and zone are all there is
			t.Errorf("%s: delete body %x, want the entry's own %x", tc.src, d, msg)
		}
	}
}

// FuzzDeleteBody: any bytes where a ctnetlink entry is expected are
// skipped or turned into a delete of the entry's own tuple, never a panic.
func FuzzDeleteBody(f *testing.F) {
	f.Add(ctMessage(netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("203.0.113.5")))
	f.Add(ctMessage(netip.MustParseAddr("2001:db8:a::2"), netip.MustParseAddr("2001:db8:ff::5")))
	prefixes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/30"), netip.MustParsePrefix("2001:db8:a::/64")}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d := deleteBody(msg, prefixes)
		if d != nil && (len(d) < 8 || !bytes.Equal(d[:4], msg[:4])) {
			t.Fatalf("delete body %x for %x", d, msg)
		}
	})
}

// TestTupleFlow: the destination and its TCP port are read from the
// original tuple, so that a revocation deletes only the flows to what it
// revoked.
func TestTupleFlow(t *testing.T) {
	attr := nlAttr
	src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.2.10")
	ip := append(attr(ctaIPv4Src, src.AsSlice()), attr(ctaIPv4Dst, dst.AsSlice())...)
	proto := append(attr(ctaProtoNum, []byte{unix.IPPROTO_TCP}), attr(2, []byte{0x9c, 0x40})...)
	proto = append(proto, attr(ctaDstPort, []byte{0x01, 0xbb})...)
	tuple := append(attr(ctaTupleIP|unix.NLA_F_NESTED, ip), attr(ctaTupleProt|unix.NLA_F_NESTED, proto)...)
	msg := append([]byte{unix.AF_INET, 0, 0, 0}, attr(ctaTupleOrig|unix.NLA_F_NESTED, tuple)...)
	got := tupleFlow(tuple)
	if want := (flow{src: src, dst: dst, proto: unix.IPPROTO_TCP, dport: 443}); got != want {
		t.Errorf("tupleFlow = %+v, want %+v", got, want)
	}
	agent := []netip.Prefix{netip.MustParsePrefix("198.18.0.2/32")}
	for _, tc := range []struct {
		to   elemKey
		want bool
	}{{elemKey{dst, 443}, true}, {elemKey{dst, 80}, false}, {elemKey{netip.MustParseAddr("198.18.2.11"), 443}, false}} {
		match := func(f flow) bool {
			return f.proto == unix.IPPROTO_TCP && agent[0].Contains(f.src) && f.dst == tc.to.addr && f.dport == tc.to.port
		}
		if d := deleteBodyIf(msg, match); (d != nil) != tc.want {
			t.Errorf("flow to %v: delete %v, want %v", tc.to, d != nil, tc.want)
		}
	}
}

// nlAttr is one netlink attribute, padded.
func nlAttr(typ uint16, payload []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
