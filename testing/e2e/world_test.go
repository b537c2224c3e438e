// Package e2e runs sluice end to end: it builds the binary, makes a gateway
// and a fake internet in network namespaces, runs `sluice run` in the
// gateway with real clients (curl, dig, nc, ping) as the agent, and checks
// what reached the fake internet.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/testing/fakenet"
	"github.com/sluicegw/sluice/testing/nstest"
	"github.com/ti-mo/conntrack"
)

var sluiceBin, dnsloadBin string

// journalPath is the journal every run writes unless a test gives its
// own: one file, shared by the runs of this process, as the runs of one
// host share /var/lib/sluice/journal.db.
var journalPath string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "sluice-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sluiceBin = filepath.Join(dir, "sluice")
	journalPath = filepath.Join(dir, "journal", "journal.db")
	dnsloadBin = filepath.Join(dir, "dnsload")
	for bin, pkg := range map[string]string{sluiceBin: "../../cmd/sluice", dnsloadBin: "../../bench/dnsload"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Addresses of the test network (DESIGN.md).
const (
	// agentTable is the table of a run of `sh -c SCRIPT`, the agent named sh.
	agentTable   = gateway.TablePrefix + "sh"
	agentNet     = "198.18.0.0/30" // gateway .1, agent .2
	agentNet6    = "2001:db8:a::/64"
	gwAddr       = "198.18.0.1"
	routerAddr   = "198.18.1.2"  // the gateway's upstream router, on its own link
	allowedAddr  = "198.18.2.10" // allowed.test, www.allowed.test, cust-evil.cdn.test
	allowedAddr2 = "198.18.2.11" // target of a CNAME chain
	allowedAddr6 = "2001:db8:2::10"
	authAddr     = "198.18.2.54" // authoritative DNS, the gateway's upstream
	gitAddr      = "198.18.2.20" // git.test: git http-backend over HTTPS, when a test starts it
	publicDNS    = "192.0.2.53"  // plays a public resolver the agent should not reach
	evilAddr     = "192.0.2.66"
	evilAddr6    = "2001:db8:66::66"
)

var zone = []string{
	"allowed.test. 300 IN A " + allowedAddr,
	"allowed.test. 300 IN AAAA " + allowedAddr6,
	// The hosts of the pypi preset (TestPresetIncluded), on the fake web.
	"pypi.org. 300 IN A " + allowedAddr,
	"files.pythonhosted.org. 300 IN A " + allowedAddr,
	"www.allowed.test. 300 IN A " + allowedAddr,
	"www.allowed.test. 300 IN AAAA " + allowedAddr6,
	"v6only.allowed.test. 300 IN AAAA " + allowedAddr6,
	"cust-evil.cdn.test. 300 IN A " + allowedAddr,
	"chain.allowed.test. 300 IN CNAME l2.allowed.test.",
	"l2.allowed.test. 300 IN CNAME edge.cdn.test.",
	"edge.cdn.test. 300 IN A " + allowedAddr2,
	"short.allowed.test. 1 IN A " + allowedAddr,
	// Another agent's address (TestServeAgentsIsolated's beta), one in
	// the agents' pool, and a control.
	"ok.peer.test. 300 IN A " + allowedAddr,
	"beta.peer.test. 300 IN A 198.18.0.5",
	"pool.peer.test. 300 IN A 198.19.240.2",
	"meta.allowed.test. 300 IN A 169.254.169.254",
	"meta.allowed.test. 300 IN AAAA ::ffff:169.254.169.254",
	"private.allowed.test. 300 IN A 10.0.0.1",
	"nas.home.arpa. 300 IN A 10.0.0.1", // homelab names: private addresses
	"printer.lan. 300 IN A 10.0.0.1",
	"cgnat.allowed.test. 300 IN A 100.64.0.1",
	"gateway.allowed.test. 300 IN A " + gwAddr,
	"neighbour.allowed.test. 300 IN A " + routerAddr,
	"evil.test. 300 IN A " + evilAddr,
	"git.test. 300 IN A " + gitAddr,
	"*.evil.test. 300 IN A " + evilAddr,
	"*.evil.test. 300 IN TXT \"exfil\"",
}

// world is one test's gateway and fake internet.
type world struct {
	gw, inet *nstest.NS
	auth     *fakenet.DNS // the gateway's upstream
	public   *fakenet.DNS // a public resolver the agent must not reach
	web      *fakenet.Web
	sink     *fakenet.Sink // attacker endpoints and canaries
	silent   *fakenet.Sink // accepts on port 82 and never answers
	drain    *fakenet.Sink // allowed.test:9443, reads to the end and records how it came
	caFile   string
	// sluiceEnv is added to the environment of sluice (not the agent's,
	// which sluice makes).
	sluiceEnv []string
	ca        *fakenet.CA // the fake internet's
}

func newWorld(t *testing.T) *world { return newWorldOpts(t, true) }

// newWorldB is newWorld for a benchmark (which runs alone).
func newWorldB(b *testing.B) *world { return newWorldOpts(b, true) }

// newWorldOpts builds the world; with ipv6 false the gateway has no IPv6
// default route, as on a host without IPv6 connectivity.
func newWorldOpts(t testing.TB, ipv6 bool) *world {
	t.Helper()
	nstest.RequireRoot(t)
	if tt, ok := t.(*testing.T); ok {
		tt.Parallel()
	}
	prefix := nstest.Prefix()
	w := &world{gw: nstest.New(t, prefix+"-gw"), inet: nstest.New(t, prefix+"-in")}
	// What a run that failed or was killed left in /run/sluice for this
	// gateway (its state record and files) goes as the next start would
	// take it, before the namespace itself goes.
	t.Cleanup(func() {
		err := w.gw.Do(func() error {
			_, err := gateway.Recover("")
			return err
		})
		if err != nil {
			t.Errorf("clean up the gateway's sluice state: %v", err)
		}
	})
	nstest.Link(t, w.gw, "g1", w.inet, "i0")
	w.gw.Run(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "g1")
	w.gw.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "g1", "nodad")
	w.gw.Run(t, "ip", "route", "add", "default", "via", "198.18.1.2")
	if ipv6 {
		w.gw.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::2")
	}
	w.inet.Run(t, "ip", "addr", "add", "198.18.1.2/24", "dev", "i0")
	w.inet.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "i0", "nodad")
	// The fake internet owns every test host address (on its loopback: this
	// kernel has no dummy driver) and routes nowhere else.
	for _, a := range []string{allowedAddr, allowedAddr2, authAddr, publicDNS, evilAddr, gitAddr, "169.254.169.254", "10.0.0.1", "100.64.0.1"} {
		w.inet.Run(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	for _, a := range []string{allowedAddr6, evilAddr6} {
		w.inet.Run(t, "ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad")
	}
	w.inet.Run(t, "ip", "addr", "add", fakenet.SynthNet, "dev", "lo")
	w.inet.Run(t, "ip", "route", "add", "unreachable", "default")
	w.inet.Run(t, "ip", "-6", "route", "add", "unreachable", "default")
	w.inet.Run(t, "ip", "-6", "route", "add", "2001:db8:a::/64", "via", "2001:db8:1::1")
	w.startServers(t)
	return w
}

func (w *world) startServers(t testing.TB) {
	t.Helper()
	ca, err := fakenet.NewCA()
	w.ca = ca
	if err != nil {
		t.Fatal(err)
	}
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if w.web, err = fakenet.NewWeb(ca, "allowed.test", "*.allowed.test", "*.cdn.test", "evil.test", "*.evil.test", "pypi.org", "files.pythonhosted.org"); err != nil {
		t.Fatal(err)
	}
	w.auth, w.public = fakenet.NewDNS(zone...), fakenet.NewDNS(zone...)
	w.sink, w.drain = &fakenet.Sink{}, &fakenet.Sink{}
	t.Cleanup(func() {
		w.auth.Close()
		w.public.Close()
		w.web.Close()
		w.sink.Close()
		w.drain.Close()
		if w.silent != nil {
			w.silent.Close()
		}
	})
	err = w.inet.Do(func() error {
		for _, d := range []struct {
			srv  *fakenet.DNS
			addr string
		}{{w.auth, authAddr}, {w.public, publicDNS}} {
			pc, err := net.ListenPacket("udp", d.addr+":53")
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", d.addr+":53")
			if err != nil {
				return err
			}
			d.srv.Serve(pc, ln)
		}
		for _, a := range []string{allowedAddr, allowedAddr2, "[" + allowedAddr6 + "]"} {
			if err := w.listenWeb(a); err != nil {
				return err
			}
		}
		tcp := map[string][]string{
			evilAddr:              {"22", "80", "443", "4444", "8443", "853"},
			"[" + evilAddr6 + "]": {"22", "80", "443", "4444"},
			publicDNS:             {"853", "443"},
			allowedAddr:           {"22", "8443"},
			"0.0.0.0":             {"81"}, // every synth.test address
			"169.254.169.254":     {"80", "443"},
			"10.0.0.1":            {"80", "443"},
			"100.64.0.1":          {"80", "443"},
		}
		udp := map[string][]string{
			evilAddr:    {"53", "123", "443", "853", "51820"},
			allowedAddr: {"443", "53"},
			publicDNS:   {"853"},
		}
		for addr, ports := range tcp {
			for _, p := range ports {
				ln, err := net.Listen("tcp", addr+":"+p)
				if err != nil {
					return err
				}
				w.sink.ListenTCP(ln)
			}
		}
		drain, err := net.Listen("tcp", allowedAddr+":9443")
		if err != nil {
			return err
		}
		w.drain.ListenDrain(drain)
		silent, err := net.Listen("tcp", "0.0.0.0:82") // every synth.test address
		if err != nil {
			return err
		}
		w.silent = &fakenet.Sink{}
		w.silent.ListenSilent(silent)
		for addr, ports := range udp {
			for _, p := range ports {
				pc, err := net.ListenPacket("udp", addr+":"+p)
				if err != nil {
					return err
				}
				w.sink.ListenUDP(pc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start fake internet: %v", err)
	}
}

// startGit serves git.test (HTTPS, the fake internet's CA) from a git
// http-backend over the repositories of a new directory.
func (w *world) startGit(t testing.TB) *fakenet.GitServer {
	t.Helper()
	g, err := fakenet.NewGitServer(filepath.Join(t.TempDir(), "repos"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := w.ca.Issue("git.test")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second}
	err = w.inet.Do(func() error {
		ln, err := net.Listen("tcp", gitAddr+":443")
		if err != nil {
			return err
		}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return g
}

func (w *world) listenWeb(addr string) error {
	ln, err := net.Listen("tcp", addr+":443")
	if err != nil {
		return err
	}
	w.web.ServeTLS(ln)
	ln, err = net.Listen("tcp", addr+":80")
	if err != nil {
		return err
	}
	w.web.Serve(ln)
	return nil
}

// result is what one `sluice run` printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// sluiceArgs are the flags every test run gets: the test network's
// addresses and the fake internet's resolver.
// policyFile writes a policy whose allow list is entries (YAML list
// items) and returns its path.
func policyFile(t testing.TB, entries string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte("version: 1\nallow:\n"+entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sluiceArgs(extra ...string) []string {
	return append([]string{"run", "--upstream", authAddr, "--agent-net", agentNet, "--agent-net6", agentNet6, "--journal", journalPath,
		// The fake internet lives on benchmarking and documentation
		// addresses, which answers may not point into by default.
		"--global-range", "198.18.0.0/15", "--global-range", "192.0.2.0/24", "--global-range", "2001:db8::/32"}, extra...)
}

// run runs `sluice run FLAGS -- sh -c SCRIPT` in the gateway namespace.
func (w *world) run(t testing.TB, flags []string, script string) result {
	t.Helper()
	return w.runVia(t, nil, w.sluiceEnv, flags, script)
}

// runVia is run behind the command prefix (sudo and its options; none
// for sluice alone), with env added to the test's environment.
func (w *world) runVia(t testing.TB, prefix, env, flags []string, script string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"ip", "netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs(flags...)...), "--", "sh", "-c", script)
	args = append(append([]string(nil), prefix...), args...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// An agent process that outlives sluice holds these pipes open; the
	// test then fails on what it finds instead of hanging until go test's
	// deadline, when its clean-ups no longer run.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if _, bench := t.(*testing.B); !bench { // a benchmark's figures, not its transcript
		t.Logf("%q\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", prefix, script, r.stdout, r.stderr)
	}
	w.assertClean(t)
	return r
}

// assertClean checks that a finished run left nothing in the gateway.
func (w *world) assertClean(t testing.TB) {
	t.Helper()
	if out := w.gw.Run(t, "nft", "list", "tables"); strings.Contains(out, "sluice") {
		t.Errorf("nftables table left behind: %s", out)
	}
	if out := w.gw.Run(t, "ip", "-br", "link"); strings.Contains(out, "sl") && strings.Contains(out, "@") {
		t.Errorf("agent link left behind: %s", out)
	}
	if left := agentFlows(t, w.gw); len(left) > 0 {
		t.Errorf("tracked flows of the agent left behind: %v", left)
	}
	if out := w.gw.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "0" {
		t.Errorf("net.ipv4.ip_forward = %s after the run, want it restored to 0", out)
	}
	if out := w.gw.Run(t, "cat", "/proc/sys/net/ipv6/conf/all/forwarding"); strings.TrimSpace(out) != "0" {
		t.Errorf("net.ipv6.conf.all.forwarding = %s after the run, want it restored to 0", out)
	}
}

// lines returns the "key=value" lines a script printed as a map.
func (r result) values() map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.Contains(k, " ") {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// expect checks each key's value.
func expect(t *testing.T, r result, want map[string]string) {
	t.Helper()
	got := r.values()
	for k, v := range want {
		if v == "refused" && (got[k] == "7" || got[k] == "35" || got[k] == "56") {
			continue
		}
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func (w *world) sinkContacts() []fakenet.Contact { return w.sink.Contacts() }

func noContacts(t *testing.T, what string, cs []fakenet.Contact) {
	t.Helper()
	if len(cs) > 0 {
		t.Errorf("%s was reached: %+v", what, cs)
	}
}

// agentFlows lists the tracked flows from the agent's subnets in ns.
func agentFlows(t testing.TB, ns *nstest.NS) []string {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatalf("conntrack: %v", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatalf("conntrack dump: %v", err)
	}
	var out []string
	for _, f := range flows {
		src := f.TupleOrig.IP.SourceAddress
		if netip.MustParsePrefix(agentNet).Contains(src) || netip.MustParsePrefix(agentNet6).Contains(src) {
			out = append(out, fmt.Sprintf("%v:%d->%v:%d", src, f.TupleOrig.Proto.SourcePort,
				f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort))
		}
	}
	return out
}
