package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/testing/fakenet"
	"github.com/sluicegw/sluice/testing/nstest"
)

// The agent's own addresses on the test network (the second of each
// prefix of sluiceArgs).
const (
	agentAddr  = "198.18.0.2"
	agentAddr6 = "2001:db8:a::2"
)

// agentRun is a `sluice run` whose command keeps running while the test
// acts from outside. Its output goes to files, not pipes: an agent that
// outlives sluice (after a kill) would hold a pipe open, and the test can
// read what sluice logged while it runs.
type agentRun struct {
	cmd            *exec.Cmd
	stdout, stderr string // file paths
}

// startAgent starts `sluice run FLAGS -- sh -c SCRIPT` in the gateway; the
// test ends it with wait. Whatever happens, it is not left running, and
// a failed test shows what it printed.
func startAgent(t *testing.T, w *world, flags []string, script string) *agentRun {
	t.Helper()
	args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs(flags...)...), "--", "sh", "-c", script)
	return launchAgent(t, exec.Command("ip", args...))
}

// launchAgent starts cmd, a `sluice run`, with its output in files; the
// test ends it with wait. Whatever happens, it is not left running, and a
// failed test shows what it printed.
func launchAgent(t *testing.T, cmd *exec.Cmd) *agentRun {
	t.Helper()
	dir := t.TempDir()
	a := &agentRun{cmd: cmd, stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr")}
	out, err := os.Create(a.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errOut, err := os.Create(a.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer errOut.Close()
	a.cmd.Stdout, a.cmd.Stderr = out, errOut
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			// SIGTERM first: sluice relays it and tears down, agent and
			// all; a SIGKILL would leave the agent running, cut off, for
			// the world's clean-up to end.
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = a.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = a.cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", readFile(a.stdout), readFile(a.stderr))
		}
	})
	return a
}

// pid is sluice's: ip execs it in place.
func (a *agentRun) pid() int { return a.cmd.Process.Pid }

// logged is what sluice has written to its standard error so far.
func (a *agentRun) logged() string { return readFile(a.stderr) }

// kill kills sluice with SIGKILL and reaps it; its agent lives on.
func (a *agentRun) kill(t *testing.T) {
	t.Helper()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
}

// wait waits for sluice to exit and returns what the run printed.
func (a *agentRun) wait(t *testing.T) result {
	t.Helper()
	err := a.cmd.Wait()
	r := result{stdout: readFile(a.stdout), stderr: readFile(a.stderr)}
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	if err != nil {
		t.Errorf("sluice run: %v", err)
	}
	return r
}

