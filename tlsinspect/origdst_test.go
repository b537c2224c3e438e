package tlsinspect

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestOriginalDst: in a namespace whose NAT hooks give every connection
// a NAT record (as on a host that NATs for containers), a connection
// redirected to the listener has the destination it was sent to, on
// another port or on the listener's own port at another address, and one
// made straight to the listener has none; whether the listener's port is
// known (the event loops' case) or not.
func TestOriginalDst(t *testing.T) {
	nstest.RequireRoot(t)
	nft := nstest.RequireTool(t, "nft", "nftables", "")
	ns := nstest.New(t, nstest.Prefix()+"od")
	var ln *net.TCPListener
	if err := ns.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ns.Run(t, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
	ns.Run(t, nft, "add", "table", "ip", "od")
	ns.Run(t, nft, "add", "chain", "ip", "od", "out", "{ type nat hook output priority -100; }")
	ns.Run(t, nft, "add", "rule", "ip", "od", "out", "tcp", "dport", "9443", "redirect", "to", fmt.Sprint(":", port))
	ns.Run(t, nft, "add", "rule", "ip", "od", "out", "ip", "daddr", "127.0.0.2", "tcp", "dport", fmt.Sprint(port), "redirect", "to", fmt.Sprint(":", port))

	for _, tc := range []struct {
		name, to string
		want     string // the original destination, or "" for an error
	}{
		{"redirected", "127.0.0.1:9443", "127.0.0.1:9443"},
		{"redirected from the listener's port", fmt.Sprint("127.0.0.2:", port), fmt.Sprint("127.0.0.2:", port)},
		{"straight to the listener", fmt.Sprint("127.0.0.1:", port), ""},
	} {
		var c net.Conn
		if err := ns.Do(func() (err error) {
			c, err = net.Dial("tcp4", tc.to)
			return err
		}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		dst, err := OriginalDst(s)
		var unknown netip.AddrPort
		var uerr error
		if cerr := control(s, func(fd int) error { unknown, uerr = originalDst(fd, 0); return nil }); cerr != nil {
			t.Fatal(cerr)
		}
		s.Close()
		c.Close()
		switch {
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), "not redirected")):
			t.Errorf("%s: original destination %v (%v), want none, not redirected", tc.name, dst, err)
		case tc.want != "" && (err != nil || dst.String() != tc.want):
			t.Errorf("%s: original destination %v (%v), want %s", tc.name, dst, err, tc.want)
		case unknown != dst || (uerr == nil) != (err == nil):
			t.Errorf("%s: with the listener's port unknown, %v (%v); known, %v (%v)", tc.name, unknown, uerr, dst, err)
		}
	}
}
