package firewall

import (
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// TestForgetFlows: the entries of flows from the agent's subnets (v4 and
// v6) are deleted, others are kept.
func TestForgetFlows(t *testing.T) {
	_, ns := newManager(t, false) // a namespace with connection tracking in use
	c, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := netip.MustParseAddr
	dst := a("203.0.113.5")
	flows := []conntrack.Flow{
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("198.18.0.2"), dst, 40000, 443, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_UDP, 0, a("198.18.0.2"), dst, 40001, 53, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("2001:db8:a::2"), a("2001:db8:ff::5"), 40000, 443, 600, 0),
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("192.0.2.9"), dst, 40000, 443, 600, 0), // not the agent's
	}
	for _, f := range flows {
		if err := c.Create(f); err != nil {
			t.Fatalf("create %v: %v", f.TupleOrig, err)
		}
	}
	prefixes := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/30"), netip.MustParsePrefix("2001:db8:a::/64")}
	n, err := ForgetFlows(ns.Fd(), prefixes)
	if err != nil || n != 3 {
		t.Fatalf("ForgetFlows = %d, %v; want 3 deleted", n, err)
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
	c, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
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
