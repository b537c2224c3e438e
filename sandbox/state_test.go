package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/sluicegw/sluice/testing/nstest"
)

// guardLog records what the records asked of the guard.
type guardLog struct{ calls []string }

func (g *guardLog) set(p ForwardingPlan, ifaces []string) error {
	g.calls = append(g.calls, fmt.Sprintf("v4=%v v6=%v %v", p.Enable4, p.Enable6, ifaces))
	return nil
}

func (g *guardLog) last() string {
	if len(g.calls) == 0 {
		return "none"
	}
	return g.calls[len(g.calls)-1]
}

func slot(name string, i int) Slot {
	return Slot{Name: name, Table: "sluice-" + name, Iface: fmt.Sprintf("slt%d", i), LogGroup: uint16(100 + i),
		Nets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, 255, byte(4 * i)}), 30)}}
}

// TestAgentsShareForwarding: two agents of one namespace each hold the
// forwarding sluice switched on; it stays on, behind a guard that exempts
// the links of those left, until the last one goes, and then the old
// value comes back and the guard goes. A slot another agent holds is
// refused, naming it.
func TestAgentsShareForwarding(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-st")
	dir := t.TempDir()
	err := ns.Do(func() error {
		g := &guardLog{}
		before, err := readSysctl(sysctlForward4)
		if err != nil || before != "0" {
			return fmt.Errorf("a new namespace's ip_forward: %q, %v", before, err)
		}
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
		for _, s := range []Slot{slot("a", 3), {Name: "c", Table: "sluice-b"}, {Name: "c", Iface: "slt1"}, {Name: "c", LogGroup: 102}, {Name: "c", Nets: slot("x", 1).Nets}} {
			if _, err := claim(s); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
				t.Errorf("claim %+v beside a and b: %v; want ErrBusy naming the holder", s, err)
			}
		}
		check := func(step, forward, guard string) {
			t.Helper()
			if v, _ := readSysctl(sysctlForward4); v != forward {
				t.Errorf("%s: ip_forward=%s, want %s", step, v, forward)
			}
			if g.last() != guard {
				t.Errorf("%s: guard %s, want %s", step, g.last(), guard)
			}
		}
		if err := a.EnableForwarding(false); err != nil {
			return err
		}
		check("a enabled", "1", "v4=true v6=false [slt1]")
		if err := b.EnableForwarding(false); err != nil {
			return err
		}
		check("b enabled", "1", "v4=true v6=false [slt1 slt2]")
		if err := a.Release(); err != nil {
			return err
		}
		check("a released", "1", "v4=true v6=false [slt2]")
		if err := b.Release(); err != nil {
			return err
		}
		check("b released", "0", "v4=false v6=false []")
		if left, _ := filepath.Glob(filepath.Join(dir, "netns-*")); len(left) > 0 {
			t.Errorf("records left: %v", left)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoverDeadAgent: the record of an agent whose sluice died is
// undone by the next start, its forwarding hold with it, while a live
// agent's record and hold stay.
func TestRecoverDeadAgent(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-st")
	dir := t.TempDir()
	err := ns.Do(func() error {
		g := &guardLog{}
		cfg := func(s Slot) StateConfig {
			return StateConfig{Dir: dir, SetGuard: g.set, Choose: func([]Holder) (Slot, error) { return s, nil }}
		}
		dead, _, err := Claim(cfg(slot("dead", 1)))
		if err != nil {
			return err
		}
		if err := dead.EnableForwarding(false); err != nil {
			return err
		}
		file := filepath.Join(dir, "dead.resolv.conf")
		if err := dead.WriteFile(file, nil); err != nil {
			return err
		}
		// The record now says a process that is gone made it.
		dead.Start = "gone"
		if err := dead.save(); err != nil {
			return err
		}
		undone, err := Recover(cfg(Slot{}))
		if err != nil {
			return err
		}
		for _, want := range []string{"removed " + file, "restored net/ipv4/ip_forward=0"} {
			if !slices.Contains(undone, want) {
				t.Errorf("recovery did %q, want %q among them", undone, want)
			}
		}
		if v, _ := readSysctl(sysctlForward4); v != "0" || g.last() != "v4=false v6=false []" {
			t.Errorf("after recovery: ip_forward=%s, guard %s", v, g.last())
		}
		// With a live agent holding forwarding, the dead one's hold goes
		// and forwarding stays.
		live, _, err := Claim(cfg(slot("live", 2)))
		if err != nil {
			return err
		}
		dead, _, err = Claim(cfg(slot("dead", 1)))
		if err != nil {
			return err
		}
		for _, s := range []*State{live, dead} {
			if err := s.EnableForwarding(false); err != nil {
				return err
			}
		}
		dead.Start = "gone"
		if err := dead.save(); err != nil {
			return err
		}
		if undone, err = Recover(cfg(Slot{})); err != nil {
			return err
		}
		if v, _ := readSysctl(sysctlForward4); v != "1" || g.last() != "v4=true v6=false [slt2]" {
			t.Errorf("a dead agent beside a live one: ip_forward=%s, guard %s, undone %q", v, g.last(), undone)
		}
		return live.Release()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUnreadableRecordStopsClaims: a record that does not read belongs
// to a run whose table and link are unknown; nothing is claimed beside
// it until it is removed.
func TestUnreadableRecordStopsClaims(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-st")
	dir := t.TempDir()
	err := ns.Do(func() error {
		cfg := StateConfig{Dir: dir, Choose: func([]Holder) (Slot, error) { return slot("a", 1), nil }}
		cookie, err := netnsCookie()
		if err != nil {
			return err
		}
		bad := filepath.Join(dir, fmt.Sprintf("netns-%d-agent-lost.json", cookie))
		if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
			return err
		}
		if _, _, err := Claim(cfg); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("a claim beside an unreadable record: %v", err)
		}
		if _, err := Recover(cfg); err == nil {
			t.Error("recovery did not report the unreadable record")
		}
		if err := os.Remove(bad); err != nil {
			return err
		}
		s, _, err := Claim(cfg)
		if err != nil {
			return fmt.Errorf("the claim once the record is gone: %w", err)
		}
		return s.Release()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRestoreSkipsGoneInterface: a setting recorded for an interface that
// is gone by the time forwarding is restored (another agent's link,
// caught by the scan of accept_ra just as it was made) is skipped: the
// rest is restored and the guard goes, instead of both staying.
func TestRestoreSkipsGoneInterface(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-st")
	dir := t.TempDir()
	err := ns.Do(func() error {
		if err := writeSysctl(sysctlForward4, "0"); err != nil { // a new namespace takes the host's
			return err
		}
		g := &guardLog{}
		s, _, err := Claim(StateConfig{Dir: dir, SetGuard: g.set, Choose: func([]Holder) (Slot, error) { return slot("a", 1), nil }})
		if err != nil {
			return err
		}
		if err := s.EnableForwarding(false); err != nil {
			return err
		}
		fwd, err := s.ns.readForwarding()
		if err != nil {
			return err
		}
		fwd.Sysctls = append(fwd.Sysctls, Sysctl{Path: "net/ipv6/conf/slgone0/accept_ra", Value: "1"})
		if err := s.ns.saveForwarding(fwd); err != nil {
			return err
		}
		if err := s.Release(); err != nil {
			t.Errorf("release: %v", err)
		}
		if v, _ := readSysctl(sysctlForward4); v != "0" || g.last() != "v4=false v6=false []" {
			t.Errorf("after release: ip_forward=%s, guard %s", v, g.last())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoverDeletesDeadLinksAtOnce: the links of every dead agent go,
// in one request; a live agent's link and a link no record names stay.
func TestRecoverDeletesDeadLinksAtOnce(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-dl")
	dir := t.TempDir()
	err := ns.Do(func() error {
		g := &guardLog{}
		cfg := func(s Slot) StateConfig {
			return StateConfig{Dir: dir, SetGuard: g.set, Choose: func([]Holder) (Slot, error) { return s, nil }}
		}
		for _, name := range []string{"slt1", "slt2", "slt3", "slt4", "other0", "left0"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
		}
		// A link an earlier recovery gathered and did not delete: it goes
		// with these, which only a deletion by group does.
		left, err := netlink.LinkByName("left0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetGroup(left, doomedGroup); err != nil {
			return err
		}
		live, _, err := Claim(cfg(slot("live", 4)))
		if err != nil {
			return err
		}
		defer live.Release()
		var dead []*State
		for i := 1; i <= 3; i++ {
			s, _, err := Claim(cfg(slot(fmt.Sprint("dead", i), i)))
			if err != nil {
				return err
			}
			dead = append(dead, s)
		}
		for _, s := range dead { // they die together, as a serve's agents
			s.Start = "gone"
			if err := s.save(); err != nil {
				return err
			}
		}
		undone, err := Recover(cfg(Slot{}))
		if err != nil {
			return err
		}
		for i := 1; i <= 3; i++ {
			name := fmt.Sprint("slt", i)
			if !slices.Contains(undone, "removed link "+name) {
				t.Errorf("recovery did %q, want the removal of %s among them", undone, name)
			}
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("the dead agent's link %s is still there", name)
			}
		}
		for _, name := range []string{"slt4", "other0"} {
			if _, err := netlink.LinkByName(name); err != nil {
				t.Errorf("link %s (a live agent's, or no agent's) is gone: %v", name, err)
			}
		}
		if _, err := netlink.LinkByName("left0"); err == nil {
			t.Error("the dead agents' links were not deleted by group (one request): a link gathered before is still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeleteLinksInOneRequest: DeleteLinks deletes by group, with one
// request: a link an earlier call gathered and did not delete goes with
// the next call's; names that are not there are skipped.
func TestDeleteLinksInOneRequest(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-dg")
	err := ns.Do(func() error {
		for _, name := range []string{"dl1", "dl2", "left1", "keep1"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
		}
		left, err := netlink.LinkByName("left1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetGroup(left, doomedGroup); err != nil {
			return err
		}
		gone, err := DeleteLinks([]string{"dl1", "absent0", "dl2"})
		if err != nil {
			return err
		}
		if fmt.Sprint(gone) != "[dl1 dl2]" {
			t.Errorf("DeleteLinks found %v, want [dl1 dl2]", gone)
		}
		for name, want := range map[string]bool{"dl1": false, "dl2": false, "dl1p": false, "left1": false, "keep1": true} {
			if _, err := netlink.LinkByName(name); (err == nil) != want {
				t.Errorf("link %s there = %v, want %v", name, err == nil, want)
			}
		}
		if gone, err := DeleteLinks([]string{"dl1"}); err != nil || len(gone) != 0 {
			t.Errorf("DeleteLinks of a link gone = %v, %v; want nothing and no error", gone, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoverForgetsDeadFlows: the recovery deletes the tracked flows of
// the dead agents' networks once their links are gone; when it cannot,
// their records stay and their networks stay held.
func TestRecoverForgetsDeadFlows(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-ff")
	dir := t.TempDir()
	err := ns.Do(func() error {
		var asked [][]netip.Prefix
		var fail error
		cfg := func(s Slot) StateConfig {
			return StateConfig{Dir: dir, SetGuard: (&guardLog{}).set, Choose: func([]Holder) (Slot, error) { return s, nil },
				ForgetFlows: func(nets []netip.Prefix) error {
					if _, err := netlink.LinkByName("slt1"); err == nil {
						t.Error("flows deleted while the dead agent's link is still there")
					}
					asked = append(asked, nets)
					return fail
				}}
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "slt1"}, PeerName: "slt1p"}); err != nil {
			return err
		}
		die := func() error {
			s, _, err := Claim(cfg(slot("dead", 1)))
			if err != nil {
				return err
			}
			s.Start = "gone"
			return s.save()
		}
		if err := die(); err != nil {
			return err
		}
		fail = errors.New("conntrack said no")
		undone, held, err := RecoverHeld(cfg(Slot{}))
		if err != nil {
			return err
		}
		if len(held) != 1 || held[0].Name != "dead" || !slices.ContainsFunc(undone, func(s string) bool { return strings.Contains(s, "conntrack said no") }) {
			t.Errorf("a failed deletion: held %v, did %q; want the dead agent held and the error said", held, undone)
		}
		fail = nil
		undone, held, err = RecoverHeld(cfg(Slot{}))
		if err != nil {
			return err
		}
		if len(held) != 0 || !slices.ContainsFunc(undone, func(s string) bool { return strings.HasPrefix(s, "removed the record of agent dead") }) {
			t.Errorf("after a deletion: held %v, did %q; want the record gone", held, undone)
		}
		if fmt.Sprint(asked) != "[[198.19.255.4/30] [198.19.255.4/30]]" {
			t.Errorf("flows deleted for %v, want the dead agent's network, once a recovery", asked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClaimAll: several agents claimed in one pass each get a slot that
// none of the others, earlier ones of the same call included, holds; an
// agent whose namespace another live run holds fails alone.
func TestClaimAll(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-ca")
	dir := t.TempDir()
	err := ns.Do(func() error {
		cfg := StateConfig{Dir: dir, SetGuard: (&guardLog{}).set}
		other, _, err := Claim(StateConfig{Dir: dir, SetGuard: cfg.SetGuard, AgentNetNS: "sluice-taken",
			Choose: func([]Holder) (Slot, error) { return slot("other", 1), nil }})
		if err != nil {
			return err
		}
		defer other.Release()
		// Each picks the first of slots 1..4 that nobody holds.
		first := func(name string) func(held []Holder) (Slot, error) {
			return func(held []Holder) (Slot, error) {
				for i := 1; i <= 4; i++ {
					s := slot(name, i)
					if !slices.ContainsFunc(held, func(h Holder) bool { return s.Conflict(h) != nil }) {
						return s, nil
					}
				}
				return Slot{}, errors.New("pool full")
			}
		}
		states, errs, _, err := ClaimAll(cfg, []ClaimSpec{
			{AgentNetNS: "sluice-a", Choose: first("a")},
			{AgentNetNS: "sluice-taken", Choose: first("t")},
			{AgentNetNS: "sluice-b", Choose: first("b")},
		})
		if err != nil {
			return err
		}
		if errs[0] != nil || errs[2] != nil || states[0] == nil || states[2] == nil {
			t.Fatalf("claims: %v", errs)
		}
		if errs[1] == nil || !strings.Contains(errs[1].Error(), "held by another sluice") || states[1] != nil {
			t.Errorf("a namespace another run holds: %v", errs[1])
		}
		if a, b := states[0].Iface, states[2].Iface; a != "slt2" || b != "slt3" {
			t.Errorf("links %s and %s; want slt2 and slt3 (slt1 is the other run's)", a, b)
		}
		for _, s := range []*State{states[0], states[2]} {
			if err := s.Release(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
