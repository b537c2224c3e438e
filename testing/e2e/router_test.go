package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/nstest"
)

// The router-mode test's network (DESIGN.md's test ranges, used by no
// other test): a bridge in the gateway, the clients' gateway and DNS
// server at .1, two VMs (namespaces) at .10 and .11.
const (
	bridgeNet   = "198.18.5.0/24"
	bridgeNet6  = "2001:db8:5::/64"
	bridgeAddr  = "198.18.5.1"
	bridgeAddr6 = "2001:db8:5::1"
)

// vm is a client namespace behind the bridge, standing in for a VM.
type vm struct {
	ns   *nstest.NS
	addr string
}

// addVM makes a namespace whose eth0 is a port of the gateway's bridge,
// with a static address (as a VM's own configuration or a DHCP lease
// would give it; none when addr is ""), the bridge's address as its
// default gateway, and a resolv.conf naming it as its DNS server (as
// its own configuration or a lease would): /etc/netns/NAME/resolv.conf,
// which `ip netns exec NAME` mounts over /etc/resolv.conf.
func addVM(t *testing.T, w *world, bridge, name, addr, addr6 string) *vm {
	t.Helper()
	v := &vm{ns: nstest.New(t, name), addr: addr}
	port := "p" + name[2:] // unique in the gateway, at most 15 characters
	nstest.Link(t, w.gw, port, v.ns, "eth0")
	w.gw.Run(t, "ip", "link", "set", port, "master", bridge)
	dir := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+bridgeAddr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		return v
	}
	v.ns.Run(t, "ip", "addr", "add", addr+"/24", "dev", "eth0")
	v.ns.Run(t, "ip", "-6", "addr", "add", addr6+"/64", "dev", "eth0", "nodad")
	v.ns.Run(t, "ip", "route", "add", "default", "via", bridgeAddr)
	v.ns.Run(t, "ip", "-6", "route", "add", "default", "via", bridgeAddr6)
	return v
}

// addBridge makes the bridge of the router-mode tests in the gateway,
// up, with the clients' gateway addresses.
func addBridge(t *testing.T, w *world, bridge string) {
	t.Helper()
	w.gw.Run(t, "ip", "link", "add", bridge, "type", "bridge")
	w.gw.Run(t, "ip", "addr", "add", bridgeAddr+"/24", "dev", bridge)
	w.gw.Run(t, "ip", "-6", "addr", "add", bridgeAddr6+"/64", "dev", bridge, "nodad")
	w.gw.Run(t, "ip", "link", "set", bridge, "up")
}

// shell runs sh -c SCRIPT in the VM, as `ip netns exec` runs it: with
// the VM's resolv.conf.
func (v *vm) shell(t *testing.T, script string) result {
	t.Helper()
	cmd := v.ns.Cmd("sh", "-c", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: exitCode(t, err)}
	t.Logf("in %s:\n%s\nstdout:\n%s\nstderr:\n%s", v.ns.Name, script, r.stdout, r.stderr)
	return r
}

