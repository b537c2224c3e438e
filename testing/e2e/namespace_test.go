package e2e

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/nstest"
)

// The tests of an agent namespace with a name (gateway.Config.Namespace,
// what sluice serve makes) drive the gateway through the test binary
// itself: with gatewayHelperEnv set, it is a gateway of one named agent
// that runs until SIGTERM (Detach) or SIGINT (Close), or a kill -9.

const gatewayHelperEnv = "SLUICE_E2E_GATEWAY"

func init() {
	if os.Getenv(gatewayHelperEnv) != "" {
		os.Exit(gatewayHelper(os.Args[1:]))
	}
}

type allowFlags []string

func (a *allowFlags) String() string     { return strings.Join(*a, ",") }
func (a *allowFlags) Set(s string) error { *a = append(*a, s); return nil }

// gatewayHelper is the test binary as a gateway: it prints "ready" once
// gateway.New returned, then "detached" or "closed".
func gatewayHelper(args []string) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	var c gateway.Config
	var allow allowFlags
	fs.StringVar(&c.Name, "name", "", "")
	fs.StringVar(&c.Namespace, "namespace", "", "")
	fs.StringVar(&c.StateDir, "state-dir", "", "")
	fs.Var(&allow, "allow", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src := gateway.PolicySource{Allow: allow}
	p, _, err := src.Load()
	if err != nil {
		fmt.Printf("error=%v\n", err)
		return 1
	}
	c.Policy, c.PolicySource, c.Journal, c.Log = p, src, journal.LogSink{Log: log}, log
	c.AgentNet, c.AgentNet6 = netip.MustParsePrefix(agentNet), netip.MustParsePrefix(agentNet6)
	c.Upstreams = []netip.AddrPort{netip.MustParseAddrPort(authAddr + ":53")}
	for _, g := range []string{"198.18.0.0/15", "192.0.2.0/24", "2001:db8::/32"} {
		c.Global = append(c.Global, netip.MustParsePrefix(g))
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	g, err := gateway.New(c)
	if err != nil {
		fmt.Printf("error=%v\n", err)
		return 1
	}
	fmt.Println("ready")
	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() { failed <- g.Run(ctx) }()
	var sig os.Signal
	select {
	case sig = <-sigs:
	case err := <-failed:
		log.Error("the gateway failed", "err", err)
		sig = syscall.SIGINT
	}
	cancel()
	if sig == syscall.SIGTERM {
		err = g.Detach()
		fmt.Println("detached")
	} else {
		err = g.Close()
		fmt.Println("closed")
	}
	if err != nil {
		fmt.Printf("error=%v\n", err)
		return 1
	}
	return 0
}

// namedAgent is one test's agent with a named namespace, its state
// directory (the test's own, so that no other run's records are seen or
// touched) and the files its commands use.
type namedAgent struct {
	w        *world
	name     string // the agent's
	netns    string // its namespace's, under /run/netns
	stateDir string
	resolv   string // a resolv.conf naming a public resolver, for ip netns exec
	caFile   string // the fake internet's CA, readable by nobody
	dir      string
}

// newNamedAgent names an agent for the world, and makes sure that what
// its gateways leave goes when the test ends, whatever happened: the
// records of dead gateways are undone in the gateway namespace (as the
// next start would), then the named namespace's processes are killed and
// the namespace removed.
func newNamedAgent(t *testing.T, w *world) *namedAgent {
	t.Helper()
	// New namespaces take IPv4 forwarding from the host's (where a
	// container runtime may have switched it on): the gateway's starts
	// off, as assertClean wants it back.
	w.gw.Run(t, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
	name := nstest.Prefix()
	n := &namedAgent{w: w, name: name, netns: gateway.NamespaceFor(name), stateDir: t.TempDir(), dir: t.TempDir()}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join("/run/netns", n.netns)); err == nil {
			_ = exec.Command("sh", "-c", "ip netns pids "+n.netns+" | xargs -r kill -9").Run()
			_ = exec.Command("ip", "netns", "del", n.netns).Run()
		}
	})
	t.Cleanup(func() {
		if err := w.gw.Do(func() error { _, err := gateway.Recover(n.stateDir); return err }); err != nil {
			t.Errorf("clean up the gateways' records: %v", err)
		}
	})
	n.resolv = filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(n.resolv, []byte("nameserver "+publicDNS+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory of its own under /tmp, so that the user nobody can
	// read the CA (t.TempDir's are root's alone).
	caDir, err := os.MkdirTemp("", "sluice-ns-ca")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(caDir) })
	if err := os.Chmod(caDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.caFile = filepath.Join(caDir, "ca.pem")
	if err := os.WriteFile(n.caFile, w.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *namedAgent) curl() string { return "curl -sS --max-time 5 --cacert " + n.caFile }

// gatewayRun is a running gateway helper.
type gatewayRun struct {
	cmd    *exec.Cmd
	out    *bufio.Reader
	stderr string // a file
}

// start starts a gateway of the agent in the world's gateway namespace,
// allowing allow, and waits until it is ready. It enters the namespace
// with nsenter, not `ip netns exec`: that makes a mount namespace whose
// mounts do not reach the test's, and the named namespace's bind mount
// must (as sluice serve must run in the host's mount namespace).
func (n *namedAgent) start(t *testing.T, allow ...string) *gatewayRun {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--net=/run/netns/" + n.w.gw.Name, "env", gatewayHelperEnv + "=1", exe,
		"--name", n.name, "--namespace", n.netns, "--state-dir", n.stateDir}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	g := &gatewayRun{cmd: exec.Command("nsenter", args...)}
	errFile, err := os.CreateTemp(n.dir, "gateway-stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	g.stderr, g.cmd.Stderr = errFile.Name(), errFile
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.out = bufio.NewReader(stdout)
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			_ = g.cmd.Process.Kill()
			_, _ = io.Copy(io.Discard, g.out)
			_ = g.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("gateway's log:\n%s", readFile(g.stderr))
		}
	})
	if line, _ := g.out.ReadString('\n'); line != "ready\n" {
		_, _ = io.Copy(io.Discard, g.out)
		_ = g.cmd.Wait()
		t.Fatalf("the gateway did not start: %q\n%s", line, readFile(g.stderr))
	}
	return g
}