// stall stops sluice (SIGSTOP; SIGCONT when the test ends, whatever
// happens), waits until the kernel has it stopped, then until the
// heartbeat's promised 3 s and a margin have passed, and returns when it
// stopped it.
func stall(t *testing.T, a *agentRun) time.Time {
	t.Helper()
	pid := a.pid()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != sluiceBin {
		t.Fatalf("process %d runs %q (%v), not sluice %s", pid, exe, err, sluiceBin)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitFor(t, func() bool { return processState(pid) == "T" })
	// Timing is what is tested here: the first attempt after the promise.
	time.Sleep(time.Until(stopped.Add(firewall.DefaultHeartbeat + 500*time.Millisecond)))
	return stopped
}

// fileFlag returns a path in dir and the shell line that waits for it.
func fileFlag(dir, name string) (path, wait string) {
	path = filepath.Join(dir, name)
	return path, "while [ ! -e " + path + " ]; do sleep 0.02; done\n"
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// counters adds, in ns, a table of its own with a counter for each of
// matches (nft rule text, such as "ip daddr 192.0.2.1") at the forward
// and output hooks, ahead of sluice's chains, so that a test can tell
// packets that reached the gateway from packets that never came. It
// returns a function that reads the counts, keyed "forward MATCH" and
// "output MATCH".
func counters(t *testing.T, ns *nstest.NS, matches ...string) func() map[string]int {
	t.Helper()
	const table = "e2ecount" // not "sluice": assertClean looks for that
	var rules string
	for _, m := range matches {
		rules += " " + m + " counter;"
	}
	ruleset := "table inet " + table + " {\n" +
		"	chain forward { type filter hook forward priority -300;" + rules + " }\n" +
		"	chain output { type filter hook output priority -300;" + rules + " }\n}\n"
	f := filepath.Join(t.TempDir(), "count.nft")
	if err := os.WriteFile(f, []byte(ruleset), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "nft", "-f", f)
	t.Cleanup(func() { _ = ns.Cmd("nft", "delete", "table", "inet", table).Run() })
	return func() map[string]int {
		out := map[string]int{}
		chain := ""
		for _, line := range strings.Split(ns.Run(t, "nft", "list", "table", "inet", table), "\n") {
			line = strings.TrimSpace(line)
			if c, ok := strings.CutPrefix(line, "chain "); ok {
				chain = strings.Fields(c)[0]
			}
			if m, n, ok := strings.Cut(line, " counter packets "); ok {
				packets, _ := strconv.Atoi(strings.Fields(n)[0])
				out[chain+" "+m] = packets
			}
		}
		return out
	}
}

// outcome runs a client and names what happened: "ok" (exit 0), or the
// exit status, with its combined output for the log.
func outcome(cmd *exec.Cmd) (string, string) {
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return strconv.Itoa(ee.ExitCode()), string(out)
	} else if err != nil {
		return err.Error(), string(out)
	}
	return "ok", string(out)
}

// TestNothingStartsAFlowIntoTheAgent: the agent listens on TCP (v4 and
// v6) and UDP, and answers pings; the fake internet, routed to the
// agent's network through the gateway, can neither open a flow to it nor
// get a datagram or an echo request into it, although its packets reach
// the gateway's forward hook on their way in. The control: the same
// listeners and the same kernel, reached from inside the agent, receive.
func TestNothingStartsAFlowIntoTheAgent(t *testing.T) {
	w := newWorld(t)
	w.inet.Run(t, "ip", "route", "add", agentNet, "via", "198.18.1.1")
	probeIntoAgent(t, w, w.inet, "forward")
}

// TestGatewayStartsNoFlowIntoTheAgent: the same from the gateway
// namespace itself (the host's, in a real deployment), whose packets to
// the agent leave through the output hook.
func TestGatewayStartsNoFlowIntoTheAgent(t *testing.T) {
	w := newWorld(t)
	probeIntoAgent(t, w, w.gw, "output")
}

// TestRefusalsReachTheAgent: the resets and ICMP errors that the input
// and forward chains send back leave the gateway through its output hook,
// like any packet of the gateway's own towards the agent; they must reach
// the agent, which then fails at once, as must the answers of the
// resolver and the proxy (the controls on the same path). A refusal shows
// as an error message (connection refused, packet filtered,
// administratively prohibited, host unreachable, permission denied);
// a lost one as a timeout, with none.
func TestRefusalsReachTheAgent(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	pol := policyFile(t, "  - host: allowed.test\n    ports: [22, 443]\n")
	r := w.run(t, []string{"--policy", pol}, prelude+`refused() { n=$1; shift; out=$("$@" 2>&1); case $out in
  *"Connection refused"*|*"Packet filtered"*|*"Administratively prohibited"*|*"host unreachable"*|*"permission denied"*) r=refused;; *) r=other;; esac
  echo "$n=$r"; }
echo dns=$(dig +short +time=2 +tries=1 allowed.test)
try tls `+c+` https://allowed.test/
try tcp_allowed nc -z -w 2 `+allowedAddr+` 22
refused fwd_tcp4 nc -z -v -w 3 `+evilAddr+` 22
refused fwd_tcp6 nc -6 -z -v -w 3 `+evilAddr6+` 22
refused fwd_udp4 dig +time=3 +tries=1 -p 5000 @`+evilAddr+` x.test
refused fwd_udp6 dig +time=3 +tries=1 -p 5000 @`+evilAddr6+` x.test
refused fwd_ping4 ping -c 1 -W 3 `+evilAddr+`
refused fwd_ping6 ping -6 -c 1 -W 3 `+evilAddr6+`
refused in_tcp4 nc -z -v -w 3 `+gwAddr+` 22
refused in_tcp6 nc -6 -z -v -w 3 2001:db8:a::1 22
refused in_udp4 dig +time=3 +tries=1 -p 5000 @`+gwAddr+` x.test
refused in_ping4 ping -c 1 -W 3 `+gwAddr+`
refused in_ping6 ping -6 -c 1 -W 3 2001:db8:a::1
`)
	want := map[string]string{"dns": allowedAddr, "tls": ok, "tcp_allowed": ok}
	for _, k := range []string{"fwd_tcp4", "fwd_tcp6", "fwd_udp4", "fwd_udp6", "fwd_ping4", "fwd_ping6",
		"in_tcp4", "in_tcp6", "in_udp4", "in_ping4", "in_ping6"} {
		want[k] = "refused"
	}
	expect(t, r, want)
}

// TestStalledRefusesProxiedAndDNS: the README promises that when sluice
// stalls, the agent's new connections are refused within 3 s and its DNS
// goes to a closed port. A new TLS connection (redirected to the proxy)
// and a DNS query, which both worked just before the stop, must then be
// refused (a reset, an ICMP port unreachable), not left hanging; both are
// logged as gateway_not_alive, and both work again once sluice continues.
func TestStalledRefusesProxiedAndDNS(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	ready, _ := fileFlag(dir, "ready")
	goFile, waitGo := fileFlag(dir, "go")
	probed, _ := fileFlag(dir, "probed")
	resume, waitResume := fileFlag(dir, "resume")
	c := w.curl() + " --connect-timeout 2 -m 4 --resolve allowed.test:443:" + allowedAddr
	script := prelude + `dns() { out=$(dig +time=2 +tries=1 @` + gwAddr + ` allowed.test 2>&1); case $out in
  *NOERROR*) r=answered;; *refused*) r=refused;; *"timed out"*) r=timeout;; *) r=other;; esac; echo "$1=$r"; }
dns dns_before
try tls_before ` + c + ` https://allowed.test/
touch ` + ready + "\n" + waitGo + `echo stalled_at=$(date +%s%N)
try tls_stalled ` + c + ` https://allowed.test/
dns dns_stalled
touch ` + probed + "\n" + waitResume + `dns dns_resumed
try tls_resumed ` + c + ` https://allowed.test/
`
	a := startAgent(t, w, []string{"--allow", "allowed.test"}, script)
	pid := a.pid()
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	stopped := stall(t, a)
	touch(t, goFile)
	waitFor(t, func() bool { _, err := os.Stat(probed); return err == nil })
	if st := processState(pid); st != "T" {
		t.Fatalf("sluice is in state %q after the probes, not stopped: they did not test a stall", st)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The heartbeat returns with sluice's next tick.
	waitFor(t, func() bool {
		return strings.Contains(w.gw.Run(t, "nft", "list", "set", "inet", agentTable, "alive"), "elements")
	})
	touch(t, resume)
	r := a.wait(t)
	expect(t, r, map[string]string{"dns_before": "answered", "tls_before": ok, "tls_stalled": curlRefused, "dns_stalled": "refused",
		"dns_resumed": "answered", "tls_resumed": ok})
	if at, err := strconv.ParseInt(r.values()["stalled_at"], 10, 64); err != nil {
		t.Errorf("no time of the stalled probes: %v", err)
	} else if late := time.Unix(0, at).Sub(stopped); late > heartbeatBound {
		t.Errorf("the stalled probes started %v after the stop, past %v: they do not test the promise", late, heartbeatBound)
	}
	for _, proto := range []string{"tcp", "udp"} {
		found := false
		for _, line := range strings.Split(r.stderr, "\n") {
			found = found || strings.Contains(line, "reason=gateway_not_alive dst="+gwAddr+":") && strings.Contains(line, "proto="+proto)
		}
		if !found {
			t.Errorf("no %s refusal to the gateway logged as gateway_not_alive", proto)
		}
	}
	w.assertClean(t)
}

// probeIntoAgent runs an agent with listeners, probes them from ns with
// real clients, and checks that nothing arrived while the packets were
// counted at hook in the gateway, and that the agent's own control did.
func probeIntoAgent(t *testing.T, w *world, from *nstest.NS, hook string) {
	t.Helper()
	count := counters(t, w.gw, "ip daddr "+agentAddr, "ip6 daddr "+agentAddr6)
	dir := t.TempDir()
	ready, _ := fileFlag(dir, "ready")
	goFile, waitGo := fileFlag(dir, "go")
	in := func(name string) string { return filepath.Join(dir, name) }
	echos := `$(awk '/^Icmp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "InEchos") c = i; n = 1 } else print $c }' /proc/net/snmp)`
	script := `echo addr4=$(ip -4 -br addr show dev eth0 | awk '{print $3}')
echo addr6=$(ip -6 -br addr show dev eth0 scope global | awk '{print $3}')
nc -4 -lk ` + agentAddr + ` 7000 > ` + in("tcp4") + ` & p1=$!
nc -6 -lk ` + agentAddr6 + ` 7006 > ` + in("tcp6") + ` & p2=$!
nc -4 -lku ` + agentAddr + ` 7001 > ` + in("udp4") + ` & p3=$!
while ! ss -Hltn | grep -q ':7000 ' || ! ss -Hltn | grep -q ':7006 ' || ! ss -Hlun | grep -q ':7001 '; do sleep 0.02; done
echo echos_before=` + echos + `
touch ` + ready + "\n" + waitGo + `echo echos_outside=` + echos + `
echo control4 | nc -4 -N -w 2 ` + agentAddr + ` 7000
echo control6 | nc -6 -N -w 2 ` + agentAddr6 + ` 7006
echo control | nc -4 -u -w 1 ` + agentAddr + ` 7001
ping -c 1 -W 1 ` + agentAddr + ` >/dev/null
echo echos_control=` + echos + `
for f in tcp4 tcp6 udp4; do
  i=0; while ! grep -q control ` + dir + `/$f && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done
  echo "got_$f=$(tr '\n' ' ' < ` + dir + `/$f)"
done
kill $p1 $p2 $p3
`
	a := startAgent(t, w, nil, script)
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })

	probes := map[string]*exec.Cmd{
		"tcp4": from.Cmd("sh", "-c", "echo outside | nc -4 -N -v -w 2 "+agentAddr+" 7000"),
		"tcp6": from.Cmd("sh", "-c", "echo outside | nc -6 -N -v -w 2 "+agentAddr6+" 7006"),
		"udp4": from.Cmd("sh", "-c", "for i in 1 2 3; do echo outside; done | nc -4 -u -w 1 "+agentAddr+" 7001"),
		"ping": from.Cmd("ping", "-c", "2", "-i", "0.2", "-W", "1", agentAddr),
	}
	for name, cmd := range probes {
		res, out := outcome(cmd)
		t.Logf("%s from %s: exit %s\n%s", name, from.Name, res, out)
		if name != "udp4" && res == "ok" {
			t.Errorf("%s from %s reached the agent (a connection or an answer)", name, from.Name)
		}
	}
	seen := count()
	touch(t, goFile)
	r := a.wait(t)
	t.Logf("packets counted on their way to the agent: %v", seen)
	expect(t, r, map[string]string{"addr4": agentAddr + "/30", "addr6": agentAddr6 + "/64"})
	v := r.values()
	for _, f := range []string{"tcp4", "tcp6", "udp4"} {
		if !strings.Contains(v["got_"+f], "control") {
			t.Errorf("the agent's %s listener did not receive the agent's own control (%q): the test tests nothing", f, v["got_"+f])
		}
		if strings.Contains(v["got_"+f], "outside") {
			t.Errorf("the agent's %s listener received from %s: %q", f, from.Name, v["got_"+f])
		}
	}
	if v["echos_before"] == "" || v["echos_before"] != v["echos_outside"] {
		t.Errorf("echo requests from %s reached the agent: InEchos %q before, %q after", from.Name, v["echos_before"], v["echos_outside"])
	}
	if v["echos_control"] == v["echos_outside"] {
		t.Errorf("the agent's own ping was not counted (InEchos %q): the test tests nothing", v["echos_control"])
	}
	for _, dst := range []string{"ip daddr " + agentAddr, "ip6 daddr " + agentAddr6} {
		if seen[hook+" "+dst] == 0 {
			t.Errorf("no packet counted at the gateway's %s hook to %s: the probes did not come the way the test means", hook, dst)
		}
	}
	w.assertClean(t)
}

