package sandbox

import (
	"net/netip"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestCredentialEnv(t *testing.T) {
	c := Credential{Name: "agent", Home: "/home/agent"}
	got := c.Env([]string{"PATH=/bin", "HOME=/root", "USER=root", "LOGNAME=root", "TERM=xterm"})
	want := []string{"PATH=/bin", "TERM=xterm", "HOME=/home/agent", "USER=agent", "LOGNAME=agent"}
	if !slices.Equal(got, want) {
		t.Errorf("Env = %v, want %v", got, want)
	}
}

func TestLookupUser(t *testing.T) {
	t.Setenv("SUDO_USER", "")
	t.Setenv("SUDO_UID", "")
	for _, name := range []string{"", "root", "0"} {
		c, err := LookupUser(name)
		if err != nil || c.UID != 0 || c.Name != "root" {
			t.Errorf("LookupUser(%q) = %+v, %v; want root", name, c, err)
		}
	}
	if _, err := LookupUser("no-such-user-here"); err == nil {
		t.Error("an unknown user was found")
	}
}

func TestHostAddrs(t *testing.T) {
	for _, tc := range []struct {
		net, gw, agent string
		ok             bool
	}{
		{"198.19.255.252/30", "198.19.255.253", "198.19.255.254", true},
		{"198.18.0.0/24", "198.18.0.1", "198.18.0.2", true},
		{"198.18.0.0/31", "", "", false},
		{"fd5c:1ce0:5c1c::/64", "fd5c:1ce0:5c1c::1", "fd5c:1ce0:5c1c::2", true},
	} {
		gw, agent, err := hostAddrs(netip.MustParsePrefix(tc.net))
		if (err == nil) != tc.ok || tc.ok && (gw.String() != tc.gw || agent.String() != tc.agent) {
			t.Errorf("hostAddrs(%s) = %s, %s, %v", tc.net, gw, agent, err)
		}
	}
}

// TestReapChildren: the init collects every child that ended and reports
// the command's status as a shell does, orphans or not.
func TestReapChildren(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 3", 3},
		{"kill -TERM $$", 128 + 15},
		{"exit 0", 0},
	} {
		other := exec.Command("sh", "-c", "exit 9") // not the command: reaped, not reported
		cmd := exec.Command("sh", "-c", tc.script)
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, done := reapChildren(cmd.Process.Pid)
			if done {
				if status != tc.want {
					t.Errorf("%q: status %d, want %d", tc.script, status, tc.want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q: the command was never reaped", tc.script)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The other child is reaped too (a zombie still takes signals).
		for syscall.Kill(other.Process.Pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("%q: the other child was never reaped", tc.script)
			}
			reapChildren(cmd.Process.Pid)
			time.Sleep(5 * time.Millisecond)
		}
	}
}