// TestRouterMode is deploy/router.md's example, end to end: a bridge in
// the gateway with two VMs behind it (static addresses, the bridge's
// address as their gateway and DNS server), and `sluice serve` with an
// agent whose `interface:` is the bridge (and one whose interface does
// not exist, which does not start while the other serves). From both VMs an allowed name
// works over IPv4 and IPv6; DNS to a foreign resolver is answered by
// sluice all the same (that resolver never sees a query), allowed and
// blocked alike; a blocked name gets NXDOMAIN; a direct IP, on a TLS
// port and on another, and a gateway port (SSH, the web UI) are refused
// at once (a reset, not a timeout); the refusals are in the journal and
// the UI under the agent's name; sluice exec says the agent has no
// namespace. After serve stops, the bridge, its addresses and its ports
// are as they were, and nothing of sluice's is left: no table, no
// record, no tracked flow of the VMs, forwarding restored.
func TestRouterMode(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	lab, bridge := id+"-lab", "br-"+id
	addBridge(t, w, bridge)
	prefix := nstest.Prefix()
	vms := []*vm{
		addVM(t, w, bridge, prefix+"-vm1", "198.18.5.10", "2001:db8:5::10"),
		addVM(t, w, bridge, prefix+"-vm2", "198.18.5.11", "2001:db8:5::11"),
	}
	bridgeState := func() string { // what a user set: state, addresses, ports
		return w.gw.Run(t, "ip", "-br", "link", "show", "dev", bridge) + w.gw.Run(t, "ip", "-br", "addr", "show", "dev", bridge) +
			w.gw.Run(t, "ip", "-br", "link", "show", "master", bridge)
	}
	before := bridgeState()

	journalPath := filepath.Join(dir, "journal.db")
	writeAtomic(t, filepath.Join(dir, lab+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [80, 443, 9443]\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(journalPath)+"ui: 0.0.0.0:"+uiPort+"\nagents:\n"+
		"  - name: "+lab+"\n    policy: "+lab+".yaml\n    interface: "+bridge+"\n"+
		"  - name: "+id+"-ghost\n    policy: "+lab+".yaml\n    interface: br-nowhere\n")
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1", "failed=1")
	if !s.logged("agent did not start: it stays cut off; a reload tries again", "agent="+id+"-ghost", "there is no interface br-nowhere") {
		t.Error("an agent whose interface does not exist: no error naming it")
	}
	if !s.logged("gateway ready", "agent="+lab, "iface="+bridge, "router=true", "ipv6=true") {
		t.Errorf("no gateway ready for %s in router mode on %s", lab, bridge)
	}
	if run := st.status(t)[lab]; run.State != "alive" || run.Iface != bridge {
		t.Errorf("status of %s: %+v", lab, run)
	}

	c := w.curl()
	// nc -v says why a connection failed: "Connection refused" for a
	// refusal, a timeout otherwise.
	refusedNC := func(name, addr, port string) string {
		return `nc -vz -w 5 ` + addr + ` ` + port + ` 2>&1 | grep -q 'Connection refused'; echo "` + name + `=$?"` + "\n"
	}
	for _, v := range vms {
		r := v.shell(t, prelude+`
try allowed `+c+` https://allowed.test/
try allowed6 `+c+` -6 https://allowed.test/
try http `+c+` http://allowed.test/
try body sh -c '`+c+` https://allowed.test/ | grep -q "hello from allowed.test"'
try forwarded sh -c 'echo x | nc -N -w 5 `+allowedAddr+` 9443'
echo "dns_gw=$(dig +short +time=2 +tries=1 @`+bridgeAddr+` allowed.test A)"
echo "dns_foreign=$(dig +short +time=2 +tries=1 @`+publicDNS+` allowed.test A)"
echo "dns_foreign6=$(dig +short +time=2 +tries=1 @`+publicDNS+` allowed.test AAAA)"
dig +time=2 +tries=1 @`+publicDNS+` evil.test | grep -q 'status: NXDOMAIN'; echo "nx_foreign=$?"
dig +time=2 +tries=1 @`+bridgeAddr+` evil.test | grep -q 'status: NXDOMAIN'; echo "nx_gw=$?"
dig +time=2 +tries=1 @`+bridgeAddr+` evil.test | grep -q 'EDE: 15 (Blocked)'; echo "ede=$?"
try blocked `+c+` https://evil.test/
try direct_tls `+c+` -k https://`+evilAddr+`/
try direct_tls6 `+c+` -k https://[`+evilAddr6+`]/
try pinned_elsewhere `+c+` -k --resolve allowed.test:443:`+evilAddr+` https://allowed.test/
`+refusedNC("direct", evilAddr, "4444")+refusedNC("gw_ssh", bridgeAddr, "22")+refusedNC("gw_ui", bridgeAddr, uiPort)+`
try gw_ui_curl `+c+` http://`+bridgeAddr+`:`+uiPort+`/metrics
`)
		expect(t, r, map[string]string{
			"allowed": ok, "allowed6": ok, "http": ok, "body": ok, "forwarded": ok,
			"dns_gw": allowedAddr, "dns_foreign": allowedAddr, "dns_foreign6": allowedAddr6,
			"nx_foreign": "0", "nx_gw": "0", "ede": "0",
			"blocked": curlNoResolve, "direct_tls": curlRefused, "direct_tls6": curlRefused, "pinned_elsewhere": curlRefused,
			"direct": "0", "gw_ssh": "0", "gw_ui": "0", "gw_ui_curl": curlRefused,
		})
	}
	// Between VMs the bridge switches. With br_netfilter's
	// bridge-nf-call-iptables on (its default once loaded, as here; Docker
	// loads it), switched packets pass the IP hooks too, and sluice lets
	// a flow between two VMs of the bridge pass (it leaves nothing); with
	// it off, sluice never sees them.
	listener := vms[1].ns.Cmd("nc", "-lk", "5555")
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Process.Kill(); _ = listener.Wait() })
	waitFor(t, func() bool { return strings.Contains(vms[1].ns.Run(t, "ss", "-Hltn"), ":5555") })
	brnf := hasBrNetfilter(w)
	if brnf {
		w.gw.Run(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
		expect(t, vms[0].shell(t, prelude+"try vm_to_vm nc -z -w 5 "+vms[1].addr+" 5555\n"), map[string]string{"vm_to_vm": ok})
		w.gw.Run(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
	} else {
		t.Log("no br_netfilter in this kernel: only switched traffic between VMs is tested")
	}
	expect(t, vms[0].shell(t, prelude+"try vm_to_vm nc -z -w 5 "+vms[1].addr+" 5555\n"), map[string]string{"vm_to_vm": ok})

	// What the VMs send on (not proxied) leaves masqueraded as the
	// gateway's uplink address: the fake internet has no route back to
	// the bridge.
	if cs := w.drain.Contacts(); len(cs) != 2 || !strings.HasPrefix(cs[0].Remote, "198.18.1.1:") || !strings.HasPrefix(cs[1].Remote, "198.18.1.1:") {
		t.Errorf("the forwarded flows reached allowed.test:9443 as %+v, want two from the gateway's uplink address 198.18.1.1", cs)
	}
	if asked := w.public.Asked(); len(asked) > 0 {
		t.Errorf("the foreign resolver was asked: %v", asked)
	}
	noContacts(t, "an attacker endpoint", w.sinkContacts())
	if out, err := st.cmd(w.gw.Name, "exec", lab, "--", "true").CombinedOutput(); err == nil || !strings.Contains(string(out), "router mode") {
		t.Errorf("sluice exec %s: %v\n%s", lab, err, out)
	}

	// The refusals, in the journal and in the UI, under the agent's name.
	type refusal struct {
		layer  journal.Layer
		reason journal.Reason
		name   string
		dst    string
	}
	want := []refusal{
		{journal.LayerDNS, journal.ReasonNameNotAllowed, "evil.test", ""},
		{journal.LayerTLS, journal.ReasonNoSNI, "", evilAddr + ":443"},
		{journal.LayerTLS, journal.ReasonNotPinned, "allowed.test", evilAddr + ":443"},
		{journal.LayerFirewall, journal.ReasonNoSetEntry, "", evilAddr + ":4444"},
		{journal.LayerFirewall, journal.ReasonGatewayPort, "", bridgeAddr + ":22"},
		{journal.LayerFirewall, journal.ReasonGatewayPort, "", bridgeAddr + ":" + uiPort},
	}
	found := func(recs []journal.Record, x refusal) bool {
		return slices.ContainsFunc(recs, func(r journal.Record) bool {
			return r.Agent == lab && r.Verdict == "refused" && r.Layer == x.layer && r.Reason == x.reason &&
				(x.name == "" || strings.EqualFold(r.Name, x.name)) && (x.dst == "" || r.Dst == x.dst)
		})
	}
	waitFor(t, func() bool { // the journal stores a moment after the refusal
		recs := listJournal(t, journalPath, "--agent", lab)
		return !slices.ContainsFunc(want, func(x refusal) bool { return !found(recs, x) })
	})
	var login uiLogin
	if m := loginURL.FindStringSubmatch(readFile(s.log)); m != nil {
		login = uiLogin{m[1], m[2], m[3]}
	} else {
		t.Fatal("serve printed no login URL for the UI")
	}
	var events struct{ Events []journal.Record }
	if code := uiCall(t, w.gw, login, "GET", "/api/events?verdict=refused&agent="+lab+"&limit=1000", "", &events); code != 200 {
		t.Fatalf("the UI's events: %d", code)
	}
	for _, x := range want {
		if !found(events.Events, x) {
			t.Errorf("the UI lacks the refusal %s %s %s %s", x.layer, x.reason, x.name, x.dst)
		}
	}
	m := w.gw.Run(t, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:"+uiPort+"/metrics")
	if !strings.Contains(m, `sluice_agent_up{agent="`+lab+`"} 1`) {
		t.Errorf("metrics lack %s up", lab)
	}

	stopRouter(t, w, st, s, before, bridgeState)
	if left := flowsFrom(t, w.gw, netip.MustParsePrefix(bridgeNet), netip.MustParsePrefix(bridgeNet6)); len(left) > 0 {
		t.Errorf("tracked flows of the VMs left: %v", left)
	}
}

// hasBrNetfilter reports whether the kernel has br_netfilter (built in
// or loaded), which can hand switched packets to the IP firewall.
func hasBrNetfilter(w *world) bool {
	return w.gw.Cmd("test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables").Run() == nil
}

// flowsFrom lists the tracked flows in ns whose source is in one of nets
// and is not the gateway's own bridge address.
func flowsFrom(t *testing.T, ns *nstest.NS, nets ...netip.Prefix) []string {
	t.Helper()
	conn, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatalf("conntrack: %v", err)
	}
	defer conn.Close()
	flows, err := conn.Dump(nil)
	if err != nil {
		t.Fatalf("conntrack dump: %v", err)
	}
	var out []string
	for _, f := range flows {
		src := f.TupleOrig.IP.SourceAddress
		// The gateway's own bridge addresses are not a VM's: its kernel
		// sends from them on its own (IGMP reports to 224.0.0.22 once the
		// bridge is up), and sluice neither tracks nor flushes those.
		if src.String() == bridgeAddr || src.String() == bridgeAddr6 {
			continue
		}
		if slices.ContainsFunc(nets, func(n netip.Prefix) bool { return n.Contains(src) }) {
			out = append(out, src.String()+" -> "+f.TupleOrig.IP.DestinationAddress.String())
		}
	}
	return out
}

// TestRouterModeDHCP is deploy/router.md's part on DHCP: a DHCP server on
// the gateway itself (dnsmasq on the bridge) serves the VMs while sluice
// serves the bridge. The VM's discover, from 0.0.0.0, is let in (not a
// spoofed source: nothing of it journaled as one) and the answer out;
// the lease names the gateway as router and DNS server, and the VM,
// numbered by it, reaches an allowed name and not a blocked one.
func TestRouterModeDHCP(t *testing.T) {
	nstest.RequireTool(t, "dnsmasq", "dnsmasq-base", "deploy/router.md's DHCP part")
	nstest.RequireTool(t, "busybox", "busybox", "deploy/router.md's DHCP part")
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	lab, bridge := id+"-lab", "br-"+id
	addBridge(t, w, bridge)
	prefix := nstest.Prefix()
	client := addVM(t, w, bridge, prefix+"-vm1", "", "")
	dnsmasq := func(ns *nstest.NS, iface string) (stop func(), log string) {
		log = filepath.Join(dir, ns.Name+".log")
		f, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// deploy/router.md's options: the range, and the gateway as the
		// clients' router and DNS server.
		cmd := ns.Cmd("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface="+iface, "--bind-interfaces",
			"--dhcp-range=198.18.5.100,198.18.5.199,1h", "--dhcp-option=option:router,"+bridgeAddr,
			"--dhcp-option=option:dns-server,"+bridgeAddr, "--dhcp-leasefile="+filepath.Join(dir, ns.Name+".leases"),
			"--log-dhcp", "--log-facility=-")
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return strings.Contains(readFile(log), "DHCP, sockets bound") })
		stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
		t.Cleanup(stop)
		return stop, log
	}
	// udhcpc asks for a lease and prints what it got (its script runs
	// for each event); the VM is numbered by the test from that.
	const leaseScript = `[ "$1" = bound ] && echo "lease=$ip/$mask router=$router dns=$dns"; true`
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+leaseScript+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	askLease := func() string {
		out, _ := client.ns.Cmd("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "4", "-T", "3", "-s", script).CombinedOutput()
		t.Logf("udhcpc:\n%s", out)
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "lease=") {
				return strings.TrimSpace(line)
			}
		}
		return ""
	}

	journalPath := filepath.Join(dir, "journal.db")
	writeAtomic(t, filepath.Join(dir, lab+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(journalPath)+"agents:\n  - name: "+lab+"\n    policy: "+lab+".yaml\n    interface: "+bridge+"\n")
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1")

	// The DHCP server on the gateway itself (the user's addressing):
	// sluice lets its requests in and its answers out, and nothing else
	// of the gateway's. The lease names the gateway as router and DNS.
	_, hostLog := dnsmasq(w.gw, bridge)
	got := askLease()
	var leased string
	if _, err := fmt.Sscanf(got, "lease=%s router="+bridgeAddr+" dns="+bridgeAddr, &leased); err != nil || !strings.HasPrefix(leased, "198.18.5.1") {
		t.Fatalf("the lease from the gateway's DHCP server: %q (%v)\n%s", got, err, readFile(hostLog))
	}
	if slices.ContainsFunc(listJournal(t, journalPath, "--agent", lab), func(r journal.Record) bool {
		return r.Reason == journal.ReasonSpoofed
	}) {
		t.Errorf("the DHCP exchange was journaled as spoofed")
	}
	client.ns.Run(t, "ip", "addr", "add", leased, "dev", "eth0")
	client.ns.Run(t, "ip", "route", "add", "default", "via", bridgeAddr)
	r := client.shell(t, prelude+"try allowed "+w.curl()+" https://allowed.test/\ntry blocked "+w.curl()+" https://evil.test/\n")
	expect(t, r, map[string]string{"allowed": ok, "blocked": curlNoResolve})

	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
}

