package firewall

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/netlink")

// goldenManager is a Manager whose netlink messages go to a recorder
// instead of a kernel, so these tests need no root. refresh is set
// explicitly: New would choose it from the running kernel's version.
func goldenManager(t *testing.T, cfg Config, refresh bool) (*Manager, *nlRecorder) {
	t.Helper()
	rec := &nlRecorder{}
	cfg.NetNSFd = -1
	cfg.connOpts = []nftables.ConnOption{nftables.WithTestDial(rec.dial)}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.refresh = refresh
	m.forgetFn = func(int, func(flow) bool) (int, error) { return 0, nil }
	t.Cleanup(func() { m.Close() })
	return m, rec
}

// fullConfig is the configuration of the root tests too: IPv6, both
// proxies, a policy prefix.
func fullConfig(t testing.TB) Config {
	e, err := policy.ParseAllowFlag("198.51.100.0/24:22")
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		AgentIface: "sla0",
		AgentAddr4: netip.MustParseAddr("198.18.0.2"), AgentAddr6: netip.MustParseAddr("2001:db8:a::2"),
		DNSPort: 5353, LogGroup: 7, TLSProxyPort: 4443, HTTPProxyPort: 4080,
		TLSPorts: []uint16{443, 8443}, HTTPPorts: []uint16{80}, Prefixes: []*policy.Entry{&e},
	}
}

// v4Config has no IPv6, no proxy, no prefix, and
// values other than the defaults.
func v4Config() Config {
	return Config{
		Table: "sluice_b", AgentIface: "slb0", AgentAddr4: netip.MustParseAddr("198.18.1.2"),
		DNSPort: 53, LogGroup: 9,
		Heartbeat: 5 * time.Second, SetSize: 1024,
	}
}

// routerConfig is router mode: the agent is every client on a bridge's
// networks, not one address.
func routerConfig() Config {
	return Config{
		Table: "sluice-lab", AgentIface: "br-lab",
		AgentNet4: netip.MustParsePrefix("198.18.5.0/24"), AgentNet6: netip.MustParsePrefix("2001:db8:5::/64"),
		DNSPort: 5353, LogGroup: 11, TLSProxyPort: 4443, HTTPProxyPort: 4080,
		TLSPorts: []uint16{443}, HTTPPorts: []uint16{80},
	}
}

// reportConfig is fullConfig in report mode.
func reportConfig(t testing.TB) Config {
	cfg := fullConfig(t)
	cfg.Report = true
	return cfg
}

// goldenLog collects the decoded messages of each step under a heading.
type goldenLog struct {
	t   *testing.T
	rec *nlRecorder
	dec *nlDecoder
	b   strings.Builder
}

func (g *goldenLog) step(title string, err error) {
	g.t.Helper()
	if err != nil {
		g.t.Fatalf("%s: %v", title, err)
	}
	fmt.Fprintf(&g.b, "# %s\n", title)
	for _, l := range g.dec.lines(g.rec.take()) {
		g.b.WriteString(l + "\n")
	}
	g.b.WriteString("\n")
}

