package firewall

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/testing/nstest"
)

func newManager(t *testing.T, refreshByDelete bool) (*Manager, *nstest.NS) {
	return newManagerTB(t, refreshByDelete)
}

func newManagerB(b *testing.B) (*Manager, *nstest.NS) { return newManagerTB(b, false) }

func newManagerTB(t testing.TB, refreshByDelete bool) (*Manager, *nstest.NS) {
	t.Helper()
	ns := nstest.New(t, nstest.Prefix()+"-gw")
	cfg := fullConfig(t)
	cfg.NetNSFd, cfg.RefreshByDelete = ns.Fd(), refreshByDelete
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Install(); err != nil {
		t.Fatal(err)
	}
	return m, ns
}

type setElems struct {
	Nftables []struct {
		Set *struct {
			Name string `json:"name"`
			Elem []struct {
				Elem struct {
					Val     json.RawMessage `json:"val"`
					Timeout int             `json:"timeout"`
					Expires int             `json:"expires"`
				} `json:"elem"`
			} `json:"elem"`
		} `json:"set"`
	} `json:"nftables"`
}

// listSet returns "val timeout" for each element of a set, read back with
// the nft tool (a second implementation, not our own netlink code).
func listSet(t *testing.T, ns *nstest.NS, set string) map[string][2]int {
	t.Helper()
	out := ns.Run(t, "nft", "-j", "list", "set", "inet", "sluice", set)
	var doc setElems
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("parse nft json: %v\n%s", err, out)
	}
	got := map[string][2]int{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			var concat struct {
				Concat []any `json:"concat"`
			}
			_ = json.Unmarshal(e.Elem.Val, &concat)
			var parts []string
			for _, p := range concat.Concat {
				parts = append(parts, strings.TrimSuffix(strings.TrimSuffix(jsonString(p), ".0"), ""))
			}
			got[strings.Join(parts, " . ")] = [2]int{e.Elem.Timeout, e.Elem.Expires}
		}
	}
	return got
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