// stop ends the gateway with sig (SIGTERM: Detach; SIGINT: Close) and
// returns what it printed after "ready"; it fails t unless the gateway
// said want and exited 0.
func (g *gatewayRun) stop(t *testing.T, sig syscall.Signal, want string) {
	t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(g.out)
	err := g.cmd.Wait()
	if err != nil || string(rest) != want+"\n" {
		t.Fatalf("gateway after %v: %v, printed %q, want %q\n%s", sig, err, rest, want, readFile(g.stderr))
	}
}

// kill ends the gateway with SIGKILL.
func (g *gatewayRun) kill(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, g.out)
	_ = g.cmd.Wait()
}

func (g *gatewayRun) logged() string { return readFile(g.stderr) }

// inNS is a script run in the agent's namespace with `ip netns exec`,
// as a person would, behind a private mount of a resolv.conf that names
// a public resolver (the gateway redirects DNS to any address; the
// host's own resolv.conf may name a loopback one, which the namespace
// does not have).
type inNS struct {
	cmd    *exec.Cmd
	stdout string // a file
	done   chan struct{}
}

func (n *namedAgent) script(t *testing.T, script string) *inNS {
	t.Helper()
	const withResolv = `mount --bind "$0" /etc/resolv.conf && exec sh -c "$1"`
	s := &inNS{cmd: exec.Command("ip", "netns", "exec", n.netns, "unshare", "-m", "--propagation", "private",
		"sh", "-c", withResolv, n.resolv, prelude+probeTCP+script), done: make(chan struct{})}
	f, err := os.CreateTemp(n.dir, "script-stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.stdout, s.cmd.Stdout, s.cmd.Stderr = f.Name(), f, f
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("script's output:\n%s", readFile(s.stdout))
		}
	})
	return s
}

func (s *inNS) values() map[string]string { return result{stdout: readFile(s.stdout)}.values() }

func (s *inNS) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// waitFile is a line of script that waits for file to exist.
func waitFile(file string) string {
	return "while [ ! -e " + file + " ]; do sleep 0.02; done\n"
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// checkNothingLeft fails t if anything of the agent is left: its
// namespace, its table or link in the gateway, a record, tracked flows,
// forwarding switched on.
func (n *namedAgent) checkNothingLeft(t *testing.T) {
	t.Helper()
	if exists(filepath.Join("/run/netns", n.netns)) {
		t.Errorf("the agent namespace %s is still there", n.netns)
	}
	n.checkNoRecord(t)
	n.w.assertClean(t)
}

func (n *namedAgent) checkNoRecord(t *testing.T) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(n.stateDir, "netns-*")); len(left) > 0 {
		t.Errorf("records or files left in the state directory: %v", left)
	}
}