// TestRefusalLogRateLimit floods a refused UDP destination from the agent
// for a while: the firewall logs the refusals at up to 50 packets a
// second per refusing rule after a burst of 100, so the log lines for the
// flood number more than none and at most that, while every packet,
// logged or not, is still refused (none reaches the sink) and the
// gateway counted far more packets than the limit lets through to the
// log.
func TestRefusalLogRateLimit(t *testing.T) {
	const (
		burst, rate = 100, 50 // the README's figures
		slack       = 5
		flood       = 1500 * time.Millisecond // long enough for the rate, not only the burst
		port        = "51820"                 // a UDP sink of the fake internet that no test allows
	)
	w := newWorld(t)
	match := "ip daddr " + evilAddr + " udp dport " + port
	count := counters(t, w.gw, match)
	r := w.run(t, nil, `t0=$(date +%s%N)
bash -c 'exec 3>/dev/udp/`+evilAddr+`/`+port+`; end=$((${EPOCHREALTIME/./} + `+strconv.Itoa(int(flood/time.Microsecond))+`))
  while [ ${EPOCHREALTIME/./} -lt $end ]; do for i in 1 2 3 4 5 6 7 8 9 10; do echo x >&3; done; done' 2>/dev/null
t1=$(date +%s%N)
echo flood_ns=$((t1 - t0))
`)
	seen := count()["forward "+match]
	elapsedNs, err := strconv.ParseInt(r.values()["flood_ns"], 10, 64)
	if err != nil {
		t.Fatalf("no duration of the flood: %v", err)
	}
	elapsed := time.Duration(elapsedNs)
	logged := 0
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "reason=no_set_entry") && strings.Contains(line, "dst="+evilAddr+":"+port) {
			logged++
		}
	}
	bound := burst + int(rate*elapsed.Seconds()) + slack
	t.Logf("%d packets of the flood reached the gateway in %v, %d were logged (at most %d allowed)", seen, elapsed.Round(time.Millisecond), logged, bound)
	if seen <= 2*bound {
		t.Fatalf("only %d packets reached the gateway, not far past the limit's %d: the test tests nothing", seen, bound)
	}
	if logged == 0 {
		t.Errorf("no refusal of the flood was logged")
	}
	if logged > bound {
		t.Errorf("%d refusals logged in %v; the limit allows at most %d (burst %d, %d a second, slack %d)", logged, elapsed.Round(time.Millisecond), bound, burst, rate, slack)
	}
	var through []fakenet.Contact
	for _, c := range w.sinkContacts() {
		if c.Local == evilAddr+":"+port {
			through = append(through, c)
		}
	}
	noContacts(t, "the flood's sink, past the log limit", through)
}
