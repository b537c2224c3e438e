package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/testing/fakenet"
	"github.com/sluicegw/sluice/testing/nstest"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// TestSIGKILLFailsClosed kills sluice while the agent lives: the agent must
// reach nothing new (not even an address it resolved before), and the next
// start in the same gateway must undo what the dead run left.
func TestSIGKILLFailsClosed(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	ready, goFile, done, out := filepath.Join(dir, "ready"), filepath.Join(dir, "go"), filepath.Join(dir, "done"), filepath.Join(dir, "out")
	c := w.curl()
	script := prelude + `exec >` + out + ` 2>&1
try before ` + c + ` https://allowed.test/
touch ` + ready + `
while [ ! -e ` + goFile + ` ]; do sleep 0.05; done
try after_ip ` + c + ` --resolve allowed.test:443:` + allowedAddr + ` https://allowed.test/
try after_dns dig +time=1 +tries=1 @` + gwAddr + ` allowed.test
try after_dns_ext dig +time=1 +tries=1 @` + publicDNS + ` x.evil.test
try after_evil nc -z -w 2 ` + evilAddr + ` 443
touch ` + done + `
sleep 2
`
	args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs("--allow", "allowed.test")...), "--", "sh", "-c", script)
	cmd := exec.Command("ip", args...)
	// A file, not a pipe: the agent outlives sluice and holds its copy of
	// sluice's stderr, so Wait would wait for a pipe's copier forever.
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	lapsed := heartbeatLapses(t, w, killed)
	t.Logf("the heartbeat element lapsed %v after the kill", lapsed.Round(time.Millisecond))
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(done); return err == nil })
	b, _ := os.ReadFile(out)
	r := result{stdout: string(b)}
	t.Logf("agent output after sluice was killed:\n%s", b)
	expect(t, r, map[string]string{"before": ok, "after_ip": curlRefused, "after_dns": "9", "after_dns_ext": "9", "after_evil": "1"})
	noContacts(t, "an attacker endpoint", w.sinkContacts())
	if q := w.auth.AskedAbout("evil.test"); len(q) > 0 {
		t.Errorf("queries after the kill reached the upstream: %v", q)
	}

	// The agent still lives (it sleeps), and so do its namespace and link;
	// the table, the forwarding sysctls and the state record remain too.
	// The next start, on the same agent network, removes them all.
	if out := w.gw.Run(t, "nft", "list", "tables"); !strings.Contains(out, "sluice") {
		t.Fatalf("the killed run's table is already gone; the test does not test recovery")
	}
	// The dead run's link is not asked for by name: when the recovery ends
	// the agent, the link may go with the agent's namespace before the
	// recovery gets to it. w.run checks that no agent link is left.
	r = w.run(t, nil, "true")
	for _, want := range []string{"removed table inet " + agentTable, "restored net/ipv4/ip_forward=0", ".resolv.conf"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("next start did not report %q:\n%s", want, r.stderr)
		}
	}
}

// heartbeatBound is how long after sluice stops refreshing the heartbeat
// (killed or stalled) its element may still be in the set: the promised
// lifetime plus a margin for the last refresh's commit and the polling.
const heartbeatBound = firewall.DefaultHeartbeat + 1500*time.Millisecond