// TestNetlinkGolden compares the netlink messages of Install, Allow (a new
// element, a known one, a refresh), Heartbeat and Remove with the files in
// testdata/netlink. Run with -update to rewrite them after a deliberate
// change, and review the diff: the order of the rules is the order of the
// newrule lines of each chain.
func TestNetlinkGolden(t *testing.T) {
	ctx := context.Background()
	a1, a2, a6 := netip.MustParseAddr("198.18.2.10"), netip.MustParseAddr("198.18.2.11"), netip.MustParseAddr("2001:db8:2::10")
	sets := func(g *goldenLog, m *Manager) {
		g.step("allow 198.18.2.10 2001:db8:2::10 ports 80 443 for 10s: all new",
			m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{80, 443}, 10*time.Second))
		g.step("allow 198.18.2.10 port 443 for 5s: known to outlive it, nothing sent",
			m.Allow(ctx, []netip.Addr{a1}, []uint16{443}, 5*time.Second))
		g.step("allow 198.18.2.10 198.18.2.11 port 443 for 100s: a refresh and a new element",
			m.Allow(ctx, []netip.Addr{a1, a2}, []uint16{443}, 100*time.Second))
		g.step("allow ::ffff:198.18.2.11 port 443 for 50s: the same element, known; nothing sent",
			m.Allow(ctx, []netip.Addr{netip.AddrFrom16(a2.As16())}, []uint16{443}, 50*time.Second))
		g.step("heartbeat", m.Heartbeat())
		g.step("remove", m.Remove())
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		refresh bool
		run     func(g *goldenLog, m *Manager)
	}{
		{"install", fullConfig(t), false, func(*goldenLog, *Manager) {}},
		{"install-v4", v4Config(), false, func(g *goldenLog, m *Manager) {
			g.step("allow 198.18.2.10 2001:db8:2::10 port 443 for 10s: no IPv6, one element",
				m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{443}, 10*time.Second))
		}},
		{"install-router", routerConfig(), false, func(g *goldenLog, m *Manager) {
			g.step("allow 198.18.2.10 2001:db8:2::10 port 443 for 10s: both families",
				m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{443}, 10*time.Second))
		}},
		{"sets-readd", fullConfig(t), false, sets},
		{"revoke", fullConfig(t), false, func(g *goldenLog, m *Manager) {
			g.step("allow 198.18.2.10 2001:db8:2::10 ports 80 443 for 10s",
				m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{80, 443}, 10*time.Second))
			n, err := m.Revoke(func(_ netip.Addr, port uint16) bool { return port == 80 })
			g.step(fmt.Sprintf("revoke port 443: %d elements out of the allow sets, into the revoked sets", n), err)
			n, err = m.Revoke(func(netip.Addr, uint16) bool { return true })
			g.step(fmt.Sprintf("revoke nothing: %d, nothing sent", n), err)
			g.step("allow 198.18.2.10 port 443 for 10s again: out of the revoked set in the same batch",
				m.Allow(ctx, []netip.Addr{a1}, []uint16{443}, 10*time.Second))
			e, err := policy.ParseAllowFlag("203.0.113.0/24:22")
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Reconfigure([]*policy.Entry{&e}, []uint16{443}, []uint16{80})
			g.step("reconfigure: 198.51.100.0/24:22 gone, 203.0.113.0/24:22 new, TLS on 443 only", err)
		}},
		{"sets-delete-add", fullConfig(t), true, sets},
		{"install-report", reportConfig(t), false, func(g *goldenLog, m *Manager) {
			g.step("allow 198.18.2.10 2001:db8:2::10 ports 80 443 for 10s",
				m.Allow(ctx, []netip.Addr{a1, a6}, []uint16{80, 443}, 10*time.Second))
			m.forgetFn = func(int, func(flow) bool) (int, error) {
				t.Error("report mode deleted tracked flows: a policy change cuts no flow there")
				return 0, nil
			}
			n, err := m.Revoke(func(_ netip.Addr, port uint16) bool { return port == 80 })
			g.step(fmt.Sprintf("revoke port 443: %d elements out of the allow sets, none into the revoked sets", n), err)
			if err := m.ForgetPrefixFlows(m.cfg.Prefixes, nil); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, rec := goldenManager(t, tc.cfg, tc.refresh)
			g := &goldenLog{t: t, rec: rec, dec: newDecoder(t)}
			err := m.Install()
			if strings.HasPrefix(tc.name, "install") {
				g.step("install", err)
			} else {
				// The sets' IDs are learnt from Install's messages.
				g.dec.lines(rec.take())
			}
			tc.run(g, m)
			compareGolden(t, filepath.Join("testdata", "netlink", tc.name+".txt"), g.b.String())
		})
	}
}

// TestAllowChunks checks that a large answer is split into batches the
// kernel accepts, each a transaction of its own.
func TestAllowChunks(t *testing.T) {
	m, rec := goldenManager(t, fullConfig(t), false)
	if err := m.Install(); err != nil {
		t.Fatal(err)
	}
	rec.take()
	var addrs []netip.Addr
	a := netip.MustParseAddr("198.19.0.0")
	for range maxBatch + 1 {
		a = a.Next()
		addrs = append(addrs, a)
	}
	if err := m.Allow(context.Background(), addrs, []uint16{443}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var got []int // elements per batch
	for _, msg := range rec.take() {
		switch int(msg.Header.Type) {
		case unix.NFNL_MSG_BATCH_BEGIN:
			got = append(got, 0)
		case unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM:
			got[len(got)-1] += countElems(t, msg)
		}
	}
	if want := []int{maxBatch, 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("elements per batch %v, want %v", got, want)
	}
}

func countElems(t *testing.T, msg netlink.Message) int {
	attrs, err := netlink.UnmarshalAttributes(msg.Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		if a.Type&nlaTypeMask == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			els, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				t.Fatal(err)
			}
			return len(els)
		}
	}
	return 0
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (- want, + got; rerun with -update if the change is intended):\n%s",
			path, lineDiff(strings.Split(string(want), "\n"), strings.Split(got, "\n")))
	}
}

