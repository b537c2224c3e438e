package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrRouterMode refuses what needs the agent's namespace, such as running
// a command there, for an agent in router mode: its clients are machines
// behind an interface of the gateway, and it has no namespace.
var ErrRouterMode = errors.New("the agent is in router mode: its clients are the machines behind an interface of the gateway, and it has no namespace to run a command in (run it on one of those machines)")

// InterfaceAgent is the agent of router mode: every client behind the
// interface name, an existing interface or bridge of the gateway
// namespace (VMs on a bridge), rather than a namespace at the end of a
// veth that sluice makes. sluice makes nothing here and changes nothing
// of the interface: its addresses, state and clients are the user's
// (addressing and DHCP are the user's own setup). The agent's networks
// are the interface's: its one IPv4 network, and its one global IPv6
// network unless ipv6 is false; its addresses there are the gateway's
// (Gateway, Gateway6). Connect, Kill and Close do nothing to it, and Run
// refuses: there is no namespace to run a command in.
//
// It is refused when it does not exist, is loopback or down, has no IPv4
// address with room for clients, has addresses in more than one network
// of a family (the firewall takes one source network per family), or
// carries a default route of the namespace: everything arriving on the
// interface is the agent's, and on the uplink that would be all the
// traffic that comes back to the gateway from outside.
func InterfaceAgent(name string, ipv6 bool) (*Agent, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("router mode: there is no interface %s in this network namespace: create it first (a bridge for the clients, see deploy/router.md); sluice uses an existing interface and never makes one", name)
		}
		return nil, fmt.Errorf("router mode: find interface %s: %w", name, err)
	}
	attrs := link.Attrs()
	switch {
	case attrs.Flags&net.FlagLoopback != 0:
		return nil, fmt.Errorf("router mode: %s is the loopback interface, which has no clients", name)
	case attrs.Flags&net.FlagUp == 0:
		return nil, fmt.Errorf("router mode: interface %s is down: bring it up (ip link set %s up) before sluice serves it; sluice does not change a user's interface", name, name)
	}
	if err := notDefaultRoute(attrs.Index, name); err != nil {
		return nil, err
	}
	a := &Agent{Fd: -1, Iface: name, Router: true}
	if a.Gateway, a.Net4, err = interfaceNet(link, netlink.FAMILY_V4); err != nil {
		return nil, err
	}
	if !a.Gateway.IsValid() {
		return nil, fmt.Errorf("router mode: interface %s has no IPv4 address: give it the address its clients use as their gateway and DNS server (ip addr add 198.18.5.1/24 dev %s, or your network configuration's equivalent)", name, name)
	}
	if a.Net4.Bits() > 30 {
		return nil, fmt.Errorf("router mode: interface %s's address %s leaves no room for clients: give it the network its clients are on (such as /24)", name, netip.PrefixFrom(a.Gateway, a.Net4.Bits()))
	}
	if ipv6 {
		if a.Gateway6, a.Net6, err = interfaceNet(link, netlink.FAMILY_V6); err != nil {
			return nil, err
		}
		if a.Net6.IsValid() && a.Net6.Bits() > 126 {
			return nil, fmt.Errorf("router mode: interface %s's address %s leaves no room for clients: give it the network its clients are on (such as /64)", name, netip.PrefixFrom(a.Gateway6, a.Net6.Bits()))
		}
	}
	return a, nil
}

// interfaceNet returns the first global address of link in family and
// its network, invalid ones when it has none. Addresses in more than one
// network are refused: clients in the others would be taken for spoofers.
func interfaceNet(link netlink.Link, family int) (netip.Addr, netip.Prefix, error) {
	addrs, err := Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("router mode: list the addresses of %s: %w", link.Attrs().Name, err)
	}
	var first netip.Addr
	var nets []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() { // loopback, link-local, multicast, unspecified
			continue
		}
		ones, _ := a.Mask.Size()
		n := netip.PrefixFrom(ip, ones).Masked()
		if !first.IsValid() {
			first = ip
		}
		if !slices.Contains(nets, n) {
			nets = append(nets, n)
		}
	}
	if len(nets) > 1 {
		var s []string
		for _, n := range nets {
			s = append(s, n.String())
		}
		fam := "IPv4"
		if family == netlink.FAMILY_V6 {
			fam = "IPv6"
		}
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("router mode: interface %s has %s addresses in %d networks (%s): sluice serves one %s network per interface; keep one (or give each network an interface of its own)",
			link.Attrs().Name, fam, len(nets), strings.Join(s, ", "), fam)
	}
	if len(nets) == 0 {
		return netip.Addr{}, netip.Prefix{}, nil
	}
	return first, nets[0], nil
}

// notDefaultRoute refuses the interface with index idx when a default
// route of the namespace's main table leaves through it.
func notDefaultRoute(idx int, name string) error {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return fmt.Errorf("router mode: list the routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			if ones, _ := maskSize(r.Dst); ones != 0 {
				continue
			}
			via := r.LinkIndex == idx
			for _, hop := range r.MultiPath {
				via = via || hop.LinkIndex == idx
			}
			if via {
				return fmt.Errorf("router mode: interface %s carries this gateway's default route: everything arriving on the interface of a router-mode agent is that agent's traffic, and on the uplink that is all the traffic that comes back to this host from outside (and the LAN's); name the interface the clients are behind, such as a bridge for VMs, not the uplink", name)
			}
		}
	}
	return nil
}

func maskSize(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 0
	}
	return n.Mask.Size()
}

// Dump runs a netlink dump (an address, link or route list) again while
// the kernel says the dump was interrupted: the list changed while it was
// read (another agent's link or address came or went: sluice serve starts
// agents side by side), and what it returned may be missing entries.
func Dump[T any](list func() ([]T, error)) ([]T, error) {
	for range 20 {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, fmt.Errorf("%w, 20 times in a row", netlink.ErrDumpInterrupted)
}
