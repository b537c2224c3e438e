package firewall

import (
	"net/netip"
	"testing"

	"github.com/sluicegw/sluice/journal"
)

func ipv4Packet(proto byte, src, dst string, dport uint16) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	b[22], b[23] = byte(dport>>8), byte(dport)
	return b
}

func TestParsePacket(t *testing.T) {
	p, ok := ParsePacket(ipv4Packet(6, "198.18.0.2", "192.0.2.66", 4444))
	if !ok || p.Proto != "tcp" || p.Dst.String() != "192.0.2.66:4444" || p.Src.String() != "198.18.0.2" {
		t.Errorf("tcp: %+v %v", p, ok)
	}
	frag := ipv4Packet(17, "198.18.0.2", "192.0.2.66", 53)
	frag[6], frag[7] = 0, 10 // a later fragment: no ports in it
	if p, ok := ParsePacket(frag); !ok || p.Dst.Port() != 0 {
		t.Errorf("fragment: %+v %v, want no port", p, ok)
	}
	v6 := make([]byte, 44)
	v6[0], v6[6] = 0x60, 58
	if p, ok := ParsePacket(v6); !ok || p.Proto != "icmpv6" {
		t.Errorf("icmpv6: %+v %v", p, ok)
	}
	for _, b := range [][]byte{nil, {0x45}, {0x4f, 0}, {0x60, 0, 0}} {
		if _, ok := ParsePacket(b); ok {
			t.Errorf("ParsePacket(%x) accepted a truncated packet", b)
		}
	}
}

// FuzzParsePacket: logged packets are the agent's bytes.
func FuzzParsePacket(f *testing.F) {
	f.Add(ipv4Packet(6, "198.18.0.2", "192.0.2.66", 443))
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := ParsePacket(b)
		if ok && !p.Dst.Addr().IsValid() {
			t.Fatalf("accepted %x without a destination", b)
		}
	})
}

// TestReadPrefix: the reader tells a refusal from a packet report mode
// let through by the ruleset's log prefix, and a prefix not of ours
// from both.
func TestReadPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		kind   journal.Kind
		reason journal.Reason
		detail string
	}{
		{"sluice no_set_entry", journal.Refused, journal.ReasonNoSetEntry, ""},
		{"sluice quic\x00\x00", journal.Refused, journal.ReasonQUIC, ""},
		{"sluice would_refuse no_set_entry", journal.WouldRefuse, journal.ReasonNoSetEntry, ""},
		{"sluice would_refuse dot\x00", journal.WouldRefuse, journal.ReasonDoT, ""},
		{"sluice would_refuse nonsense", journal.Refused, "", "log prefix nonsense"},
		{"sluice would_refuse ", journal.Refused, "", "log prefix "},
		{"someone else's", journal.Refused, "", "log prefix someone else's"},
	} {
		kind, reason, detail := readPrefix(tc.prefix)
		if kind != tc.kind || reason != tc.reason || detail != tc.detail {
			t.Errorf("readPrefix(%q) = %s %q %q, want %s %q %q", tc.prefix, kind, reason, detail, tc.kind, tc.reason, tc.detail)
		}
	}
}
