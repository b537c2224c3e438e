package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/testing/nstest"
)

// TestAgentsSideBySide: two sluice runs share one gateway namespace, each
// with its own policy, table and sets. Neither sees the other's hosts;
// forwarding, which the first switched on, stays on behind the shared
// guard until the last one goes (the second keeps working after the
// first left), and the guard keeps forwarding between the gateway's other
// interfaces closed all along. After both, nothing is left.
func TestAgentsSideBySide(t *testing.T) {
	w := newWorld(t)
	// A LAN on a second interface of the gateway, with a route to the fake
	// internet through it: the path the guard must keep closed.
	lan := nstest.New(t, nstest.Prefix()+"-lan")
	nstest.Link(t, w.gw, "g2", lan, "l0")
	w.gw.Run(t, "ip", "addr", "add", "198.18.3.1/24", "dev", "g2")
	lan.Run(t, "ip", "addr", "add", "198.18.3.2/24", "dev", "l0")
	lan.Run(t, "ip", "route", "add", "default", "via", "198.18.3.1")
	w.inet.Run(t, "ip", "route", "add", "198.18.3.0/24", "via", "198.18.1.1")
	w.inet.Run(t, "ip", "-6", "route", "add", "2001:db8:b::/64", "via", "2001:db8:1::1")
	lanProbe := func() bool {
		return lan.Cmd("nc", "-z", "-w", "2", allowedAddr, "443").Run() == nil
	}
	// Positive control: with forwarding on and no guard, the LAN gets out.
	w.gw.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	control := lanProbe()
	w.gw.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	if !control {
		t.Fatal("the LAN cannot reach the fake internet even unguarded; the test tests nothing")
	}

	dir := t.TempDir()
	c := w.curl()
	readyA, readyB := filepath.Join(dir, "ready-a"), filepath.Join(dir, "ready-b")
	releaseA, waitReleaseA := fileFlag(dir, "release-a")
	releaseB, waitReleaseB := fileFlag(dir, "release-b")
	// fwd tries a forwarded (not proxied) connection and prints how long
	// it took: a refusal's reset comes at once, a drop takes the whole -w.
	fwd := func(name string) string {
		return "s=$(date +%s%N); try " + name + " nc -z -w 3 " + allowedAddr + " 9443; echo " + name + "_ms=$(( ($(date +%s%N) - s) / 1000000 ))\n"
	}
	a := startAgent(t, w, []string{"--name", "alpha", "--policy", policyFile(t, "  - host: allowed.test\n    ports: [443, 9443]\n")},
		prelude+"try a_tls "+c+" https://allowed.test/\n"+fwd("a_fwd")+
			"try a_other "+c+" https://www.allowed.test/\n"+
			"touch "+readyA+"\n"+waitReleaseA+
			"try a_after "+c+" https://allowed.test/\n")
	waitFor(t, func() bool { return fileExists(readyA) })
	b := startAgent(t, w, []string{"--name", "beta", "--allow", "www.allowed.test:443",
		"--agent-net", "198.18.0.4/30", "--agent-net6", "2001:db8:b::/64"},
		prelude+"try b_tls "+c+" https://www.allowed.test/\n"+fwd("b_fwd")+
			"try b_other "+c+" https://allowed.test/\n"+
			"touch "+readyB+"\n"+waitReleaseB+
			"try b_after "+c+" https://www.allowed.test/\n")
	waitFor(t, func() bool { return fileExists(readyB) })

	tables := func() string { return w.gw.Run(t, "nft", "list", "tables") }
	guarded := func() string { return w.gw.Run(t, "nft", "list", "set", "inet", firewall.GuardTable, "agents") }
	forwarding := func() string { return strings.TrimSpace(w.gw.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")) }
	for _, table := range []string{"alpha", "beta"} {
		if !strings.Contains(tables(), "inet "+gateway.TablePrefix+table+"\n") {
			t.Errorf("no table of agent %s: %s", table, tables())
		}
	}
	if n := strings.Count(guarded(), `"sl`); n != 2 || forwarding() != "1" {
		t.Errorf("both agents running: %d links exempt from the guard, ip_forward=%s:\n%s", n, forwarding(), guarded())
	}
	if lanProbe() {
		t.Error("with both agents running, the LAN got out through the gateway")
	}

	touch(t, releaseA)
	ra := a.wait(t)
	if !strings.Contains(tables(), gateway.TablePrefix+"beta") || strings.Contains(tables(), gateway.TablePrefix+"alpha") {
		t.Errorf("after the first agent left, tables: %s", tables())
	}
	if n := strings.Count(guarded(), `"sl`); n != 1 || forwarding() != "1" {
		t.Errorf("after the first agent left: %d links exempt from the guard, ip_forward=%s:\n%s", n, forwarding(), guarded())
	}
	if lanProbe() {
		t.Error("after the first agent left, the LAN got out through the gateway")
	}
	touch(t, releaseB)
	rb := b.wait(t)

	expect(t, ra, map[string]string{"a_tls": ok, "a_fwd": ok, "a_other": curlNoResolve, "a_after": ok})
	expect(t, rb, map[string]string{"b_tls": ok, "b_fwd": "1", "b_other": curlNoResolve, "b_after": ok})
	if ms := rb.values()["b_fwd_ms"]; len(ms) > 3 {
		t.Errorf("the second agent's forwarded connection to the first's destination took %s ms: a drop, not a refusal", ms)
	}
	w.assertClean(t)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestRecoveryBesideLiveAgent: after a kill -9 of one agent's sluice, the
// next start undoes what that run left (agent, link, table) but leaves
// the forwarding a live agent beside it still holds, and the live agent
// keeps working.
func TestRecoveryBesideLiveAgent(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	c := w.curl()
	readyLive, readyDead := filepath.Join(dir, "ready-live"), filepath.Join(dir, "ready-dead")
	release, waitRelease := fileFlag(dir, "release")
	live := startAgent(t, w, []string{"--name", "live", "--allow", "allowed.test", "--agent-net", "198.18.0.4/30", "--agent-net6", "2001:db8:b::/64"},
		prelude+"try before "+c+" https://allowed.test/\ntouch "+readyLive+"\n"+waitRelease+"try after "+c+" https://allowed.test/\n")
	waitFor(t, func() bool { return fileExists(readyLive) })
	dead := startAgent(t, w, nil, "touch "+readyDead+"\nsleep 120")
	waitFor(t, func() bool { return fileExists(readyDead) })
	dead.kill(t)

	next := startAgent(t, w, nil, "true")
	rn := next.wait(t)
	for _, want := range []string{"killed the agent sh", "removed table inet " + agentTable} {
		if !strings.Contains(rn.stderr, want) {
			t.Errorf("the next start did not report %q:\n%s", want, rn.stderr)
		}
	}
	if strings.Contains(rn.stderr, "restored net/ipv4/ip_forward") {
		t.Errorf("the next start restored forwarding a live agent holds:\n%s", rn.stderr)
	}
	tables := w.gw.Run(t, "nft", "list", "tables")
	if strings.Contains(tables, agentTable) || !strings.Contains(tables, gateway.TablePrefix+"live") || !strings.Contains(tables, firewall.GuardTable) {
		t.Errorf("tables after recovery beside a live agent: %s", tables)
	}
	touch(t, release)
	expect(t, live.wait(t), map[string]string{"before": ok, "after": ok})
	w.assertClean(t)
}
