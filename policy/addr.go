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
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		return Forbidden(netip.AddrFrom4([4]byte(b[12:16])))
	case sixTo4.Contains(addr):
		return Forbidden(netip.AddrFrom4([4]byte(b[2:6])))
	}
	return false
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