// TestRouterModeKill9: after a `kill -9` of serve, the bridge stays as
// it was and the agent's table stays, refusing everything once its
// heartbeat lapses; the next start takes the table over, says it kept
// the interface (never removed: the user's), and serves the VMs again;
// after it stops nothing is left.
func TestRouterModeKill9(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	lab, bridge := id+"-lab", "br-"+id
	addBridge(t, w, bridge)
	v := addVM(t, w, bridge, nstest.Prefix()+"-vm1", "198.18.5.10", "2001:db8:5::10")
	bridgeState := func() string {
		return w.gw.Run(t, "ip", "-br", "link", "show", "dev", bridge) + w.gw.Run(t, "ip", "-br", "addr", "show", "dev", bridge)
	}
	before := bridgeState()
	// allowed.test:8443 is forwarded (not the proxy's): only the sets and
	// the heartbeat decide.
	writeAtomic(t, filepath.Join(dir, lab+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [443, 8443]\n")
	config := filepath.Join(dir, "serve.yaml")
	writeAtomic(t, config, serveHeader(filepath.Join(dir, "journal.db"))+"agents:\n  - name: "+lab+"\n    policy: "+lab+".yaml\n    interface: "+bridge+"\n")
	c := w.curl()
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1")
	expect(t, v.shell(t, prelude+"try allowed "+c+" https://allowed.test/\ntry fwd nc -z -w 5 allowed.test 8443\n"),
		map[string]string{"allowed": ok, "fwd": ok})

	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	if after := bridgeState(); after != before {
		t.Errorf("the bridge changed with serve killed:\n%s\nwas:\n%s", after, before)
	}
	if !w.hasTable(t, lab) {
		t.Error("the killed serve's table is gone: the VMs would be forwarded unfiltered")
	}
	// Once its heartbeat has lapsed, the table refuses the VMs at once
	// (not left to hang), where the same request passed before the kill.
	waitFor(t, func() bool {
		return !strings.Contains(w.gw.Run(t, "nft", "list", "set", "inet", gateway.TablePrefix+lab, "alive"), "elements")
	})
	// So are TCP to 443 and DNS over TCP, which are redirected to the
	// proxy and the resolver: the reset must come from the address and
	// port the VM connected to, or the VM waits for its timeout.
	refusedNC := func(name, addr, port string) string {
		return `nc -vz -w 5 ` + addr + ` ` + port + ` 2>&1 | grep -q 'Connection refused'; echo "` + name + `=$?"` + "\n"
	}
	r := v.shell(t, refusedNC("dead", allowedAddr, "8443")+refusedNC("dead_tls", allowedAddr, "443")+refusedNC("dead_dns", bridgeAddr, "53"))
	expect(t, r, map[string]string{"dead": "0", "dead_tls": "0", "dead_dns": "0"})

	again := startServe(t, w, st, config)
	again.waitLogged(t, "serve ready", "agents=1")
	if !again.logged("cleaned up after an earlier run that did not exit cleanly: kept interface " + bridge + " (router mode: the user's, never removed)") {
		t.Error("the next start did not say it kept the interface")
	}
	expect(t, v.shell(t, prelude+"try allowed "+c+" https://allowed.test/\ntry blocked "+c+" https://evil.test/\n"),
		map[string]string{"allowed": ok, "blocked": curlNoResolve})
	stopRouter(t, w, st, again, before, bridgeState)
}

// stopRouter stops serve and checks what a router-mode run leaves: the
// bridge as it was before (the user's: up, its addresses and ports), and
// nothing of sluice's (no table, no record, forwarding as it was).
func stopRouter(t *testing.T, w *world, st privateState, s *serveRun, before string, bridgeState func() string) {
	t.Helper()
	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	if after := bridgeState(); after != before {
		t.Errorf("the bridge changed:\n%s\nwas:\n%s", after, before)
	}
	w.assertClean(t)
	if left, _ := filepath.Glob(filepath.Join(st.dir, "netns-*")); len(left) > 0 {
		t.Errorf("records left: %v", left)
	}
}