// sluiceExec runs `sluice exec NAME --state-dir DIR ARGS...` from the
// host's namespace.
func (n *namedAgent) sluiceExec(name string, args ...string) *exec.Cmd {
	return exec.Command(sluiceBin, append([]string{"exec", name, "--state-dir", n.stateDir}, args...)...)
}

// TestNamedNamespace: a gateway with a named namespace makes it under
// /run/netns. A command that `ip netns exec` runs there reaches an
// allowed host and is refused the rest; so does one that `sluice exec`
// runs, which sees the private resolv.conf, runs as --user, gets its
// standard input and returns its exit status; `sluice exec` of an agent
// that is not served names the one that is. Close kills the processes
// in the namespace and removes it, and leaves nothing.
func TestNamedNamespace(t *testing.T) {
	w := newWorld(t)
	n := newNamedAgent(t, w)
	g := n.start(t, "allowed.test")
	if !exists(filepath.Join("/run/netns", n.netns)) {
		t.Fatalf("no /run/netns/%s", n.netns)
	}
	if !strings.Contains(g.logged(), "adopted=false") {
		t.Errorf("the new namespace was not reported made anew:\n%s", g.logged())
	}
	c := n.curl()
	checks := `try allowed ` + c + ` https://allowed.test/
try evil ` + c + ` https://evil.test/
probe evil_ip ` + evilAddr + ` 4444
`
	s := n.script(t, checks+"touch "+filepath.Join(n.dir, "checked")+"\nexec sleep 1000\n")
	waitFor(t, func() bool { return exists(filepath.Join(n.dir, "checked")) })
	got := s.values()
	expect(t, result{stdout: readFile(s.stdout)}, map[string]string{"allowed": ok, "evil": curlNoResolve, "evil_ip": "refused"})
	t.Logf("ip netns exec: %v", got)

	cmd := n.sluiceExec(n.name, "--user", "nobody", "--", "sh", "-c", prelude+probeTCP+`read line; echo stdin=$line
echo user=$(id -un)
echo resolv=$(grep nameserver /etc/resolv.conf)
echo netns=$(ls /run/netns | wc -l)
`+checks+"exit 7")
	cmd.Stdin = strings.NewReader("from-stdin\n")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("sluice exec: %v, want exit status 7", err)
	}
	r := result{stdout: string(out)}
	t.Logf("sluice exec:\n%s", out)
	expect(t, r, map[string]string{"stdin": "from-stdin", "user": "nobody", "resolv": "nameserver " + gwAddr, "netns": "0",
		"allowed": ok, "evil": curlNoResolve, "evil_ip": "refused"})
	noContacts(t, "an attacker endpoint", w.sinkContacts())

	out, err = n.sluiceExec("no-such-agent", "--", "true").CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), `no agent "no-such-agent"`) || !strings.Contains(string(out), n.name) {
		t.Errorf("sluice exec of an agent that is not served: %v\n%s; want exit 1 naming the agent served, %s", err, out, n.name)
	}

	g.stop(t, syscall.SIGINT, "closed")
	if !s.exited() {
		t.Errorf("the process that ip netns exec started in the agent namespace outlived Close")
	}
	n.checkNothingLeft(t)
}

// TestNamedNamespaceDetach: Detach leaves the agent namespace and its
// processes, with no link (loopback alone: nothing it sends leaves),
// and nothing of the gateway; a new gateway with the same namespace
// adopts it, and the same process, started before, reaches the allowed
// host again.
func TestNamedNamespaceDetach(t *testing.T) {
	w := newWorld(t)
	n := newNamedAgent(t, w)
	g := n.start(t, "allowed.test")
	file := func(name string) string { return filepath.Join(n.dir, name) }
	c := n.curl()
	s := n.script(t, `try before `+c+` https://allowed.test/
touch `+file("ready1")+"\n"+waitFile(file("go1"))+`try detached `+c+` https://allowed.test/
probe detached_ip `+allowedAddr+` 443
echo links=$(ip -o link | awk -F': ' '{printf "%s,", $2}')
touch `+file("ready2")+"\n"+waitFile(file("go2"))+`try after `+c+` https://allowed.test/
touch `+file("ready3")+`
exec sleep 1000
`)
	waitFor(t, func() bool { return exists(file("ready1")) })
	g.stop(t, syscall.SIGTERM, "detached")
	if s.exited() {
		t.Fatalf("Detach ended the process in the agent namespace")
	}
	if !exists(filepath.Join("/run/netns", n.netns)) {
		t.Fatalf("Detach removed the agent namespace")
	}
	// Nothing of the gateway is left: table, link, record, flows, forwarding.
	n.checkNoRecord(t)
	w.assertClean(t)
	touch(t, file("go1"))
	waitFor(t, func() bool { return exists(file("ready2")) })

	g = n.start(t, "allowed.test")
	if !strings.Contains(g.logged(), "adopted=true") {
		t.Errorf("the second gateway did not report adopting the namespace:\n%s", g.logged())
	}
	touch(t, file("go2"))
	waitFor(t, func() bool { return exists(file("ready3")) })
	v := s.values()
	t.Logf("the process in the namespace: %v", v)
	expect(t, result{stdout: readFile(s.stdout)}, map[string]string{"before": ok, "detached_ip": "refused", "links": "lo,", "after": ok})
	if d := v["detached"]; d == ok || d == "28" || d == "" {
		t.Errorf("curl while detached exited %q, want a failure at once (not 28, a timeout)", d)
	}
	if s.exited() {
		t.Fatalf("the process in the namespace did not survive the adoption")
	}

	g.stop(t, syscall.SIGINT, "closed")
	if !s.exited() {
		t.Errorf("Close of the adopting gateway left the process of the namespace running")
	}
	n.checkNothingLeft(t)
}