// heartbeatLapses polls the gateway's heartbeat set until its element is
// gone and returns how long after since that was seen; it fails t as soon
// as the element is seen present later than heartbeatBound after since.
func heartbeatLapses(t *testing.T, w *world, since time.Time) time.Duration {
	t.Helper()
	for {
		at := time.Since(since) // the listing below shows the set at or after this
		set := w.gw.Run(t, "nft", "list", "set", "inet", agentTable, "alive")
		if !strings.Contains(set, "elements") {
			return time.Since(since)
		}
		if at > heartbeatBound {
			t.Fatalf("the heartbeat element is still in the set %v after sluice stopped refreshing it (promised: %v):\n%s",
				at.Round(time.Millisecond), firewall.DefaultHeartbeat, set)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probeTCP defines `probe NAME ADDR PORT`, which connects with nc and
// prints NAME=connected, NAME=refused (a reset or an ICMP reject),
// NAME=timeout or NAME=other, so that a refusal is told from a hang.
const probeTCP = `probe() { out=$(nc -zv -w 2 "$2" "$3" 2>&1); case $out in
  *succeeded*) r=connected;; *refused*|*prohibited*|*unreachable*) r=refused;; *"timed out"*) r=timeout;; *) r=other;; esac
  echo "$1=$r"; }
`

// TestStalledFailsClosed stops sluice (SIGSTOP) while the agent lives: the
// heartbeat is no longer refreshed, so within its 3 s lifetime the agent's
// new connections are refused, even to an address it resolved before and
// that the same probe reached just before the stop. Once sluice continues
// (SIGCONT) the heartbeat returns, the path works again and sluice exits
// cleanly when its command ends.
func TestStalledFailsClosed(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	waitFile := func(name string) string {
		return "while [ ! -e " + file(name) + " ]; do sleep 0.02; done\n"
	}
	// allowed.test:22 is a forwarded port (not the proxy's): only the
	// sets and the heartbeat decide.
	script := prelude + probeTCP + `dig +short allowed.test >/dev/null
probe before ` + allowedAddr + ` 22
touch ` + file("ready") + "\n" + waitFile("go") + `echo stalled_at=$(date +%s%N)
probe stalled ` + allowedAddr + ` 22
touch ` + file("probed") + "\n" + waitFile("resume") + `probe resumed ` + allowedAddr + ` 22
`
	a := startAgent(t, w, []string{"--allow", "allowed.test:22"}, script)
	waitFor(t, func() bool { _, err := os.Stat(file("ready")); return err == nil })
	stopped := stall(t, a)
	if err := os.WriteFile(file("go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(file("probed")); return err == nil })
	pid := a.pid()
	if st := processState(pid); st != "T" {
		t.Fatalf("sluice is in state %q after the probe, not stopped: the probe did not test a stall", st)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The heartbeat returns with sluice's next tick.
	waitFor(t, func() bool {
		return strings.Contains(w.gw.Run(t, "nft", "list", "set", "inet", agentTable, "alive"), "elements")
	})
	if err := os.WriteFile(file("resume"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := a.wait(t) // fails the test unless sluice exits cleanly after SIGSTOP and SIGCONT
	expect(t, r, map[string]string{"before": "connected", "stalled": "refused", "resumed": "connected"})
	if at, err := strconv.ParseInt(r.values()["stalled_at"], 10, 64); err != nil {
		t.Errorf("no time of the stalled probe: %v", err)
	} else if late := time.Unix(0, at).Sub(stopped); late > heartbeatBound {
		t.Errorf("the stalled probe started %v after the stop, past %v: it does not test the promise", late, heartbeatBound)
	} else {
		t.Logf("the stalled probe started %v after the stop", late.Round(time.Millisecond))
	}
	if !strings.Contains(r.stderr, "reason=gateway_not_alive") {
		t.Errorf("the refusal during the stall was not logged as gateway_not_alive")
	}
	w.assertClean(t)
}

// processState returns the state letter of process pid ("T" when stopped).
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return string(b[i+2])
	}
	return ""
}

func TestBadPolicyChangesNothing(t *testing.T) {
	w := newWorld(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nallow:\n  - host: \"*\"\n  - host: ok.test\n    ports: [99999]\n"), 0o644)
	r := w.run(t, []string{"--policy", bad}, "echo ran")
	if r.code != 1 || strings.Contains(r.stdout, "ran") {
		t.Errorf("bad policy: exit %d, stdout %q; want exit 1 and no command", r.code, r.stdout)
	}
	for _, want := range []string{"bad.yaml:3: allow[0].host: a bare '*'", "bad.yaml:5: allow[1].ports[0]: port \"99999\""} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	r = w.run(t, []string{"--allow", "*.com"}, "echo ran")
	if r.code != 1 || !strings.Contains(r.stderr, "public suffix") {
		t.Errorf("--allow *.com: exit %d, stderr %q", r.code, r.stderr)
	}
	r = w.run(t, []string{"--upstream", "not-an-ip"}, "echo ran")
	if r.code != 1 || !strings.Contains(r.stderr, "--upstream") {
		t.Errorf("bad --upstream: exit %d, stderr %q", r.code, r.stderr)
	}
	r = w.run(t, []string{"--agent-net", "198.18.1.0/30"}, "echo ran")
	if r.code != 1 || !strings.Contains(r.stderr, "overlaps") {
		t.Errorf("overlapping --agent-net: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("version: 1\nallow:\n  - host: api.github.test\n  - host: github.com\n"), 0o644)
	os.WriteFile(bad, []byte("version: 1\nallow:\n  - hots: a.test\n"), 0o644)
	out, err := exec.Command(sluiceBin, "check", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "good.yaml: ok, 2 entries, policy sha256:") ||
		!strings.Contains(string(out), "github.com accepts git pushes") {
		t.Errorf("check good: %v\n%s", err, out)
	}
	out, err = exec.Command(sluiceBin, "check", bad, good).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "bad.yaml:3: allow[0].hots: unknown key") {
		t.Errorf("check bad: %v\n%s", err, out)
	}
}

func TestNoIPv6OnGateway(t *testing.T) {
	w := newWorldOpts(t, false)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test", "--allow", "v6only.allowed.test"}, prelude+`
echo aaaa=$(dig +short AAAA allowed.test | wc -l)
dig AAAA allowed.test | grep -q 'status: NOERROR'; echo aaaa_noerror=$?
echo global6=$(ip -6 addr show scope global | grep -c inet6)
try v4 `+c+` https://allowed.test/
try v6only `+c+` https://v6only.allowed.test/
try literal6 `+c+` -k https://[`+allowedAddr6+`]/
`)
	expect(t, r, map[string]string{"aaaa": "0", "aaaa_noerror": "0", "global6": "0", "v4": ok, "v6only": curlNoResolve, "literal6": curlRefused})
	for _, q := range w.auth.Asked() {
		if strings.HasSuffix(q, " AAAA") {
			t.Errorf("AAAA question forwarded although the gateway has no IPv6: %s", q)
		}
	}
}

// TestForwardingOpensNoOtherPath checks that switching forwarding on for
// the agent does not let the gateway route between its other interfaces.
func TestForwardingOpensNoOtherPath(t *testing.T) {
	w := newWorld(t)
	lan := nstest.New(t, w.gw.Name[:len(w.gw.Name)-3]+"-lan")
	nstest.Link(t, w.gw, "g2", lan, "l0")
	w.gw.Run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "g2")
	lan.Run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "l0")
	lan.Run(t, "ip", "route", "add", "default", "via", "198.51.100.1")
	w.inet.Run(t, "ip", "route", "add", "198.51.100.0/24", "via", "198.18.1.1")
	sink := &fakenet.Sink{}
	t.Cleanup(sink.Close)
	if err := lan.Do(func() error {
		ln, err := net.Listen("tcp", "198.51.100.2:80")
		if err == nil {
			sink.ListenTCP(ln)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ready, goFile := filepath.Join(dir, "ready"), filepath.Join(dir, "go")
	args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs()...), "--", "sh", "-c",
		"touch "+ready+"; while [ ! -e "+goFile+" ]; do sleep 0.05; done")
	cmd := exec.Command("ip", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	fwd := strings.TrimSpace(w.gw.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward"))
	_, connErr := w.inet.Cmd("nc", "-z", "-w", "2", "198.51.100.2", "80").CombinedOutput()
	os.WriteFile(goFile, nil, 0o644)
	if err := cmd.Wait(); err != nil {
		t.Errorf("sluice run: %v", err)
	}
	if fwd != "1" {
		t.Fatalf("ip_forward = %s during the run; the test assumes sluice switched it on", fwd)
	}
	if connErr == nil {
		t.Error("a host on one gateway interface reached a host on another while sluice ran")
	}
	noContacts(t, "the LAN host", sink.Contacts())
	w.assertClean(t)
}

// TestAgentEnvironment checks what the command finds around it: the
// gateway as its resolver, no side doors to host services or namespaces,
// its stdin, and the user it runs as.
func TestAgentEnvironment(t *testing.T) {
	w := newWorld(t)
	// Each side door holds something on the host while the agent looks
	// (the run's own state record, the test's namespaces, a marker), so
	// that an agent that is shown the host's directory sees an entry.
	plantMarkers(t, "/run/dbus", "/run/systemd", "/run/nscd")
	r := w.run(t, nil, prelude+`
echo resolv=$(awk '/^nameserver/{print $2}' /etc/resolv.conf)
for d in /run/sluice /run/netns /run/dbus /run/systemd /run/nscd; do
  if [ -d $d ]; then echo "entries_$(basename $d)=$(ls -A $d | wc -l)"; else echo "entries_$(basename $d)=missing"; fi
done
echo pipes=$(ls -l /proc/self/fd | grep -c 'socket:\|pipe:')
echo ifaces=$(ls /sys/class/net | tr '\n' ' ')
`)
	expect(t, r, map[string]string{"resolv": gwAddr, "entries_sluice": "0", "entries_netns": "0", "entries_dbus": "0",
		"entries_systemd": "0", "entries_nscd": "0", "pipes": "2", "ifaces": "eth0 lo"})
	for k, v := range r.values() {
		if strings.HasPrefix(k, "entries_") && v != "0" {
			t.Errorf("%s: the agent sees %s entries", k, v)
		}
	}

	args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs("--user", "nobody")...), "--", "sh", "-c", "id -u; cat")
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader("from-stdin\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "65534\nfrom-stdin\n" {
		t.Errorf("--user nobody with stdin: %v, output %q", err, out)
	}
	args = append(append([]string{"netns", "exec", w.gw.Name, "env", "SUDO_USER=nobody", "SUDO_UID=65534", sluiceBin}, sluiceArgs()...), "--", "id", "-u")
	if out, err := exec.Command("ip", args...).Output(); err != nil || string(out) != "65534\n" {
		t.Errorf("under sudo: %v, output %q; want the invoking user", err, out)
	}
	w.assertClean(t)
}

// plantMarkers puts a marker file of this test in each of dirs, creating
// the directory when the host has none, and removes at the end only what
// it made: its markers, and the directories it created if they are empty
// by then.
func plantMarkers(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		created := true
		if err := os.Mkdir(dir, 0o755); errors.Is(err, fs.ErrExist) {
			created = false
		} else if err != nil {
			t.Fatal(err)
		}
		f, err := os.CreateTemp(dir, ".sluice-e2e-marker-")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() {
			if err := os.Remove(f.Name()); err != nil {
				t.Errorf("remove the marker: %v", err)
			}
			if created {
				_ = os.Remove(dir) // fails, and keeps it, if anything else is in it now
			}
		})
	}
}

// TestSpoofedSourceDropped: root in the agent adds another address and
// sends from it; the gateway drops it and logs why.
func TestSpoofedSourceDropped(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--user", "root", "--allow", "allowed.test"}, prelude+`
dig +short allowed.test >/dev/null
ip addr add 198.18.0.9/32 dev eth0
try spoofed `+c+` --connect-timeout 2 --interface 198.18.0.9 https://allowed.test/
try honest `+c+` https://allowed.test/
`)
	expect(t, r, map[string]string{"spoofed": "28", "honest": ok})
	if !strings.Contains(r.stderr, "reason=spoofed_source") {
		t.Errorf("spoofed packets not logged")
	}
}

// TestNoFlowInheritedFromAnEarlierRun: a tracked flow that an earlier agent
// on the same addresses left behind (planted here: established, from the
// agent's address and port 40005 to evil:4444, as an agent killed with its
// connection open leaves it for days) is gone before the next agent starts.
// Otherwise the same source port to the same destination would pass as
// established, past this run's sets, which do not allow it.
func TestNoFlowInheritedFromAnEarlierRun(t *testing.T) {
	w := newWorld(t)
	// The fake internet can answer the agent's own address, so that only
	// the gateway's verdict decides.
	w.inet.Run(t, "ip", "route", "add", agentNet, "via", "198.18.1.1")
	plantEstablished(t, w, "198.18.0.2")
	r := w.run(t, []string{"--allow", "allowed.test"}, prelude+`
try stale nc -z -w 3 -p 40005 `+evilAddr+` 4444
`)
	expect(t, r, map[string]string{"stale": "1"})
	noStaleContacts(t, w)
}

// plantEstablished puts in the gateway's connection tracking an
// established TCP flow from src, port 40005, to evil:4444, as an agent
// killed with its connection open leaves it for days.
func plantEstablished(t *testing.T, w *world, src string) {
	t.Helper()
	err := w.gw.Do(func() error {
		c, err := conntrack.Dial(&netlink.Config{NetNS: w.gw.Fd()})
		if err != nil {
			return err
		}
		defer c.Close()
		f := conntrack.NewFlow(unix.IPPROTO_TCP, 0,
			netip.MustParseAddr(src), netip.MustParseAddr(evilAddr), 40005, 4444, 3600, 0)
		f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: 3} // established
		if err := c.Create(f); err != nil {
			return err
		}
		// The kernel takes these status bits only on an entry it confirmed.
		f.Status = conntrack.StatusConfirmed | conntrack.StatusSeenReply | conntrack.StatusAssured
		return c.Update(f)
	})
	if err != nil {
		t.Fatalf("plant a flow: %v", err)
	}
}

// noStaleContacts fails the test if evil:4444 was reached.
func noStaleContacts(t *testing.T, w *world) {
	t.Helper()
	var evil []fakenet.Contact
	for _, c := range w.sinkContacts() {
		if strings.HasPrefix(c.Local, evilAddr+":4444") {
			evil = append(evil, c)
		}
	}
	noContacts(t, "evil:4444 through a flow of an earlier agent", evil)
}
