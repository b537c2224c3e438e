package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestInterfaceAgent: router mode takes an existing interface as it is,
// its addresses the gateway's and its networks the agent's, and refuses
// one that is missing, down, loopback, without an IPv4 network with
// room for clients, with two networks of a family, or the uplink (the
// default route's); nothing it does, Close included, changes the
// interface, and the agent runs no command.
func TestInterfaceAgent(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-if")
	ns.Run(t, "ip", "link", "add", "br-t", "type", "bridge")
	ns.Run(t, "ip", "link", "set", "br-t", "up")
	ns.Run(t, "ip", "addr", "add", "198.18.5.1/24", "dev", "br-t")
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8:5::1/64", "dev", "br-t", "nodad")
	ns.Run(t, "ip", "link", "add", "br-down", "type", "bridge")
	ns.Run(t, "ip", "addr", "add", "198.18.6.1/24", "dev", "br-down")
	ns.Run(t, "ip", "link", "add", "br-none", "type", "bridge")
	ns.Run(t, "ip", "link", "set", "br-none", "up")
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8:7::1/64", "dev", "br-none", "nodad")
	ns.Run(t, "ip", "link", "add", "br-two", "type", "bridge")
	ns.Run(t, "ip", "link", "set", "br-two", "up")
	ns.Run(t, "ip", "addr", "add", "198.18.8.1/24", "dev", "br-two")
	ns.Run(t, "ip", "addr", "add", "198.18.9.1/24", "dev", "br-two")
	ns.Run(t, "ip", "link", "add", "br-host", "type", "bridge")
	ns.Run(t, "ip", "link", "set", "br-host", "up")
	ns.Run(t, "ip", "addr", "add", "198.18.10.1/32", "dev", "br-host")
	ns.Run(t, "ip", "link", "add", "up0", "type", "bridge")
	ns.Run(t, "ip", "link", "set", "up0", "up")
	ns.Run(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "up0")
	ns.Run(t, "ip", "route", "add", "default", "via", "198.18.1.2")
	before := ns.Run(t, "ip", "addr", "show", "br-t")

	err := ns.Do(func() error {
		a, err := InterfaceAgent("br-t", true)
		if err != nil {
			return err
		}
		if !a.Router || a.Iface != "br-t" || a.Fd != -1 || a.Namespace != "" ||
			a.Gateway != netip.MustParseAddr("198.18.5.1") || a.Net4 != netip.MustParsePrefix("198.18.5.0/24") ||
			a.Gateway6 != netip.MustParseAddr("2001:db8:5::1") || a.Net6 != netip.MustParsePrefix("2001:db8:5::/64") ||
			a.Addr.IsValid() || a.Addr6.IsValid() {
			t.Errorf("the agent of br-t: %+v", a)
		}
		if a6, err := InterfaceAgent("br-t", false); err != nil || a6.Net6.IsValid() || a6.Gateway6.IsValid() {
			t.Errorf("without IPv6: %+v, %v", a6, err)
		}
		if err := a.Connect(); err != nil {
			t.Errorf("connect: %v", err)
		}
		if _, err := a.Run(Launch{Args: []string{"true"}}, nil, func(int) {}); !errors.Is(err, ErrRouterMode) {
			t.Errorf("run a command in router mode: %v", err)
		}
		if n := a.Kill(); n != 0 {
			t.Errorf("kill signalled %d processes", n)
		}
		if err := a.RemoveName(); err != nil {
			t.Errorf("remove name: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		for name, want := range map[string]string{
			"br-nowhere": "there is no interface br-nowhere",
			"lo":         "loopback",
			"br-down":    "interface br-down is down",
			"br-none":    "interface br-none has no IPv4 address",
			"br-two":     "IPv4 addresses in 2 networks (198.18.8.0/24, 198.18.9.0/24)",
			"br-host":    "198.18.10.1/32 leaves no room for clients",
			"up0":        "carries this gateway's default route",
		} {
			if _, err := InterfaceAgent(name, true); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("InterfaceAgent(%s): %v; want %q", name, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := ns.Run(t, "ip", "addr", "show", "br-t"); after != before {
		t.Errorf("the interface changed:\n%s\nwas:\n%s", after, before)
	}
}

// TestRecoverKeepsRouterInterface: undoing a dead run in router mode
// never removes its interface (the user's); its hold on forwarding goes
// before its table does, so that no moment has the interface forwarded
// without the table; and cleanup's dry run says the interface stays. A
// live agent's interface is refused to another claim, naming it. When
// IPv6 forwarding goes on, the interface keeps its accept_ra (the
// clients' advertisements are not the gateway's to take), while another
// interface that accepted them is told to go on (2), and gets its value
// back at the end.
func TestRecoverKeepsRouterInterface(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-if")
	ns.Run(t, "ip", "link", "add", "br-k", "type", "bridge")
	ns.Run(t, "ip", "link", "add", "br-o", "type", "bridge")
	dir := t.TempDir()
	err := ns.Do(func() error {
		if err := writeSysctl(sysctlForward4, "0"); err != nil { // a new namespace takes the host's
			return err
		}
		for _, name := range []string{"br-k", "br-o"} {
			if err := writeSysctl("net/ipv6/conf/"+name+"/accept_ra", "1"); err != nil {
				return err
			}
		}
		acceptRA := func() string {
			k, _ := readSysctl("net/ipv6/conf/br-k/accept_ra")
			o, _ := readSysctl("net/ipv6/conf/br-o/accept_ra")
			return "br-k=" + k + " br-o=" + o
		}
		g := &guardLog{}
		var atRemoval []string // what the guard and forwarding were when the table went
		remove := func(name string) (bool, error) {
			v, _ := readSysctl(sysctlForward4)
			atRemoval = append(atRemoval, fmt.Sprintf("%s: ip_forward=%s guard %s", name, v, g.last()))
			return true, nil
		}
		router := Slot{Name: "lab", Table: "sluice-lab", Iface: "br-k", LogGroup: 100, Nets: []netip.Prefix{netip.MustParsePrefix("198.18.5.0/24")}}
		cfg := StateConfig{Dir: dir, SetGuard: g.set, RemoveTable: remove, Router: true, Choose: func([]Holder) (Slot, error) { return router, nil }}
		s, _, err := Claim(cfg)
		if err != nil {
			return err
		}
		if err := s.EnableForwarding(true); err != nil {
			return err
		}
		if g.last() != "v4=true v6=true [br-k]" {
			t.Errorf("guard while the router agent holds forwarding: %s", g.last())
		}
		if got := acceptRA(); got != "br-k=1 br-o=2" {
			t.Errorf("accept_ra with IPv6 forwarding on: %s, want br-k=1 br-o=2", got)
		}
		other := cfg
		other.Choose = func([]Holder) (Slot, error) { return Slot{Name: "other", Iface: "br-k"}, nil }
		if _, _, err := Claim(other); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), `link br-k is held by another sluice in this network namespace (agent "lab"`) {
			t.Errorf("a second claim of br-k: %v", err)
		}
		s.Start = "gone"
		if err := s.save(); err != nil {
			return err
		}
		runs, err := Runs(dir)
		if err != nil || len(runs) != 1 || !runs[0].Router {
			t.Errorf("runs: %+v, %v", runs, err)
		} else if left := runs[0].leftovers(true); !slices.Contains(left, "would keep interface br-k (router mode: the user's, never removed)") ||
			slices.ContainsFunc(left, func(l string) bool { return strings.HasPrefix(l, "would remove link") }) {
			t.Errorf("leftovers: %q", left)
		}
		undone, err := Recover(cfg)
		if err != nil {
			return err
		}
		if !slices.Contains(undone, "kept interface br-k (router mode: the user's, never removed)") ||
			slices.ContainsFunc(undone, func(u string) bool { return strings.HasPrefix(u, "removed link") }) {
			t.Errorf("recovery did %q", undone)
		}
		if got := acceptRA(); got != "br-k=1 br-o=1" {
			t.Errorf("accept_ra after recovery: %s, want both 1 again", got)
		}
		if want := []string{"sluice-lab: ip_forward=0 guard v4=false v6=false []"}; !slices.Equal(atRemoval, want) {
			t.Errorf("when the table went: %q, want %q", atRemoval, want)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "netns-*")); len(left) > 0 {
			t.Errorf("records left: %v", left)
		}
		if _, err := netlink.LinkByName("br-k"); err != nil {
			t.Errorf("the interface is gone: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReleaseForwardingFirst: an agent gives up its hold on forwarding
// alone (before its table goes), and the guard stops exempting its link
// while another agent still holds forwarding; a restore that fails
// leaves the guard exempting no link.
func TestReleaseForwardingFirst(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-if")
	dir := t.TempDir()
	err := ns.Do(func() error {
		if err := writeSysctl(sysctlForward4, "0"); err != nil {
			return err
		}
		g := &guardLog{}
		claim := func(s Slot) (*State, error) {
			st, _, err := Claim(StateConfig{Dir: dir, SetGuard: g.set, Choose: func([]Holder) (Slot, error) { return s, nil }})
			return st, err
		}
		a, err := claim(slot("a", 1))
		if err != nil {
			return err
		}
		b, err := claim(slot("b", 2))
		if err != nil {
			return err
		}
		for _, s := range []*State{a, b} {
			if err := s.EnableForwarding(false); err != nil {
				return err
			}
		}
		if err := a.ReleaseForwarding(); err != nil {
			return err
		}
		if v, _ := readSysctl(sysctlForward4); v != "1" || g.last() != "v4=true v6=false [slt2]" {
			t.Errorf("a gave up forwarding: ip_forward=%s, guard %s", v, g.last())
		}
		// A setting that cannot be restored: the guard stays, exempting
		// no link, since no agent holds forwarding any more.
		fwd, err := b.ns.readForwarding()
		if err != nil {
			return err
		}
		fwd.Sysctls = append(fwd.Sysctls, Sysctl{Path: "kernel/osrelease", Value: "1"})
		if err := b.ns.saveForwarding(fwd); err != nil {
			return err
		}
		if err := b.ReleaseForwarding(); err == nil {
			t.Error("a restore that failed was not reported")
		}
		if g.last() != "v4=true v6=false []" {
			t.Errorf("guard after a failed restore: %s", g.last())
		}
		fwd.Sysctls = fwd.Sysctls[:len(fwd.Sysctls)-1]
		if err := b.ns.saveForwarding(fwd); err != nil {
			return err
		}
		for _, s := range []*State{a, b} {
			if err := s.Release(); err != nil {
				return err
			}
		}
		if v, _ := readSysctl(sysctlForward4); v != "0" || g.last() != "v4=false v6=false []" {
			t.Errorf("both released: ip_forward=%s, guard %s", v, g.last())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDumpRetriesInterrupted: a dump the kernel says was interrupted is
// run again; its partial result is never returned.
func TestDumpRetriesInterrupted(t *testing.T) {
	calls := 0
	got, err := Dump(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Errorf("Dump = %v, %v after %d calls; want the third call's [1 2]", got, err, calls)
	}
	got, err = Dump(func() ([]int, error) { return []int{1}, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || got != nil {
		t.Errorf("Dump, always interrupted = %v, %v; want no result and the error", got, err)
	}
}
