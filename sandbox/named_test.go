package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestOpenNetNSFile: only a network namespace opens; the empty file that
// a crash between making the file and binding the namespace leaves is
// told apart (it is made a namespace again), anything else is refused,
// a symbolic link too (it is not what `ip netns add` makes).
func TestOpenNetNSFile(t *testing.T) {
	nstest.RequireRoot(t)
	prefix := nstest.Prefix()
	ns := nstest.New(t, prefix+"-of")
	dir := t.TempDir()
	empty, full, uts, link := filepath.Join(dir, "empty"), filepath.Join(dir, "full"), filepath.Join(dir, "uts"), filepath.Join(dir, "link")
	for _, f := range []string{empty, uts} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(full, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A namespace, but not a network one.
	if err := unix.Mount("/proc/self/ns/uts", uts, "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(uts, unix.MNT_DETACH) })
	if err := os.Symlink(filepath.Join(NetNSDir, ns.Name), link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		ok   bool
		is   error // the error is this one
	}{
		{filepath.Join(NetNSDir, ns.Name), true, nil},
		{uts, false, nil},
		{link, false, nil},
		{empty, false, errNotNetNS},
		{full, false, nil},
		{filepath.Join(dir, "missing"), false, os.ErrNotExist},
	} {
		fd, err := openNetNSFile(tc.path)
		if fd >= 0 {
			unix.Close(fd)
		}
		if (err == nil) != tc.ok || (fd >= 0) != tc.ok {
			t.Errorf("openNetNSFile(%s) = %d, %v; want ok %v", tc.path, fd, err, tc.ok)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("openNetNSFile(%s): %v, want %v", tc.path, err, tc.is)
		}
		if tc.is == nil && !tc.ok && (errors.Is(err, errNotNetNS) || errors.Is(err, os.ErrNotExist)) {
			t.Errorf("openNetNSFile(%s): %v, taken for a namespace to make", tc.path, err)
		}
	}
}

func TestValidNetNSName(t *testing.T) {
	for name, want := range map[string]bool{
		"sluice-alpha": true, "a": true, "": false, ".": false, "..": false, "a/b": false, "../x": false,
		strings.Repeat("x", 255): true, strings.Repeat("x", 256): false,
	} {
		if got := validNetNSName(name); got != want {
			t.Errorf("validNetNSName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestLeftoversOfNamedAgent: cleanup --dry-run says a dead run's named
// namespace and its processes are kept, and does not offer to kill them.
func TestLeftoversOfNamedAgent(t *testing.T) {
	self := os.Getpid()
	record := func(netns string) *State {
		return &State{Record: Record{Slot: Slot{Name: "alpha", Iface: "sl1", Table: "sluice-alpha"}, AgentPID: self, AgentStart: processStart(self), AgentNetNS: netns}}
	}
	s, named := record(""), record("sluice-alpha")
	if got := (Run{state: s}).leftovers(true); !slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "would kill the agent alpha") }) {
		t.Errorf("leftovers of a run without a named namespace: %q; want its agent killed", got)
	}
	got := (Run{state: named}).leftovers(true)
	if slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "kill") }) ||
		!slices.Contains(got, "would keep the agent namespace sluice-alpha and its processes, with no link, for the next start with it") {
		t.Errorf("leftovers of a run with a named namespace: %q; want it kept, nothing killed", got)
	}
}

