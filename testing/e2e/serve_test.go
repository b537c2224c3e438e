package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/nstest"
)

// serveRun is one `sluice serve` in a test's gateway, in a private state
// directory (see privateState).
type serveRun struct {
	cmd *exec.Cmd
	log string // its standard error
}

// newServeWorld is newWorld with forwarding off in the gateway, as
// assertClean expects to find it after: a kernel that copies the host's
// ip_forward into new namespaces starts it on where the host has it on.
func newServeWorld(t *testing.T) *world {
	w := newWorld(t)
	w.gw.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	return w
}

// serveHeader is what every test config starts with: the fake internet's
// resolver and ranges, and the test's own journal.
func serveHeader(journalPath string) string {
	return "upstream: [\"" + authAddr + ":53\"]\njournal: " + journalPath + "\n" +
		"global_ranges: [198.18.0.0/15, 192.0.2.0/24, 2001:db8::/32]\n"
}

// serveAgent is an agent's entry in a test config, its policy NAME.yaml
// beside the config, its link in the test network.
func serveAgent(name, net4, net6 string) string {
	return "  - name: " + name + "\n    policy: " + name + ".yaml\n    agent_net: " + net4 + "\n    agent_net6: " + net6 + "\n"
}

// writeAtomic replaces path's content as an editor does (a new file
// renamed over it), so that a reload never reads it half-written.
func writeAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startServe starts `sluice serve --config FILE` in the gateway; when the
// test ends it is stopped (SIGTERM) if it still runs, and what the test
// left in the private state is cleaned up.
func startServe(t *testing.T, w *world, st privateState, config string) *serveRun {
	t.Helper()
	s := &serveRun{cmd: st.cmd(w.gw.Name, "serve", "--config", config), log: filepath.Join(t.TempDir(), "stderr")}
	f, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.cmd.Stdout, s.cmd.Stderr = f, f
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = s.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = s.cmd.Process.Kill()
				<-done
			}
		}
		if out, err := st.cmd(w.gw.Name, "cleanup").CombinedOutput(); err != nil {
			t.Errorf("final sluice cleanup: %v\n%s", err, out)
		}
		removeAgentNamespaces(t, config)
		if t.Failed() {
			t.Logf("sluice serve's log:\n%s", readFile(s.log))
		}
	})
	return s
}

// removeAgentNamespaces removes the named namespaces of the agents the
// config names when the test ends: stopping serve detaches its agents and
// keeps their namespaces (for a restart to adopt), and a test leaves
// nothing behind. Agent names carry the test's id, so no other test's
// namespace is touched.
func removeAgentNamespaces(t *testing.T, config string) {
	t.Helper()
	for _, m := range regexp.MustCompile(`(?m)^\s*- name: (\S+)$`).FindAllStringSubmatch(readFile(config), -1) {
		ns := filepath.Join("/run/netns", gateway.NamespaceFor(m[1]))
		if _, err := os.Stat(ns); err != nil {
			continue
		}
		_ = exec.Command("sh", "-c", "ip netns pids "+filepath.Base(ns)+" | xargs -r kill -9").Run()
		_ = unix.Unmount(ns, unix.MNT_DETACH)
		if err := os.Remove(ns); err != nil {
			t.Errorf("remove %s: %v", ns, err)
		}
	}
}

// logged reports whether serve logged a line with msg and every one of
// attrs ("agent=alpha").
func (s *serveRun) logged(msg string, attrs ...string) bool {
	for line := range strings.Lines(readFile(s.log)) {
		line = strings.TrimSuffix(line, "\n") + " "
		if !strings.Contains(line, "msg="+msg+" ") && !strings.Contains(line, "msg="+strconv.Quote(msg)+" ") {
			continue
		}
		all := true
		for _, a := range attrs {
			all = all && strings.Contains(line, a)
		}
		if all {
			return true
		}
	}
	return false
}

func (s *serveRun) waitLogged(t *testing.T, msg string, attrs ...string) {
	t.Helper()
	waitFor(t, func() bool { return s.logged(msg, attrs...) })
}