// TestInstallRuleset reads the installed table back with the nft tool and
// checks every chain rule by rule, in order: a packet meets the rules of a
// chain in this order, and the chains of one hook in the order of their
// priorities (the spoof filter at mangle before the redirects at dstnat).
// A signature is the rule as nft prints it; " … " stands for text in
// between that nft versions print differently (the dead-man switch's
// constant key has no type nft knows).
func TestInstallRuleset(t *testing.T) {
	_, ns := newManager(t, false)
	out := ns.Run(t, "nft", "list", "table", "inet", "sluice")
	const (
		spoof4 = `iifname "sla0" ip saddr != 198.18.0.2 `
		spoof6 = `iifname "sla0" ip6 saddr != 2001:db8:a::2 ip6 saddr != fe80::/10 `
		limit  = `limit rate 50/second burst 100 packets `
		admin  = `reject with icmpx admin-prohibited`
		tcpRST = `meta l4proto tcp reject with tcp reset`
		// TCP from a link-local source: refused with ICMPv6, not a reset.
		linkLocal = `meta l4proto tcp ip6 saddr fe80::/10 `
	)
	want := map[string][]string{
		"prerouting_filter": {
			`type filter hook prerouting priority mangle; policy accept;`,
			`iifname "sla0" ip6 saddr :: counter packets 0 bytes 0 drop`,
			spoof4 + limit + `log prefix "sluice spoofed_source" group 7`,
			spoof4 + `drop`,
			spoof6 + limit + `log prefix "sluice spoofed_source" group 7`,
			spoof6 + `drop`,
		},
		"prerouting": {
			`type nat hook prerouting priority dstnat; policy accept;`,
			`iifname "sla0" udp dport 53 redirect to :5353`,
			`iifname "sla0" tcp dport 53 redirect to :5353`,
			`iifname "sla0" tcp dport 443 fib daddr type != local redirect to :4443`,
			`iifname "sla0" tcp dport 8443 fib daddr type != local redirect to :4443`,
			`iifname "sla0" tcp dport 80 fib daddr type != local redirect to :4080`,
		},
		"input": {
			`type filter hook input priority filter; policy accept;`,
			`iifname "sla0" jump agent_in`,
		},
		"agent_in": {
			`ct state established,related accept`,
			`icmpv6 type nd-neighbor-solicit accept`,
			`icmpv6 type nd-neighbor-advert accept`,
			`meta pkttype multicast drop`,
			`meta pkttype broadcast drop`,
			`… != @alive jump agent_dead`,
			`udp dport 5353 ct status dnat accept`,
			`tcp dport 5353 ct status dnat accept`,
			`tcp dport 4443 ct status dnat accept`,
			`tcp dport 4080 ct status dnat accept`,
			linkLocal + limit + `log prefix "sluice gateway_port" group 7`,
			linkLocal + admin,
			`meta l4proto tcp ` + limit + `log prefix "sluice gateway_port" group 7`,
			tcpRST,
			limit + `log prefix "sluice gateway_port" group 7`,
			admin,
		},
		"forward": {
			`type filter hook forward priority filter; policy accept;`,
			`iifname "sla0" jump agent_fwd`,
			`oifname "sla0" ip saddr . tcp sport @revoked4 drop`,
			`oifname "sla0" ip6 saddr . tcp sport @revoked6 drop`,
			`oifname "sla0" ct state established,related accept`,
			`oifname "sla0" drop`,
		},
		"agent_fwd": {
			`ct state invalid drop`,
			`ip daddr . tcp dport @revoked4 ` + limit + `log prefix "sluice revoked" group 7`,
			`ip daddr . tcp dport @revoked4 reject with tcp reset`,
			`ip6 daddr . tcp dport @revoked6 ` + limit + `log prefix "sluice revoked" group 7`,
			`ip6 daddr . tcp dport @revoked6 reject with tcp reset`,
			`ct state established,related accept`,
			`meta l4proto tcp … != @alive ` + limit + `log prefix "sluice gateway_not_alive" group 7`,
			`meta l4proto tcp … != @alive reject with tcp reset`,
			`0x1 … != @alive ` + limit + `log prefix "sluice gateway_not_alive" group 7`,
			`0x1 … != @alive ` + admin,
			`udp dport 443 ` + limit + `log prefix "sluice quic" group 7`,
			`udp dport 443 ` + admin,
			`tcp dport 853 ` + limit + `log prefix "sluice dot" group 7`,
			`tcp dport 853 reject with tcp reset`,
			`udp dport 853 ` + limit + `log prefix "sluice dot" group 7`,
			`udp dport 853 ` + admin,
			`ip daddr . tcp dport @allow4 accept`,
			`ip6 daddr . tcp dport @allow6 accept`,
			`ip daddr 198.51.100.0/24 tcp dport 22 accept`,
			`meta l4proto tcp ` + limit + `log prefix "sluice no_set_entry" group 7`,
			tcpRST,
			limit + `log prefix "sluice no_set_entry" group 7`,
			admin,
		},
		"agent_dead": {
			// A reset to a link-local source would leave by the wrong link.
			linkLocal + limit + `log prefix "sluice gateway_not_alive" group 7`,
			linkLocal + admin,
			`meta l4proto tcp ` + limit + `log prefix "sluice gateway_not_alive" group 7`,
			`meta l4proto tcp reject with tcp reset`,
			`meta l4proto udp ` + limit + `log prefix "sluice gateway_not_alive" group 7`,
			`meta l4proto udp reject`, // icmpx port-unreachable, the default
		},
		"output_nat": {
			`type nat hook output priority -100; policy accept;`,
			`oifname "sla0" drop`,
		},
		"postrouting": {
			`type nat hook postrouting priority srcnat; policy accept;`,
			`iifname "sla0" oifname != "sla0" masquerade`,
		},
	}
	got := chainLines(out)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		sigs := want[name]
		lines, ok := got[name]
		if !ok {
			t.Errorf("chain %s missing:\n%s", name, out)
			continue
		}
		for i := range max(len(lines), len(sigs)) {
			switch {
			case i >= len(lines):
				t.Errorf("chain %s: rule %d missing, want %q", name, i, sigs[i])
			case i >= len(sigs):
				t.Errorf("chain %s: rule %d %q not expected", name, i, lines[i])
			case !matchSignature(lines[i], sigs[i]):
				t.Errorf("chain %s: rule %d is %q, want %q", name, i, lines[i], sigs[i])
			}
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("chain %s not expected:\n%s", name, out)
		}
	}
}

// chainLines returns the lines of each chain of `nft list table` output,
// in order: the base chain's type line first, then one line per rule.
func chainLines(out string) map[string][]string {
	chains := map[string][]string{}
	var cur string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "chain ") && strings.HasSuffix(l, " {"):
			cur = strings.TrimSuffix(strings.TrimPrefix(l, "chain "), " {")
			chains[cur] = nil
		case l == "}":
			cur = ""
		case cur != "" && l != "":
			chains[cur] = append(chains[cur], l)
		}
	}
	return chains
}

