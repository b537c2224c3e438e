package gateway

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/sandbox"
)

func slotString(s sandbox.Slot) string {
	return fmt.Sprintf("%s %s %s %d %v", s.Name, s.Table, s.Iface, s.LogGroup, s.Nets)
}

// TestChooseSlot: what the config leaves open comes from the pools,
// skipping what other agents hold and the gateway's own networks; what
// the config names is taken as named.
func TestChooseSlot(t *testing.T) {
	pfx := netip.MustParsePrefix
	first := sandbox.Holder{PID: 7, Slot: sandbox.Slot{Name: "a", Table: "sluice-a", Iface: "sl100", LogGroup: DefaultLogGroup,
		Nets: []netip.Prefix{pfx("198.19.255.252/30"), pfx("fd5c:1ce0:5c1c::/64")}}}
	for _, tc := range []struct {
		name string
		cfg  Config
		ipv6 bool
		nets []netip.Prefix
		held []sandbox.Holder
		want string
	}{
		{"first agent", Config{Name: "a"}, true, nil, nil,
			"a sluice-a sl100 9323 [198.19.255.252/30 fd5c:1ce0:5c1c::/64]"},
		{"no IPv6", Config{Name: "a"}, false, nil, nil,
			"a sluice-a sl100 9323 [198.19.255.252/30]"},
		{"beside another", Config{Name: "b"}, true, nil, []sandbox.Holder{first},
			"b sluice-b sl100-1 9324 [198.19.255.248/30 fd5c:1ce0:5c1c:1::/64]"},
		{"past the gateway's networks", Config{Name: "b"}, true, []netip.Prefix{pfx("198.19.255.0/29"), pfx("fd5c:1ce0:5c1c::/63")}, nil,
			"b sluice-b sl100 9323 [198.19.255.244/30 fd5c:1ce0:5c1c:2::/64]"},
		{"named", Config{Name: "c", Table: "t", LogGroup: 5, AgentNet: pfx("198.18.7.0/24"), AgentNet6: pfx("fd00:7::/64")}, true, nil, []sandbox.Holder{first},
			"c t sl100-1 5 [198.18.7.0/24 fd00:7::/64]"},
		{"IPv4 named, IPv6 from the pool", Config{Name: "c", AgentNet: pfx("198.18.7.0/24")}, true, nil, []sandbox.Holder{first},
			"c sluice-c sl100-1 9324 [198.18.7.0/24 fd5c:1ce0:5c1c:1::/64]"},
	} {
		c := slotChooser{cfg: &tc.cfg, ipv6: tc.ipv6, nets: tc.nets, pid: 100}
		s, err := c.choose(tc.held)
		if err != nil || slotString(s) != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.name, slotString(s), err, tc.want)
		}
	}
	// Refused: a named network on the gateway's own, and a full pool.
	c := slotChooser{cfg: &Config{Name: "d", AgentNet: pfx("198.18.1.0/30")}, nets: []netip.Prefix{pfx("198.18.1.0/24")}, pid: 1}
	if _, err := c.choose(nil); err == nil || !strings.Contains(err.Error(), "overlaps a network of this gateway") {
		t.Errorf("an agent network on the gateway's: %v", err)
	}
	c = slotChooser{cfg: &Config{Name: "d"}, nets: []netip.Prefix{pfx(AgentPool)}, pid: 1}
	if _, err := c.choose(nil); err == nil || !strings.Contains(err.Error(), "no free agent network") {
		t.Errorf("a full pool: %v", err)
	}
}

// TestPoolNets: the pool's slots are distinct /30s and /64s inside the
// pools, from the top of the IPv4 pool down.
func TestPoolNets(t *testing.T) {
	seen := map[netip.Prefix]bool{}
	for i := range agentPoolSlots {
		p4, p6 := poolNets(i)
		if !pfxIn(p4, AgentPool) || !pfxIn(p6, AgentPool6) || p4.Bits() != 30 || p6.Bits() != 64 || p4.Masked() != p4 {
			t.Fatalf("pool slot %d: %s %s", i, p4, p6)
		}
		if seen[p4] || seen[p6] {
			t.Fatalf("pool slot %d: %s %s given twice", i, p4, p6)
		}
		seen[p4], seen[p6] = true, true
	}
	if p4, _ := poolNets(0); p4 != netip.MustParsePrefix("198.19.255.252/30") {
		t.Errorf("first slot %s, want 198.19.255.252/30", p4)
	}
	if p4, _ := poolNets(agentPoolSlots - 1); p4 != netip.MustParsePrefix("198.19.240.0/30") {
		t.Errorf("last slot %s, want 198.19.240.0/30", p4)
	}
}

func pfxIn(p netip.Prefix, pool string) bool {
	return netip.MustParsePrefix(pool).Contains(p.Addr())
}