func (s *serveRun) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// stop ends serve with SIGTERM and returns its exit status.
func (s *serveRun) stop(t *testing.T) int {
	t.Helper()
	s.signal(t, syscall.SIGTERM)
	err := s.cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return s.cmd.ProcessState.ExitCode()
}

// policyChanges are the journal's records of agent's policy changes.
func policyChanges(t *testing.T, path, agent string) []journal.Record {
	t.Helper()
	var out []journal.Record
	for _, r := range listJournal(t, path, "--agent", agent) {
		if r.Layer == journal.LayerPolicy && r.Reason == journal.ReasonReload {
			out = append(out, r)
		}
	}
	return out
}

func (w *world) hasTable(t *testing.T, agent string) bool {
	return strings.Contains(w.gw.Run(t, "nft", "list", "tables"), "inet "+gateway.TablePrefix+agent+"\n")
}

// TestServeConfigErrors: sluice check reports every error of a serve
// config and of the policies it names, each with its file:line, and
// passes a good one, router and report mode included; sluice serve
// refuses to start on the bad one with the same errors, and leaves
// nothing. (Router mode starts: TestRouterMode; report mode starts:
// TestServeReportMode.)
func TestServeConfigErrors(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "alpha.yaml"), "version: 1\nallow:\n  - host: allowed.test\n")
	writeAtomic(t, filepath.Join(dir, "broken.yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [99999]\n")
	bad := filepath.Join(dir, "bad.yaml")
	writeAtomic(t, bad, serveHeader(filepath.Join(dir, "journal.db"))+"colour: blue\nagents:\n"+
		"  - name: alpha\n    policy: alpha.yaml\n    agent_net: 198.18.0.1/30\n"+
		"  - name: beta\n    policy: broken.yaml\n"+
		"  - name: gamma\n    policy: nowhere.yaml\n    mode: audit\n")
	router := filepath.Join(dir, "router.yaml")
	writeAtomic(t, router, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n"+
		"  - name: alpha\n    policy: alpha.yaml\n  - name: lab\n    policy: alpha.yaml\n    interface: br-lab\n")
	report := filepath.Join(dir, "report.yaml")
	writeAtomic(t, report, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n  - name: alpha\n    policy: alpha.yaml\n    mode: report\n")

	wantBad := []string{
		bad + ":4: colour: unknown key",
		bad + ":8: agents[0].agent_net: 198.18.0.1/30 has host bits set; did you mean 198.18.0.0/30?",
		filepath.Join(dir, "broken.yaml") + `:4: allow[0].ports[0]: port "99999"`,
		bad + ":12: agents[2].policy: " + filepath.Join(dir, "nowhere.yaml") + ": no such file",
		bad + `:13: agents[2].mode: "audit": want enforce or report`,
	}
	out, err := exec.Command(sluiceBin, "check", bad).CombinedOutput()
	if code := exitCode(t, err); code != 1 {
		t.Errorf("check %s: exit %d, want 1:\n%s", bad, code, out)
	}
	for _, want := range wantBad {
		if !strings.Contains(string(out), want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}
	for _, good := range []string{router, report} {
		out, err := exec.Command(sluiceBin, "check", good).CombinedOutput()
		if code := exitCode(t, err); code != 0 || !strings.Contains(string(out), good+": ok, ") {
			t.Errorf("check %s: exit %d:\n%s", good, code, out)
		}
	}

	for _, tc := range []struct {
		config string
		want   []string
	}{
		{bad, wantBad},
	} {
		cmd := st.cmd(w.gw.Name, "serve", "--config", tc.config)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second): // it started after all: end it, and fail
			_ = cmd.Process.Signal(syscall.SIGTERM)
			err = <-done
			t.Errorf("serve --config %s started", tc.config)
		}
		if code := exitCode(t, err); code != 1 {
			t.Errorf("serve --config %s: exit %d, want 1:\n%s", tc.config, code, &stderr)
		}
		for _, want := range tc.want {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("serve --config %s: stderr lacks %q:\n%s", tc.config, want, &stderr)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "journal.db")); err == nil {
		t.Error("serve opened the journal for a config it refused")
	}
	w.assertClean(t)
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestServeAgentsAndReload: sluice serve starts two agents, each with its
// table; a policy file changed on disk is reloaded for its agent alone
// (log and journal say so), and so is one changed for SIGHUP only (in
// place, its time and size kept, so that only the signal tells); a
// broken policy keeps the one in force and the log says why, at its
// file:line; an agent added to the config starts, an agent removed is
// torn down; /metrics counts per agent; SIGTERM ends it and nothing is
// left.
func TestServeAgentsAndReload(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:] // agent names are namespace names: unique per test
	alpha, beta, gamma := id+"-alpha", id+"-beta", id+"-gamma"
	journalPath := filepath.Join(dir, "journal.db")
	policy := func(name, hosts string) string {
		path := filepath.Join(dir, name+".yaml")
		writeAtomic(t, path, "version: 1\nallow:\n"+hosts)
		return path
	}
	alphaPolicy := policy(alpha, "  - host: allowed.test\n    ports: [443]\n")
	betaPolicy := policy(beta, "  - host: www.allowed.test\n    ports: [443]\n")
	policy(gamma, "  - host: chain.allowed.test\n    ports: [443]\n")
	config := filepath.Join(dir, "serve.yaml")
	header := serveHeader(journalPath) + "ui: 127.0.0.1:8099\nagents:\n"
	agentA := serveAgent(alpha, "198.18.0.0/30", "2001:db8:a::/64")
	agentB := serveAgent(beta, "198.18.0.4/30", "2001:db8:b::/64")
	agentC := serveAgent(gamma, "198.18.0.8/30", "2001:db8:c::/64")
	writeAtomic(t, config, header+agentA+agentB)

	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=2")
	for _, name := range []string{alpha, beta} {
		if !s.logged("gateway ready", "agent="+name) || !w.hasTable(t, name) {
			t.Errorf("agent %s: no gateway ready in the log, or no table", name)
		}
	}
	runs := st.status(t)
	if runs[alpha].State != "alive" || runs[beta].State != "alive" || runs[alpha].PID != s.cmd.Process.Pid {
		t.Errorf("status: %+v", runs)
	}

	// A policy file changed on disk: reloaded for its agent, and only it.
	policy(alpha, "  - host: allowed.test\n    ports: [443]\n  - host: chain.allowed.test\n    ports: [443]\n")
	s.waitLogged(t, "policy reloaded", "agent="+alpha)
	s.waitLogged(t, "serve config reloaded", `trigger="a file changed"`, "reloaded=1")
	waitFor(t, func() bool { return len(policyChanges(t, journalPath, alpha)) > 0 }) // the journal stores after the log line
	if got := policyChanges(t, journalPath, alpha); len(got) != 1 || !strings.Contains(got[0].Detail, "reload of "+alphaPolicy) {
		t.Errorf("alpha's policy changes in the journal: %+v", got)
	}
	if got := policyChanges(t, journalPath, beta); len(got) != 0 {
		t.Errorf("beta's policy changed with alpha's file: %+v", got)
	}

	// Changed in place with its size and time kept: only SIGHUP tells.
	fi, err := os.Stat(betaPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(betaPolicy, []byte("version: 1\nallow:\n  - host: abc.allowed.test\n    ports: [443]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(betaPolicy, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	s.signal(t, syscall.SIGHUP)
	s.waitLogged(t, "serve config reloaded", "trigger=SIGHUP", "reloaded=1")
	if !s.logged("policy reloaded", "agent="+beta) {
		t.Error("beta's policy was not reloaded on SIGHUP")
	}
	waitFor(t, func() bool { return len(policyChanges(t, journalPath, beta)) == 1 })

	// A broken policy: the one in force stays, and the log says why.
	before := policyChanges(t, journalPath, alpha)
	policy(alpha, "  - host: allowed.test\n    ports: [99999]\n")
	s.waitLogged(t, "serve config has errors: the agents they concern keep what is in force", alphaPolicy+":4: allow[0].ports[0]")
	s.waitLogged(t, "agent "+alpha+": its entry or policy has errors (above): it keeps what is in force")
	// Logged just after the lines above: waited for, not looked up.
	s.waitLogged(t, "serve config reloaded", "result=partial")
	if got := policyChanges(t, journalPath, alpha); len(got) != len(before) {
		t.Errorf("a broken policy changed alpha's: %+v", got[len(before):])
	}

	// An agent added to the config starts; one removed is torn down.
	writeAtomic(t, config, header+agentA+agentC)
	s.waitLogged(t, "agent added", "agent="+gamma)
	s.waitLogged(t, "agent removed from the config: tearing it down", "agent="+beta)
	s.waitLogged(t, "serve config reloaded", "added=1", "removed=1")
	if !w.hasTable(t, gamma) || w.hasTable(t, beta) || !w.hasTable(t, alpha) {
		t.Errorf("tables after adding %s and removing %s: %s", gamma, beta, w.gw.Run(t, "nft", "list", "tables"))
	}
	runs = st.status(t)
	if _, ok := runs[beta]; ok || runs[gamma].State != "alive" {
		t.Errorf("status after the change: %+v", runs)
	}

	// What an agent's gateway counts of itself, once it has been used.
	r := s.agentShell(t, alpha, "198.18.0.1", prelude+"try own "+w.curl()+" https://allowed.test/\n")
	expect(t, r, map[string]string{"own": ok})
	m := w.gw.Run(t, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:8099/metrics")
	for _, series := range []string{
		"sluice_set_elements", "sluice_pins", "sluice_proxy_connections_total",
		"sluice_journal_records_written_total", "sluice_dns_answer_duration_seconds_count",
	} {
		got := regexp.MustCompile(`(?m)^` + series + `\{agent="` + regexp.QuoteMeta(alpha) + `"\} ([0-9.e+]+)$`).FindStringSubmatch(m)
		if v, _ := strconv.ParseFloat(append(got, "", "")[1], 64); v < 1 {
			t.Errorf("metrics: %s of %s = %q, want at least 1 after a request", series, alpha, append(got, "", "")[1])
		}
	}
	for _, want := range []string{
		`sluice_journal_records_dropped_total{agent="` + alpha + `"} 0`,
		`sluice_agent_up{agent="` + alpha + `"} 1`,
		`sluice_agent_up{agent="` + gamma + `"} 1`,
		`sluice_decisions_total{agent="` + alpha + `",layer="policy",reason="policy_reloaded",verdict="changed"} 1`,
		`sluice_reloads_total{result="partial"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(m, `agent="`+beta+`"`) {
		t.Errorf("metrics keep the removed agent %s", beta)
	}

	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	if strings.Contains(readFile(s.log), "level=ERROR") && strings.Contains(readFile(s.log), "incomplete") {
		t.Error("a teardown was incomplete")
	}
	w.assertClean(t)
}

// agentShell runs sh -c SCRIPT in a served agent's namespace, as a
// person would with ip netns exec, with a resolv.conf naming the
// agent's gateway (any address would do: DNS is redirected to sluice).
// It enters serve's mount namespace first: serve runs in a private one
// (privateState), where it binds the agents' namespaces in /run/netns.
func (s *serveRun) agentShell(t *testing.T, agent, gw, script string) result {
	t.Helper()
	run := s.agentScript(t, agent, gw, script)
	r, err := run()
	r.code = exitCode(t, err)
	t.Logf("in %s:\n%s\nstdout:\n%s\nstderr:\n%s", agent, script, r.stdout, r.stderr)
	return r
}

// agentScript prepares agentShell's command on the test's goroutine and
// returns what runs it, which may run on another (it touches no t): its
// result, and the error of the command for exitCode.
func (s *serveRun) agentScript(t *testing.T, agent, gw, script string) func() (result, error) {
	t.Helper()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+gw+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const mountResolv = `mount --bind "$0" /etc/resolv.conf && exec "$@"`
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(s.cmd.Process.Pid), "-m", "--",
		"unshare", "-m", "--propagation", "private", "sh", "-c", mountResolv, resolv,
		"ip", "netns", "exec", gateway.NamespacePrefix+agent, "sh", "-c", script)
	return func() (result, error) {
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		return result{stdout: stdout.String(), stderr: stderr.String()}, err
	}
}

// TestServeAgentsIsolated: two agents of one serve with different
// policies cannot use each other's allowances: a name one may resolve
// does not resolve for the other, and an address one resolved (in its
// sets, its pins) opens nothing for the other. Nor does an allowed name
// whose answer is the other agent's address, or one in the agents' pool.
func TestServeAgentsIsolated(t *testing.T) {
	w := newServeWorld(t) // its zone has *.peer.test
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	alpha, beta := id+"-alpha", id+"-beta"
	writeAtomic(t, filepath.Join(dir, alpha+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [443, 9443]\n  - host: '*.peer.test'\n    ports: [443]\n")
	writeAtomic(t, filepath.Join(dir, beta+".yaml"), "version: 1\nallow:\n  - host: www.allowed.test\n    ports: [443]\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n"+
		serveAgent(alpha, "198.18.0.0/30", "2001:db8:a::/64")+serveAgent(beta, "198.18.0.4/30", "2001:db8:b::/64"))
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=2")

	c := w.curl()
	a := s.agentShell(t, alpha, "198.18.0.1", prelude+`
try a_own `+c+` https://allowed.test/
try a_fwd nc -z -w 2 `+allowedAddr+` 9443
echo "a_other=$(dig +short www.allowed.test A)"
try a_other_tls `+c+` --resolve www.allowed.test:443:`+allowedAddr+` https://www.allowed.test/
echo "a_peer_ok=$(dig +short ok.peer.test A)"
echo "a_peer_beta=$(dig +short beta.peer.test A)"
echo "a_peer_pool=$(dig +short pool.peer.test A)"
`)
	expect(t, a, map[string]string{"a_own": ok, "a_fwd": "0", "a_other": "", "a_other_tls": curlRefused,
		"a_peer_ok": allowedAddr, "a_peer_beta": "", "a_peer_pool": ""})
	// alpha's sets now hold allowed.test's address on 443 and 9443, and
	// its pins the name: none of it is beta's.
	b := s.agentShell(t, beta, "198.18.0.5", prelude+`
try b_own `+c+` https://www.allowed.test/
echo "b_other=$(dig +short allowed.test A)"
try b_other_tls `+c+` --resolve allowed.test:443:`+allowedAddr+` https://allowed.test/
try b_other_fwd nc -z -w 2 `+allowedAddr+` 9443
`)
	expect(t, b, map[string]string{"b_own": ok, "b_other": "", "b_other_tls": curlRefused, "b_other_fwd": "1"})
	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
}

// TestServeNoFlowInherited: a tracked flow an earlier agent left on the
// networks of serve's agents (planted: established, from an agent's
// address) is gone before they start, although serve deletes them once
// for all its agents instead of once each: the same source port to the
// same destination does not pass as established. The control: the
// agent's allowed flows pass.
func TestServeNoFlowInherited(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	alpha, beta := id+"-alpha", id+"-beta"
	w.inet.Run(t, "ip", "route", "add", "198.18.0.0/29", "via", "198.18.1.1")
	plantEstablished(t, w, "198.18.0.6") // beta's address
	for _, a := range []string{alpha, beta} {
		writeAtomic(t, filepath.Join(dir, a+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [9443]\n")
	}
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n"+
		serveAgent(alpha, "198.18.0.0/30", "2001:db8:a::/64")+serveAgent(beta, "198.18.0.4/30", "2001:db8:b::/64"))
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=2")
	expectNoStaleFlow(t, w, s, beta, "198.18.0.5")
	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
}

// expectNoStaleFlow checks, from agent (whose gateway is gw), that the
// flow plantEstablished left does not pass for this agent's (the same
// source port to the same destination is refused, and evil:4444 sees
// nothing), and, as the control, that the agent's allowed flow to
// allowed.test:9443 does.
func expectNoStaleFlow(t *testing.T, w *world, s *serveRun, agent, gw string) {
	t.Helper()
	r := s.agentShell(t, agent, gw, prelude+`
try fwd nc -z -w 2 allowed.test 9443
try stale nc -z -w 3 -p 40005 `+evilAddr+` 4444
`)
	expect(t, r, map[string]string{"fwd": "0", "stale": "1"})
	noStaleContacts(t, w)
}

// TestServeKill9NoFlowInherited: after a kill -9 of serve, a tracked flow
// left on the network of an agent whose link comes from the pool (planted
// while serve is dead: established, from the agent's address) is gone
// before the next start serves the agent again: the same source port to
// the same destination does not pass as established. The control: the
// agent's allowed flows pass after the restart.
func TestServeKill9NoFlowInherited(t *testing.T) {
	w := newServeWorld(t)
	st := newHeldState(t) // the agent's namespace, and its link, outlive serve
	dir := t.TempDir()
	alpha := nstest.Prefix()[2:] + "-alpha"
	writeAtomic(t, filepath.Join(dir, alpha+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [9443]\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n  - name: "+alpha+"\n    policy: "+alpha+".yaml\n")
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1")
	// The pool's first slot: the gateway 198.19.255.253, the agent .254.
	const gw, agent = "198.19.255.253", "198.19.255.254"
	expect(t, s.agentShell(t, alpha, gw, prelude+"try fwd nc -z -w 2 allowed.test 9443\n"), map[string]string{"fwd": "0"})
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	w.inet.Run(t, "ip", "route", "add", "198.19.255.252/30", "via", "198.18.1.1")
	plantEstablished(t, w, agent)
	again := startServe(t, w, st, config)
	again.waitLogged(t, "serve ready", "agents=1")
	if !again.logged("gateway ready", "agent="+alpha, "adopted=true") {
		t.Error("the next start did not adopt the agent's namespace")
	}
	expectNoStaleFlow(t, w, again, alpha, gw)
	if code := again.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
}

// TestServeReloadRevokes: a host removed from an agent's policy loses
// its open connections, the proxied (TLS) and the forwarded, while the
// connection to a host that stayed works on. (One agent: the other
// agents' policies are not reloaded, TestServeAgentsAndReload.)
func TestServeReloadRevokes(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	alpha := id + "-alpha"
	policyPath := filepath.Join(dir, alpha+".yaml")
	writeAtomic(t, policyPath, "version: 1\nallow:\n  - host: allowed.test\n    ports: [443, 9443]\n  - host: www.allowed.test\n    ports: [443]\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n"+serveAgent(alpha, "198.18.0.0/30", "2001:db8:a::/64"))
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1")

	ready := filepath.Join(dir, "ready")
	exe, _ := os.Executable()
	type ran struct {
		r   result
		err error
	}
	done := make(chan ran, 1)
	run := s.agentScript(t, alpha, "198.18.0.1", prelude+`
dig +short allowed.test A >/dev/null
dig +short www.allowed.test A >/dev/null
`+watchEnv+`=1 GORACE=atexit_sleep_ms=0 `+exe+` `+ready+` 3
`)
	go func() { // no t here: the result is judged on the test's goroutine
		r, err := run()
		done <- ran{r, err}
	}()
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	writeAtomic(t, policyPath, "version: 1\nallow:\n  - host: www.allowed.test\n    ports: [443]\n")
	reloaded := time.Now()
	s.signal(t, syscall.SIGHUP)
	got := <-done
	r := got.r
	r.code = exitCode(t, got.err)
	t.Logf("in %s:\nstdout:\n%s\nstderr:\n%s", alpha, r.stdout, r.stderr)
	expect(t, r, map[string]string{"revoked_tls": "reset", "revoked_fwd": "reset", "kept_tls": "ok"})
	v := r.values()
	for _, name := range []string{"revoked_tls", "revoked_fwd"} {
		if at, err := strconv.ParseInt(v[name+"_at"], 10, 64); err == nil {
			t.Logf("%s cut %s after the SIGHUP", name, time.Unix(0, at).Sub(reloaded).Round(time.Millisecond))
		}
	}
	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
}