// TestNamedNamespaceKill9: after a kill -9 of the gateway the agent
// namespace stays, with its processes; once the heartbeat has lapsed, a
// process there is refused at once (not left to hang), where the same
// probe connected before the kill. The next gateway with the same
// namespace undoes what the dead one left (its link, then its table,
// keeping the processes), adopts the namespace, and the same process
// connects again. At the end nothing is left.
func TestNamedNamespaceKill9(t *testing.T) {
	w := newWorld(t)
	n := newNamedAgent(t, w)
	g := n.start(t, "allowed.test:22")
	file := func(name string) string { return filepath.Join(n.dir, name) }
	// allowed.test:22 is forwarded (not the proxy's): only the sets and
	// the heartbeat decide.
	s := n.script(t, `dig +short allowed.test >/dev/null
probe before `+allowedAddr+` 22
touch `+file("ready1")+"\n"+waitFile(file("go1"))+`probe dead `+allowedAddr+` 22
try dead_dns dig +time=1 +tries=1 allowed.test
touch `+file("ready2")+"\n"+waitFile(file("go2"))+`try after_dns dig +short allowed.test
probe after `+allowedAddr+` 22
touch `+file("ready3")+`
exec sleep 1000
`)
	waitFor(t, func() bool { return exists(file("ready1")) })
	table := gateway.TablePrefix + n.name
	iface := runIface(t, n)
	g.kill(t)
	// The table stays, and refuses everything once its heartbeat lapses.
	waitFor(t, func() bool {
		return !strings.Contains(w.gw.Run(t, "nft", "list", "set", "inet", table, "alive"), "elements")
	})
	touch(t, file("go1"))
	waitFor(t, func() bool { return exists(file("ready2")) })
	if s.exited() || !exists(filepath.Join("/run/netns", n.netns)) {
		t.Fatalf("the agent namespace or its process did not outlive the kill -9")
	}

	g = n.start(t, "allowed.test:22")
	for _, want := range []string{"removed link " + iface, "removed table inet " + table, "kept the agent namespace " + n.netns, "adopted=true"} {
		if !strings.Contains(g.logged(), want) {
			t.Errorf("the next start did not report %q:\n%s", want, g.logged())
		}
	}
	touch(t, file("go2"))
	waitFor(t, func() bool { return exists(file("ready3")) })
	expect(t, result{stdout: readFile(s.stdout)}, map[string]string{"before": "connected", "dead": "refused", "dead_dns": "9", "after_dns": ok, "after": "connected"})
	if s.exited() {
		t.Fatalf("the process in the namespace did not survive the adoption")
	}
	g.stop(t, syscall.SIGINT, "closed")
	n.checkNothingLeft(t)
}

// runIface is the link of the agent's live gateway, from its record.
func runIface(t *testing.T, n *namedAgent) string {
	t.Helper()
	out, err := exec.Command(sluiceBin, "status", "--json", "--state-dir", n.stateDir).Output()
	if err != nil {
		t.Fatalf("sluice status: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, `"agent":"`+n.name+`"`) {
			_, rest, _ := strings.Cut(line, `"iface":"`)
			iface, _, _ := strings.Cut(rest, `"`)
			if iface != "" {
				return iface
			}
		}
	}
	t.Fatalf("no live record of %s:\n%s", n.name, out)
	return ""
}
