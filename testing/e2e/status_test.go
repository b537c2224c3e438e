package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/testing/nstest"
)

// privateState gives a test's sluice commands a state directory of their
// own. `sluice run` keeps its records in /run/sluice, which other suites
// running at the same time use too, so each command runs in a private
// mount namespace where the test's directory is mounted on /run/sluice:
// the records, the files they list and their lock are the test's, and
// `sluice cleanup` sees no other run.
type privateState struct {
	dir string
	// holder, when set, is a process that keeps the mount namespace
	// every command runs in (newHeldState).
	holder *exec.Cmd
}

func newPrivateState(t *testing.T) privateState {
	t.Helper()
	return privateState{dir: t.TempDir()}
}

const mountState = `mkdir -p /run/sluice && mount --bind "$0" /run/sluice && exec "$@"`

// newHeldState is a private state whose mount namespace a process keeps
// until the test ends, as a host keeps its own: the agent namespaces
// serve binds there outlive a serve killed with -9 (in a mount
// namespace of a command's own they would go with it, and their links).
func newHeldState(t *testing.T) privateState {
	t.Helper()
	p := privateState{dir: t.TempDir()}
	p.holder = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", mountState, p.dir, "sleep", "3600")
	if err := p.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.holder.Process.Kill()
		_ = p.holder.Wait()
	})
	self, _ := os.Readlink("/proc/self/ns/mnt")
	waitFor(t, func() bool {
		mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.holder.Process.Pid))
		return err == nil && mnt != self && strings.Contains(readFile(fmt.Sprintf("/proc/%d/mountinfo", p.holder.Process.Pid)), " /run/sluice ")
	})
	return p
}

// cmd returns `sluice ARGS` in the private state, inside the network
// namespace ns.
func (p privateState) cmd(ns string, args ...string) *exec.Cmd {
	if p.holder != nil {
		// Not `ip netns exec`, which would give sluice a mount namespace
		// of its own.
		return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(p.holder.Process.Pid), "-m", "--net=/run/netns/" + ns, "--", sluiceBin}, args...)...)
	}
	full := append([]string{"-m", "--propagation", "private", "sh", "-c", mountState, p.dir, "ip", "netns", "exec", ns, sluiceBin}, args...)
	return exec.Command("unshare", full...)
}

// sluice runs `sluice ARGS` in the private state inside ns and returns
// its standard output; it fails t if the command fails.
func (p privateState) sluice(t *testing.T, ns string, args ...string) string {
	t.Helper()
	cmd := p.cmd(ns, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &out, &errOut)
	}
	t.Logf("sluice %s:\n%s", strings.Join(args, " "), &out)
	return out.String()
}

// start starts `sluice run FLAGS -- sh -c SCRIPT` in the private state,
// in the namespace ns, as startAgent does.
func (p privateState) start(t *testing.T, ns string, flags []string, script string) *agentRun {
	t.Helper()
	args := append(append(sluiceArgs(flags...), "--"), "sh", "-c", script)
	return launchAgent(t, p.cmd(ns, args...))
}

// statusRun is a line of `sluice status --json`.
type statusRun struct {
	Agent         string   `json:"agent"`
	State         string   `json:"state"`
	PID           int      `json:"pid"`
	UptimeSeconds *int64   `json:"uptime_seconds"`
	PolicyHash    string   `json:"policy_hash"`
	Command       []string `json:"command"`
	NetNS         string   `json:"netns"`
	Table         string   `json:"table"`
	Iface         string   `json:"iface"`
}

// status runs `sluice status --json --state-dir DIR` (no root needed to
// read a directory given to it, nor a namespace) and returns its runs by
// agent.
func (p privateState) status(t *testing.T) map[string]statusRun {
	t.Helper()
	out, err := exec.Command(sluiceBin, "status", "--json", "--state-dir", p.dir).Output()
	if err != nil {
		t.Fatalf("sluice status --json: %v", err)
	}
	runs := map[string]statusRun{}
	for line := range strings.Lines(string(out)) {
		var r statusRun
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("sluice status --json: %q: %v", line, err)
		}
		runs[r.Agent] = r
	}
	return runs
}