// matchSignature reports whether line is sig, where each " … " in sig
// stands for any text.
func matchSignature(line, sig string) bool {
	parts := strings.Split(sig, "…")
	if len(parts) == 1 {
		return line == sig
	}
	if !strings.HasPrefix(line, parts[0]) || !strings.HasSuffix(line, parts[len(parts)-1]) {
		return false
	}
	rest := line[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return len(rest) >= len(parts[len(parts)-1])
}

func TestAllowAndRefresh(t *testing.T) {
	for _, byDelete := range []bool{false, true} {
		name := "readd"
		if byDelete {
			name = "delete-add"
		}
		t.Run(name, func(t *testing.T) {
			m, ns := newManager(t, byDelete)
			ctx := context.Background()
			addrs := []netip.Addr{netip.MustParseAddr("198.18.2.10"), netip.MustParseAddr("2001:db8:2::10")}
			if err := m.Allow(ctx, addrs, []uint16{80, 443}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			v4 := listSet(t, ns, "allow4")
			if len(v4) != 2 || v4["198.18.2.10 . 443"][0] != 10 {
				t.Fatalf("allow4 = %v, want two elements with timeout 10", v4)
			}
			if v6 := listSet(t, ns, "allow6"); len(v6) != 2 {
				t.Fatalf("allow6 = %v", v6)
			}
			// Known elements that outlive the need cost nothing; a longer need refreshes.
			if err := m.Allow(ctx, addrs[:1], []uint16{443}, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := m.Allow(ctx, addrs[:1], []uint16{443}, 100*time.Second); err != nil {
				t.Fatal(err)
			}
			got := listSet(t, ns, "allow4")["198.18.2.10 . 443"]
			if got[0] != 100 || got[1] < 90 {
				t.Errorf("refreshed element: timeout %ds expires %ds, want 100 and > 90", got[0], got[1])
			}
			if err := m.Heartbeat(); err != nil {
				t.Fatal(err)
			}
			if err := m.Remove(); err != nil {
				t.Fatal(err)
			}
			if out := ns.Run(t, "nft", "list", "tables"); strings.Contains(out, "sluice") {
				t.Errorf("table left after Remove: %s", out)
			}
		})
	}
}

func TestAllowManyInBatches(t *testing.T) {
	m, ns := newManager(t, false)
	var addrs []netip.Addr
	base := netip.MustParseAddr("198.19.0.0")
	for range 3000 {
		base = base.Next()
		addrs = append(addrs, base)
	}
	if err := m.Allow(context.Background(), addrs, []uint16{80, 443}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := len(listSet(t, ns, "allow4")); got != 6000 {
		t.Errorf("%d elements, want 6000", got)
	}
}

// TestRevokeInTheKernel: Revoke moves exactly the refused elements from
// the allow sets to the revoked sets, an answer that allows one again
// takes it out of the revoked set, and Reconfigure replaces the rules
// while the sets keep their elements.
func TestRevokeInTheKernel(t *testing.T) {
	m, ns := newManager(t, false)
	ctx := context.Background()
	a1, a6 := netip.MustParseAddr("198.18.2.10"), netip.MustParseAddr("2001:db8:2::10")
	if err := m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{80, 443}, time.Minute); err != nil {
		t.Fatal(err)
	}
	n, err := m.Revoke(func(_ netip.Addr, port uint16) bool { return port == 80 })
	if err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v; want 2 elements", n, err)
	}
	if got := listSet(t, ns, "allow4"); len(got) != 1 || got["198.18.2.10 . 80"][0] == 0 {
		t.Errorf("allow4 after revoking 443: %v, want only port 80", got)
	}
	if got := listSet(t, ns, "revoked4"); len(got) != 1 || got["198.18.2.10 . 443"][0] == 0 {
		t.Errorf("revoked4: %v, want 198.18.2.10 . 443", got)
	}
	if got := listSet(t, ns, "revoked6"); len(got) != 1 {
		t.Errorf("revoked6: %v, want one element", got)
	}
	if err := m.Allow(ctx, []netip.Addr{a1}, []uint16{443}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := listSet(t, ns, "revoked4"); len(got) != 0 {
		t.Errorf("revoked4 after allowing 443 again: %v, want empty", got)
	}
	if got := listSet(t, ns, "allow4"); len(got) != 2 {
		t.Errorf("allow4 after allowing 443 again: %v, want two elements", got)
	}
	e, err := policy.ParseAllowFlag("203.0.113.0/24:22")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reconfigure([]*policy.Entry{&e}, []uint16{443}, []uint16{80}); err != nil {
		t.Fatal(err)
	}
	rules := ns.Run(t, "nft", "list", "chain", "inet", "sluice", "agent_fwd")
	if !strings.Contains(rules, "ip daddr 203.0.113.0/24 tcp dport 22 accept") || strings.Contains(rules, "198.51.100.0/24") {
		t.Errorf("agent_fwd after Reconfigure: want 203.0.113.0/24 accepted and 198.51.100.0/24 gone:\n%s", rules)
	}
	if got := listSet(t, ns, "allow4"); len(got) != 2 {
		t.Errorf("allow4 after Reconfigure: %v, want its two elements kept", got)
	}
}
