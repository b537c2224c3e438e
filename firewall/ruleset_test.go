package firewall

import (
	"context"
	"encoding/json"
	"net/netip"
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
	e, err := policy.ParseAllowFlag("198.51.100.0/24:22")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{
		NetNSFd: ns.Fd(), AgentIface: "sla0",
		AgentAddr4: netip.MustParseAddr("198.18.0.2"), AgentAddr6: netip.MustParseAddr("2001:db8:a::2"),
		DNSPort: 5353, LogGroup: 7, TLSProxyPort: 4443, HTTPProxyPort: 4080,
		TLSPorts: []uint16{443, 8443}, HTTPPorts: []uint16{80}, Prefixes: []*policy.Entry{&e}, RefreshByDelete: refreshByDelete,
	})
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

func TestInstallRuleset(t *testing.T) {
	_, ns := newManager(t, false)
	out := ns.Run(t, "nft", "list", "table", "inet", "sluice")
	for _, want := range []string{
		`iifname "sla0" udp dport 53 redirect to :5353`,
		`iifname "sla0" tcp dport 53 redirect to :5353`,
		`iifname "sla0" tcp dport 443 fib daddr type != local redirect to :4443`,
		`iifname "sla0" tcp dport 8443 fib daddr type != local redirect to :4443`,
		`iifname "sla0" tcp dport 80 fib daddr type != local redirect to :4080`,
		`tcp dport 4443 ct status dnat accept`,
		`ip saddr != 198.18.0.2`,
		`ip6 saddr != 2001:db8:a::2 ip6 saddr != fe80::/10`,
		`udp dport 443 limit rate 50/second burst 100 packets log prefix "sluice quic" group 7`,
		`udp dport 443 reject with icmpx admin-prohibited`,
		`tcp dport 853 reject with tcp reset`,
		`!= @alive reject with icmpx admin-prohibited`,
		`ip daddr . tcp dport @allow4 accept`,
		`ip6 daddr . tcp dport @allow6 accept`,
		`ip daddr 198.51.100.0/24 tcp dport 22 accept`,
		`log prefix "sluice no_set_entry" group 7`,
		`log prefix "sluice gateway_port" group 7`,
		`meta l4proto tcp reject with tcp reset`,
		`iifname "sla0" oifname != "sla0" masquerade`,
		`oifname "sla0" drop`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, out)
		}
	}
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