// lineDiff shows the lines only in a with "-", only in b with "+", along a
// longest common subsequence; unchanged lines are left out.
func lineDiff(a, b []string) string {
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&out, "+%d: %s\n", j+1, b[j])
			j++
		default:
			fmt.Fprintf(&out, "-%d: %s\n", i+1, a[i])
			i++
		}
	}
	return out.String()
}

// TestReconfigureForgetsRemovedCidrFlows: after a change of cidr
// entries, the agent's tracked TCP flows to what was allowed and is no
// longer are deleted, and no others (a wider or an unchanged entry keeps
// its flows; other agents' flows and UDP are not the firewall's to cut).
func TestReconfigureForgetsRemovedCidrFlows(t *testing.T) {
	m, _ := goldenManager(t, fullConfig(t), false)
	if err := m.Install(); err != nil {
		t.Fatal(err)
	}
	var match func(flow) bool
	m.forgetFn = func(_ int, f func(flow) bool) (int, error) { match = f; return 0, nil }
	wider, err := policy.ParseAllowFlag("198.51.0.0/16:22")
	if err != nil {
		t.Fatal(err)
	}
	narrower, err := policy.ParseAllowFlag("198.51.100.0/25:22")
	if err != nil {
		t.Fatal(err)
	}
	agent, other := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.9")
	tcp := func(src string, dst string, port uint16) flow {
		return flow{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: unix.IPPROTO_TCP, dport: port}
	}
	for _, tc := range []struct {
		name string
		now  []*policy.Entry
		f    flow
		want bool
	}{
		{"removed", nil, tcp(agent.String(), "198.51.100.7", 22), true},
		{"removed, other port", nil, tcp(agent.String(), "198.51.100.7", 80), false},
		{"removed, another agent", nil, tcp(other.String(), "198.51.100.7", 22), false},
		{"removed, UDP", nil, flow{src: agent, dst: netip.MustParseAddr("198.51.100.7"), proto: unix.IPPROTO_UDP, dport: 22}, false},
		{"widened", []*policy.Entry{&wider}, tcp(agent.String(), "198.51.100.7", 22), false},
		{"narrowed, still in", []*policy.Entry{&narrower}, tcp(agent.String(), "198.51.100.7", 22), false},
		{"narrowed, left out", []*policy.Entry{&narrower}, tcp(agent.String(), "198.51.100.200", 22), true},
	} {
		match = nil
		m.cfg.Prefixes = fullConfig(t).Prefixes
		old, err := m.Reconfigure(tc.now, []uint16{443}, []uint16{80})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.ForgetPrefixFlows(old, tc.now); err != nil {
			t.Fatal(err)
		}
		if match == nil {
			t.Fatalf("%s: no flow was looked at", tc.name)
		}
		if got := match(tc.f); got != tc.want {
			t.Errorf("%s: forget %+v = %v, want %v", tc.name, tc.f, got, tc.want)
		}
	}
}

// TestGuardGolden compares the guard's netlink messages with
// testdata/netlink/guard.txt: the table replaced in one batch, the
// agents' links exempt, a drop per family switched on; and the table
// only deleted once nothing is switched on.
func TestGuardGolden(t *testing.T) {
	rec := &nlRecorder{}
	conn := func() *nftables.Conn {
		c, err := nftables.New(nftables.WithTestDial(rec.dial))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g := &goldenLog{t: t, rec: rec, dec: newDecoder(t)}
	g.step("two agents, both families", setGuard(conn(), ForwardingPlan{Enable4: true, Enable6: true}, []string{"sla0", "slb0"}))
	g.step("one agent, IPv4 only", setGuard(conn(), ForwardingPlan{Enable4: true}, []string{"slb0"}))
	g.step("nothing switched on: the table goes", setGuard(conn(), ForwardingPlan{}, nil))
	if err := setGuard(conn(), ForwardingPlan{Enable4: true}, []string{"a-name-far-too-long"}); err == nil {
		t.Error("an interface name longer than the kernel's was accepted")
	}
	rec.take()
	compareGolden(t, filepath.Join("testdata", "netlink", "guard.txt"), g.b.String())
}
