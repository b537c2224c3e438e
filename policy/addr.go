package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// The ranges below are every entry of the IANA special-purpose address
// registries that is not marked globally reachable (Globally Reachable
// "False", or "N/A" for a deprecated or tunnelling block), plus multicast
// and, for IPv6, the deprecated site-local and IPv4-compatible blocks.
// A public name has no business resolving into any of them.
//
// IANA IPv4 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv4-special-registry):
//
//	0.0.0.0/8        "This network" (0.0.0.0/32 "this host" inside it)
//	10.0.0.0/8       Private-Use
//	100.64.0.0/10    Shared Address Space (CGNAT)
//	127.0.0.0/8      Loopback
//	169.254.0.0/16   Link Local (cloud metadata at 169.254.169.254)
//	172.16.0.0/12    Private-Use
//	192.0.0.0/24     IETF Protocol Assignments (192.0.0.0/29 IPv4 Service
//	                 Continuity, 192.0.0.8/32 dummy, 192.0.0.170-171/32
//	                 NAT64/DNS64 discovery); its globally reachable
//	                 192.0.0.9/32 (PCP anycast) and 192.0.0.10/32 (TURN
//	                 anycast) are in globalV4
//	192.0.2.0/24     Documentation (TEST-NET-1)
//	192.88.99.0/24   Deprecated (6to4 Relay Anycast, RFC 7526)
//	192.168.0.0/16   Private-Use
//	198.18.0.0/15    Benchmarking
//	198.51.100.0/24  Documentation (TEST-NET-2)
//	203.0.113.0/24   Documentation (TEST-NET-3)
//	240.0.0.0/4      Reserved (255.255.255.255/32 Limited Broadcast inside it)
//
// and 224.0.0.0/4, multicast. Globally reachable entries (192.31.196.0/24
// AS112, 192.52.193.0/24 AMT, 192.175.48.0/24 AS112) are not listed.
var forbiddenV4 = prefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)

// globalV4 are globally reachable entries inside a forbidden range.
var globalV4 = prefixes("192.0.0.9/32", "192.0.0.10/32")

// IANA IPv6 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv6-special-registry):
//
//	::1/128          Loopback             (in ::/96, below)
//	::/128           Unspecified          (in ::/96, below)
//	::ffff:0:0/96    IPv4-mapped Address
//	64:ff9b:1::/48   IPv4-IPv6 Translat., local use (the IPv4 address's
//	                 place is not known, so the block is refused whole)
//	100::/64         Discard-Only Address Block
//	100:0:0:1::/64   Dummy IPv6 Prefix
//	2001::/23        IETF Protocol Assignments, with 2001::/32 TEREDO and
//	                 2001:10::/28 ORCHID (both N/A) and 2001:2::/48
//	                 Benchmarking; its globally reachable 2001:1::1/128,
//	                 2001:1::2/128, 2001:1::3/128 (anycast), 2001:3::/32
//	                 (AMT), 2001:4:112::/48 (AS112), 2001:20::/28 (ORCHIDv2)
//	                 and 2001:30::/28 (DETs) are in globalV6
//	2001:db8::/32    Documentation
//	3fff::/20        Documentation
//	5f00::/16        Segment Routing (SRv6) SIDs
//	fc00::/7         Unique-Local
//	fe80::/10        Link-Local Unicast
//
// and ::/96 (IPv4-compatible, deprecated), fec0::/10 (site-local,
// deprecated), ff00::/8 (multicast). 64:ff9b::/96 (NAT64) is globally
// reachable and 2002::/16 (6to4) N/A: both are judged by the IPv4 address
// they embed (EmbeddedIPv4). 2620:4f:8000::/48 (AS112) is globally reachable.
var forbiddenV6 = prefixes(
	"::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64",
	"2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
	"fe80::/10", "fec0::/10", "ff00::/8",
)

// globalV6 are globally reachable entries inside a forbidden range.
var globalV6 = prefixes(
	"2001:1::1/128", "2001:1::2/128", "2001:1::3/128", "2001:3::/32",
	"2001:4:112::/48", "2001:20::/28", "2001:30::/28",
)

// labRanges are the special-purpose ranges that a gateway may be told to
// treat as globally reachable (CheckGlobalRange): the documentation and
// benchmarking ranges, on which test networks and labs build a fake
// internet. None of them is ever a real host's address.
var labRanges = prefixes(
	"192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
	"2001:2::/48", "2001:db8::/32", "3fff::/20",
)

// CheckGlobalRange returns an error, naming p, unless p lies inside one of
// labRanges: an override that makes a special-purpose range globally
// reachable may widen only those, never loopback, private-use, shared
// (CGNAT), link-local, unique-local or multicast space.
func CheckGlobalRange(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("global range %s: not a prefix", p)
	}
	for _, lab := range labRanges {
		if lab.Bits() <= p.Bits() && lab.Contains(p.Addr()) {
			return nil
		}
	}
	return fmt.Errorf("global range %s: only documentation and benchmarking ranges (%s) may be treated as globally reachable", p, joinPrefixes(labRanges))
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Forbidden reports whether addr is private, internal or special-purpose:
// an answer with such an address is dropped unless the entry says
// private: true. The IPv6 loopback and unspecified addresses fall in ::/96.
func Forbidden(addr netip.Addr) bool {
	if !addr.IsValid() {
		return true
	}
	if addr.Is4() {
		return InPrefixes(forbiddenV4, addr) && !InPrefixes(globalV4, addr)
	}
	if InPrefixes(forbiddenV6, addr) {
		return !InPrefixes(globalV6, addr)
	}
	if v4, ok := EmbeddedIPv4(addr); ok {
		return Forbidden(v4)
	}
	return false
}

// EmbeddedIPv4 returns the IPv4 address that the IPv6 address a stands
// for: an IPv4-mapped address (::ffff:0:0/96), one under the well-known
// NAT64 prefix (64:ff9b::/96, RFC 6052) or a 6to4 address (2002::/16,
// RFC 3056), which a NAT64 gateway or a 6to4 relay delivers to that IPv4
// address. ok is false for every other address, IPv4 ones included. A check
// that compares addresses against a list must judge this address too: the
// gateway's own address, loopback and 169.254.169.254 each have these forms.
func EmbeddedIPv4(a netip.Addr) (v4 netip.Addr, ok bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case a.Is4In6():
		return a.Unmap(), true
	case nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// InPrefixes reports whether addr is in any of ps (a mapped IPv4 address
// is not: unmap it first where that is meant).
func InPrefixes(ps []netip.Prefix, addr netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