// statusTable runs `sluice status --state-dir DIR` and returns its lines,
// each with its columns' padding squeezed to one space.
func (p privateState) statusTable(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(sluiceBin, "status", "--state-dir", p.dir).Output()
	if err != nil {
		t.Fatalf("sluice status: %v", err)
	}
	t.Logf("sluice status:\n%s", out)
	var lines []string
	for line := range strings.Lines(string(out)) {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	return lines
}

func hasLine(lines []string, prefix string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// TestStatusAndCleanupAfterKill9: two runs share a gateway; status shows
// both alive, with their commands and policy. After a kill -9 of one
// sluice, status shows it dead while its table, link and agent stay;
// cleanup --dry-run names them and removes nothing; cleanup removes them
// and leaves the live run alone: its table stays and its agent still
// reaches what its policy allows. Once that run ends, status shows none.
func TestStatusAndCleanupAfterKill9(t *testing.T) {
	w := newWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	marker := "doomed-" + nstest.Prefix()
	killSurvivorsAtEnd(t, marker)
	doomedReady, keeperReady, release := filepath.Join(dir, "doomed"), filepath.Join(dir, "keeper"), filepath.Join(dir, "release")
	doomedScript := "touch " + doomedReady + "\nwhile :; do sleep 1; done # " + marker
	doomed := st.start(t, w.gw.Name, []string{"--name", "doomed", "--allow", "evil.test", "--agent-net", "198.18.0.4/30", "--agent-net6", "2001:db8:b::/64"}, doomedScript)
	keeperScript := prelude + "touch " + keeperReady + "\nwhile [ ! -e " + release + " ]; do sleep 0.05; done\ntry keeper_after " + w.curl() + " https://allowed.test/"
	keeper := st.start(t, w.gw.Name, []string{"--name", "keeper", "--allow", "allowed.test"}, keeperScript)
	// At the end, whatever happened, what the test's runs left goes, as
	// the world's clean-up does for runs in the shared directory.
	t.Cleanup(func() {
		if out, err := st.cmd(w.gw.Name, "cleanup").CombinedOutput(); err != nil {
			t.Errorf("final sluice cleanup: %v\n%s", err, out)
		}
	})
	waitFor(t, func() bool { _, err := os.Stat(doomedReady); return err == nil })
	waitFor(t, func() bool { _, err := os.Stat(keeperReady); return err == nil })

	hash := func(allow string) string {
		p, _, err := gateway.PolicySource{Allow: []string{allow}}.Load()
		if err != nil {
			t.Fatal(err)
		}
		return p.Hash()
	}
	runs := st.status(t)
	for _, want := range []struct {
		name, policy, script string
		pid                  int
	}{
		{"doomed", hash("evil.test"), doomedScript, doomed.pid()},
		{"keeper", hash("allowed.test"), keeperScript, keeper.pid()},
	} {
		r := runs[want.name]
		if r.State != "alive" || r.PID != want.pid || r.PolicyHash != want.policy || r.NetNS != w.gw.Name ||
			!slices.Equal(r.Command, []string{"sh", "-c", want.script}) || r.UptimeSeconds == nil {
			t.Errorf("status of %s: %+v; want alive, pid %d, policy %s, netns %s, its command", want.name, r, want.pid, want.policy, w.gw.Name)
		}
	}
	lines := st.statusTable(t)
	if !hasLine(lines, "doomed ALIVE") || !hasLine(lines, "keeper ALIVE") || !strings.Contains(strings.Join(lines, "\n"), hash("allowed.test")+" "+w.gw.Name+" sh -c") {
		t.Errorf("status table: %q", lines)
	}

	doomed.kill(t)
	runs = st.status(t)
	if runs["doomed"].State != "dead" || runs["doomed"].UptimeSeconds != nil || runs["keeper"].State != "alive" {
		t.Fatalf("status after the kill -9: %+v", runs)
	}
	if lines := st.statusTable(t); !hasLine(lines, "doomed DEAD") || !hasLine(lines, "keeper ALIVE") {
		t.Errorf("status table after the kill -9: %q", lines)
	}
	iface := runs["doomed"].Iface
	if tables := w.gw.Run(t, "nft", "list", "tables"); !strings.Contains(tables, "sluice-doomed") {
		t.Fatalf("the killed run's table is already gone; the test tests no cleanup:\n%s", tables)
	}
	if links := w.gw.Run(t, "ip", "-br", "link"); iface == "" || !strings.Contains(links, iface+"@") {
		t.Fatalf("the killed run's link %q is already gone; the test tests no cleanup:\n%s", iface, links)
	}
	if len(survivors(t, marker)) == 0 {
		t.Fatal("the killed run's agent died with sluice; the test tests no cleanup")
	}

	out := st.sluice(t, w.gw.Name, "cleanup", "--dry-run")
	for _, want := range []string{"would kill the agent doomed", "would remove link " + iface, "would remove table inet sluice-doomed", "would remove the record of agent doomed"} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup --dry-run did not say %q", want)
		}
	}
	if strings.Contains(out, "keeper") {
		t.Errorf("cleanup --dry-run would touch the live run")
	}
	if tables := w.gw.Run(t, "nft", "list", "tables"); !strings.Contains(tables, "sluice-doomed") || len(survivors(t, marker)) == 0 {
		t.Fatalf("cleanup --dry-run removed something:\n%s", tables)
	}

	out = st.sluice(t, w.gw.Name, "cleanup")
	// The link is not asked for in the output: it may go with the agent's
	// namespace, when the agent is killed, before cleanup gets to it.
	for _, want := range []string{"killed the agent doomed", "removed table inet sluice-doomed", "removed the record of agent doomed"} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup did not say %q", want)
		}
	}
	if strings.Contains(out, "keeper") {
		t.Errorf("cleanup touched the live run")
	}
	tables := w.gw.Run(t, "nft", "list", "tables")
	if strings.Contains(tables, "sluice-doomed") || !strings.Contains(tables, "sluice-keeper") {
		t.Errorf("tables after cleanup, want the live run's alone:\n%s", tables)
	}
	if links := w.gw.Run(t, "ip", "-br", "link"); strings.Contains(links, iface+"@") {
		t.Errorf("the dead run's link %s is still there:\n%s", iface, links)
	}
	waitFor(t, func() bool { return len(survivors(t, marker)) == 0 })
	runs = st.status(t)
	if len(runs) != 1 || runs["keeper"].State != "alive" {
		t.Errorf("status after cleanup: %+v, want the live run alone", runs)
	}

	touch(t, release)
	if r := keeper.wait(t); !strings.Contains(r.stdout, "keeper_after=0") {
		t.Errorf("the live run no longer works after cleanup:\n%s", r.stdout)
	}
	w.assertClean(t)
	if lines := st.statusTable(t); len(lines) != 1 || !strings.HasPrefix(lines[0], "no sluice runs") {
		t.Errorf("status once every run is gone: %q", lines)
	}
	if out := st.sluice(t, w.gw.Name, "cleanup"); !strings.HasPrefix(out, "nothing to clean up") {
		t.Errorf("cleanup with nothing to clean up: %q", out)
	}
}