// TestNamedAgent: an agent with a named namespace makes it under
// NetNSDir (on the empty file a crash left there); nothing crosses its
// link until Connect, whatever the namespace's root does with its end;
// after Close (link gone) the namespace is left with loopback alone and
// its process runs on; a new agent of the same name adopts it, process
// and all, replacing a link named eth0 that it finds there; Kill ends
// the processes that entered it with `ip netns exec`, those forked while
// it looks too, and RemoveName removes it. The gateway's own namespace
// is never adopted.
func TestNamedAgent(t *testing.T) {
	prefix := nstest.Prefix()
	gw := nstest.New(t, prefix+"-gw")
	name := "sluice-" + prefix
	path := filepath.Join(NetNSDir, name)
	t.Cleanup(func() {
		if _, err := os.Stat(path); err == nil {
			_ = exec.Command("sh", "-c", "ip netns pids "+name+" | xargs -r kill -9").Run()
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	})
	cfg := AgentConfig{Iface: prefix + "a", Net4: netip.MustParsePrefix("198.18.0.0/30"), Namespace: name}
	inNS := func(args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
	}
	var sleeper *exec.Cmd
	sleeperDone := make(chan struct{})
	err := gw.Do(func() error {
		if _, err := NewAgent(AgentConfig{Iface: prefix + "x", Net4: cfg.Net4, Namespace: gw.Name}); err == nil || !strings.Contains(err.Error(), "own network namespace") {
			return fmt.Errorf("adopting the gateway's own namespace: %v", err)
		}
		// The empty file a crash while making the namespace leaves is no
		// namespace to adopt: one is made on it.
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			return err
		}
		a, err := NewAgent(cfg)
		if err != nil {
			return err
		}
		if a.Adopted {
			t.Errorf("a new namespace was taken for adopted")
		}
		// Whatever happens, no process of the test is left in the
		// namespace, named or not by then.
		keep, err := unix.Dup(a.Fd)
		if err != nil {
			return err
		}
		t.Cleanup(func() {
			killIn(t, keep)
			unix.Close(keep)
		})
		if fd, err := openNetNSName(name); err != nil {
			return fmt.Errorf("no namespace at %s: %w", path, err)
		} else {
			unix.Close(fd)
		}
		// Down: the agent's root numbers and raises its end itself, and
		// its pings go nowhere.
		if out, err := inNS("sh", "-c", "ip addr add 198.18.0.2/30 dev eth0 && ip link set eth0 up && ping -c 2 -i 0.2 -W 1 198.18.0.1").CombinedOutput(); err == nil {
			t.Errorf("the agent reached the gateway before Connect:\n%s", out)
		}
		link, err := netlink.LinkByName(cfg.Iface)
		if err != nil {
			return err
		}
		if link.Attrs().Flags&net.FlagUp != 0 || link.Attrs().Statistics.RxPackets != 0 {
			t.Errorf("before Connect: the gateway's end is up (%v) or received %d packets", link.Attrs().Flags, link.Attrs().Statistics.RxPackets)
		}
		if err := a.Connect(); err != nil {
			return err
		}
		if out, err := inNS("ping", "-c", "1", "-W", "5", "198.18.0.1").CombinedOutput(); err != nil {
			return fmt.Errorf("after Connect the agent does not reach the gateway: %v\n%s", err, out)
		}
		sleeper = inNS("sleep", "1000")
		if err := sleeper.Start(); err != nil {
			return err
		}
		go func() { _ = sleeper.Wait(); close(sleeperDone) }()
		if err := a.Close(); err != nil {
			return err
		}
		if out, _ := inNS("ip", "-o", "link").Output(); strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), "lo:") {
			t.Errorf("after Close the namespace has links beside loopback:\n%s", out)
		}
		// A link named eth0 in the namespace, as a run from another
		// gateway namespace leaves: adoption replaces it.
		if out, err := inNS("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "old0").CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if a, err = NewAgent(cfg); err != nil {
			return err
		}
		if !a.Adopted {
			t.Errorf("the namespace was not adopted")
		}
		if out, _ := inNS("ip", "-o", "link").Output(); strings.Contains(string(out), "old0") || !strings.Contains(string(out), "eth0@") {
			t.Errorf("after adoption, links:\n%s", out)
		}
		if err := a.Connect(); err != nil {
			return err
		}
		select {
		case <-sleeperDone:
			t.Fatalf("the process in the namespace did not outlive Close and adoption")
		default:
		}
		// A process that forks without end: the children it makes while
		// Kill scans /proc are found by the scans that follow.
		forker := inNS("sh", "-c", "while :; do sleep 1000 & sleep 0.002; done")
		if err := forker.Start(); err != nil {
			return err
		}
		forkerDone := make(chan struct{})
		go func() { _ = forker.Wait(); close(forkerDone) }()
		for {
			out, _ := exec.Command("ip", "netns", "pids", name).Output()
			if strings.Count(string(out), "\n") > 20 {
				break
			}
		}
		if n := a.Kill(); n < 20 {
			t.Errorf("Kill signalled %d processes, want the forker, its children and the sleeper", n)
		}
		<-sleeperDone
		<-forkerDone
		if out, _ := exec.Command("ip", "netns", "pids", name).Output(); len(out) > 0 {
			t.Errorf("processes left in the namespace after Kill: %s", out)
		}
		if err := a.RemoveName(); err != nil {
			return err
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after RemoveName: %v", err)
		}
		return a.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoverKeepsNamedAgent: undoing a dead run kills its agent, unless
// the agent's namespace has a name: that one is kept for the next start,
// and the recovery says so. A live run's named namespace is refused to
// another claim, from any gateway namespace.
func TestRecoverKeepsNamedAgent(t *testing.T) {
	prefix := nstest.Prefix()
	ns, other := nstest.New(t, prefix+"-st"), nstest.New(t, prefix+"-st2")
	dir := t.TempDir()
	for _, netns := range []string{"", "sluice-kept"} {
		sleeper := exec.Command("sleep", "1000")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
		var undone []string
		err := ns.Do(func() error {
			cfg := StateConfig{Dir: dir, AgentNetNS: netns, Choose: func([]Holder) (Slot, error) { return slot("a", 1), nil }}
			s, _, err := Claim(cfg)
			if err != nil {
				return err
			}
			if err := s.SetAgent(sleeper.Process.Pid); err != nil {
				return err
			}
			if netns != "" {
				err := other.Do(func() error {
					_, _, err := Claim(StateConfig{Dir: dir, AgentNetNS: netns, Choose: cfg.Choose})
					return err
				})
				if err == nil || !strings.Contains(err.Error(), "the agent namespace "+netns+" is held by another sluice") {
					t.Errorf("a second claim of %s from another gateway namespace: %v", netns, err)
				}
			}
			s.Start = "gone"
			if err := s.save(); err != nil {
				return err
			}
			undone, err = Recover(cfg)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		killed := slices.ContainsFunc(undone, func(u string) bool { return strings.HasPrefix(u, "killed the agent a") })
		kept := slices.Contains(undone, "kept the agent namespace sluice-kept and its processes, with no link, for the next start with it")
		if netns == "" && (!killed || kept) || netns != "" && (killed || !kept) {
			t.Errorf("recovery of a dead run with agent namespace %q: %q", netns, undone)
		}
	}
}

// killIn kills every process in the network namespace fd until none is
// left: the test's own clean-up, apart from the Kill it tests.
func killIn(t *testing.T, fd int) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Error(err)
		return
	}
	for range 1000 {
		paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
		left := 0
		for _, p := range paths {
			var pst unix.Stat_t
			if unix.Stat(p, &pst) != nil || pst.Ino != st.Ino || pst.Dev != st.Dev {
				continue
			}
			left++
			if pid, err := strconv.Atoi(strings.Split(p, "/")[2]); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("processes of the test left in its namespace")
}
