package policy

import "net/netip"

// forbiddenV4 are the IPv4 ranges a public name has no business resolving
// to: loopback, RFC 1918, CGNAT, link-local (cloud metadata lives at
// 169.254.169.254), multicast, reserved and "this network".
var forbiddenV4 = prefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)

// forbiddenV6 are the IPv6 equivalents, plus every form that smuggles an
// IPv4 address (mapped, compatible, local-use NAT64), which are refused
// whole; the well-known NAT64 and 6to4 prefixes are judged by the IPv4
// address they embed.
var forbiddenV6 = prefixes(
	"::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "fc00::/7",
	"fe80::/10", "fec0::/10", "ff00::/8",
)

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
		return InPrefixes(forbiddenV4, addr)
	}
	if InPrefixes(forbiddenV6, addr) {
		return true
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