// TestCleanupAfterNamespaceDeleted: sluice is killed and its gateway
// namespace deleted (taking its link and table with it) while its agent
// lives on in a namespace of its own, cut off. Status shows the run dead;
// cleanup ends the agent and removes the run's files and record, and
// status then shows none.
func TestCleanupAfterNamespaceDeleted(t *testing.T) {
	nstest.RequireRoot(t)
	t.Parallel()
	prefix := nstest.Prefix()
	gw := prefix + "-gone"
	if out, err := exec.Command("ip", "netns", "add", gw).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", gw, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + gw); err == nil {
			_ = exec.Command("sh", "-c", "ip netns pids "+gw+" | xargs -r kill -9").Run()
			_ = exec.Command("ip", "netns", "del", gw).Run()
		}
	})
	// Status and cleanup run in a namespace of the test's too.
	here := nstest.New(t, prefix+"-cl")
	st := newPrivateState(t)
	dir := t.TempDir()
	marker := "lost-" + nstest.Prefix()
	killSurvivorsAtEnd(t, marker)
	ready := filepath.Join(dir, "ready")
	a := st.start(t, gw, []string{"--name", "lost"}, "touch "+ready+"\nwhile :; do sleep 1; done # "+marker)
	t.Cleanup(func() {
		if out, err := st.cmd(here.Name, "cleanup").CombinedOutput(); err != nil {
			t.Errorf("final sluice cleanup: %v\n%s", err, out)
		}
	})
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	if r := st.status(t)["lost"]; r.State != "alive" || r.NetNS != gw {
		t.Fatalf("status of the run: %+v", r)
	}
	a.kill(t)
	if out, err := exec.Command("ip", "netns", "del", gw).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", gw, err, out)
	}
	if r := st.status(t)["lost"]; r.State != "dead" {
		t.Fatalf("status after the kill and the namespace's deletion: %+v", r)
	}
	if len(survivors(t, marker)) == 0 {
		t.Fatal("the agent died with sluice or its namespace; the test tests no cleanup")
	}

	out := st.sluice(t, here.Name, "cleanup", "--dry-run")
	for _, want := range []string{`the gateway namespace "` + gw + `"`, "is gone", "would kill the agent lost", ".resolv.conf", "would remove the record of agent lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup --dry-run did not say %q", want)
		}
	}
	if strings.Contains(out, "link") && !strings.Contains(out, "links") {
		t.Errorf("cleanup --dry-run would remove a link of a namespace that is gone")
	}
	out = st.sluice(t, here.Name, "cleanup")
	for _, want := range []string{"is gone", "killed the agent lost", ".resolv.conf", "removed the record of agent lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup did not say %q", want)
		}
	}
	waitFor(t, func() bool { return len(survivors(t, marker)) == 0 })
	if runs := st.status(t); len(runs) != 0 {
		t.Errorf("status after cleanup: %+v", runs)
	}
	if left, _ := filepath.Glob(filepath.Join(st.dir, "*.resolv.conf")); len(left) > 0 {
		t.Errorf("files left in the state directory: %v", left)
	}
}
