package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// hello runs the helper TLS client against ADDR with SNI and MODE and
// prints NAME=result.
func (w *world) hello(name, addr, sni, mode string) string {
	return "echo " + name + "=$(" + helperCmd() + " hello " + addr + " '" + sni + "' " + mode + " " + w.caFile + " | sed -n 's/^result=//p')\n"
}

// hangupCmd runs the helper's hangup client against ADDR with SNI and HOW and
// prints NAME=result.
func hangupCmd(name, addr, sni, how string) string {
	return "echo " + name + "=$(" + helperCmd() + " hangup " + addr + " '" + sni + "' " + how + " | sed -n 's/^result=//p')\n"
}

// drainPolicy allows allowed.test on port 9443, checked as TLS, where the
// fake internet's drain sink listens.
const drainPolicy = "  - host: allowed.test\n    ports: [9443]\n    tls_ports: [9443]\n"

// drainEnds waits until the drain sink has seen n connections end and
// returns how each ended, in the order they were accepted.
func (w *world) drainEnds(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ends []string
		for _, c := range w.drain.Contacts() {
			if c.End != "" {
				ends = append(ends, c.End)
			}
		}
		if len(ends) >= n || time.Now().After(deadline) {
			if len(w.drain.Contacts()) != n {
				t.Errorf("the drain sink saw %d connections, want %d", len(w.drain.Contacts()), n)
			}
			return ends
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestResetCrossesTheProxy: on the TLS path, the agent's reset reaches the
// destination as a reset, also right behind a bulk upload the gateway
// still holds part of, and its FIN as a FIN, so that an upload cut short
// never passes for a complete one.
func TestResetCrossesTheProxy(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, drainPolicy)
	r := w.run(t, []string{"--policy", pol}, prelude+`
dig +short allowed.test >/dev/null
`+hangupCmd("reset", allowedAddr+":9443", "allowed.test", "reset")+
		hangupCmd("bulkreset", allowedAddr+":9443", "allowed.test", "bulkreset")+
		hangupCmd("fin", allowedAddr+":9443", "allowed.test", "fin"))
	expect(t, r, map[string]string{"reset": "ok", "bulkreset": "ok", "fin": "ok"})
	if ends := w.drainEnds(t, 3); !slices.Equal(ends, []string{"reset", "reset", "eof"}) {
		t.Errorf("the destination saw the agent's reset, reset after an upload and FIN end as %v, want [reset reset eof]", ends)
	}
}

func TestTLSNameBoundToAddress(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test:443", "--allow", "chain.allowed.test", "--log-allowed"}, prelude+`
dig +short allowed.test chain.allowed.test >/dev/null
try control `+c+` https://allowed.test/
try spoofed_dst `+c+` --resolve allowed.test:443:`+evilAddr+` https://allowed.test/
try other_name_addr `+c+` --resolve allowed.test:443:`+allowedAddr2+` https://allowed.test/
try shared_ip `+c+` --resolve cust-evil.cdn.test:443:`+allowedAddr+` https://cust-evil.cdn.test/
try unresolved_v6 `+c+` -6 --resolve allowed.test:443:[`+evilAddr6+`] https://allowed.test/
try mixed_case `+c+` https://ALLOWED.Test/
try gateway_443 `+c+` -k https://`+gwAddr+`/
`+w.hello("no_sni", allowedAddr+":443", "allowed.test", "nosni")+
		w.hello("ip_sni", allowedAddr+":443", "allowed.test", "ipsni")+
		w.hello("nul_sni", allowedAddr+":443", "allowed.test", "nulsni")+`
openssl s_client -connect `+allowedAddr+`:443 -servername allowed.test. </dev/null >/dev/null 2>&1; echo trailing_dot=$?
openssl s_client -connect `+allowedAddr+`:443 -noservername </dev/null >/dev/null 2>&1; echo openssl_no_sni=$?
openssl s_client -connect `+allowedAddr+`:443 -servername `+allowedAddr+` </dev/null >/dev/null 2>&1; echo openssl_ip_sni=$?
echo | openssl s_client -connect `+allowedAddr+`:443 -servername allowed.test -CAfile `+w.caFile+` -verify_return_error 2>/dev/null | grep -q 'Verify return code: 0'; echo openssl_ok=$?
`)
	expect(t, r, map[string]string{
		"control": ok, "spoofed_dst": curlRefused, "other_name_addr": curlRefused, "shared_ip": curlRefused,
		"unresolved_v6": curlRefused, "mixed_case": ok, "gateway_443": curlRefused,
		"no_sni": "handshake:_reset", "ip_sni": "handshake:_reset", "nul_sni": "handshake:_reset", "trailing_dot": "1",
		"openssl_no_sni": "1", "openssl_ip_sni": "1", "openssl_ok": "0",
	})
	for _, reason := range []string{"address_not_pinned", "sni_not_allowed", "no_sni", "ip_literal_sni", "invalid_sni", "not_tls"} {
		if !strings.Contains(r.stderr, "layer=tls reason="+reason) {
			t.Errorf("no tls refusal with reason %s on stderr", reason)
		}
	}
	for _, c := range w.web.Contacts() {
		if c.SNI != "allowed.test" || (c.Local != allowedAddr+":443" && c.Local != "["+allowedAddr6+"]:443") {
			t.Errorf("the web server saw a connection it should not have: %+v", c)
		}
	}
	noContacts(t, "an attacker endpoint", w.sinkContacts())
}

func TestTLSHelloShapes(t *testing.T) {
	w := newWorld(t)
	r := w.run(t, []string{"--allow", "allowed.test:443"}, prelude+`
dig +short allowed.test >/dev/null
`+w.hello("plain", allowedAddr+":443", "allowed.test", "plain")+
		w.hello("segments1", allowedAddr+":443", "allowed.test", "segments1")+
		w.hello("records7", allowedAddr+":443", "allowed.test", "records7")+
		w.hello("ech", allowedAddr+":443", "allowed.test", "ech")+
		w.hello("esni", allowedAddr+":443", "allowed.test", "esni")+
		w.hello("huge", allowedAddr+":443", "allowed.test", "huge")+`
printf 'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n' | nc -w 3 `+allowedAddr+` 443 | wc -c | sed 's/^/http_on_443=/'
head -c 4096 /dev/urandom | nc -w 3 `+allowedAddr+` 443 | wc -c | sed 's/^/garbage=/'
printf 'SSH-2.0-OpenSSH_9.2\r\n' | nc -w 3 `+allowedAddr+` 443 | wc -c | sed 's/^/ssh=/'
`)
	expect(t, r, map[string]string{
		"plain": "ok", "segments1": "ok", "records7": "ok",
		"ech": "handshake:_reset", "esni": "handshake:_reset", "huge": "handshake:_reset",
		"http_on_443": "0", "garbage": "0", "ssh": "0",
	})
	for _, reason := range []string{"ech", "hello_too_large", "not_tls"} {
		if !strings.Contains(r.stderr, "layer=tls reason="+reason) {
			t.Errorf("no tls refusal with reason %s on stderr", reason)
		}
	}
	if n := len(w.web.Contacts()); n != 3 {
		t.Errorf("web server saw %d requests, want the 3 good handshakes: %+v", n, w.web.Contacts())
	}
}

func TestHTTPHostRules(t *testing.T) {
	w := newWorld(t)
	send := func(name, req string) string {
		return "printf '" + req + "' | nc -w 3 " + allowedAddr + " 80 | head -1 | grep -c ' 200 ' | sed 's/^/" + name + "=/'\n"
	}
	r := w.run(t, []string{"--allow", "allowed.test:80"}, prelude+`
dig +short allowed.test >/dev/null
`+send("honest", `GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`)+
		send("other_host", `GET / HTTP/1.1\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+
		send("absolute", `GET http://cust-evil.cdn.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`)+
		send("duplicate", `GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+
		send("connect", `CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n`)+
		send("h2c", `GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n`)+
		send("no_host", `GET / HTTP/1.0\r\n\r\n`)+
		send("other_port", `GET / HTTP/1.1\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n`)+
		send("h2_preface", `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`)+
		send("absolute_allowed", `GET http://allowed.test/ HTTP/1.1\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+`
printf 'GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET /two HTTP/1.1\r\nHost: cust-evil.cdn.test\r\n\r\n' | nc -w 3 `+allowedAddr+` 80 | grep -c 'HTTP/1.1 200' | sed 's/^/keepalive_ok=/'
`)
	// absolute_allowed names allowed.test in its URI and another host in its
	// Host header: it passes as allowed.test, and the loop below checks that
	// the upstream saw only that Host (the request is written anew).
	expect(t, r, map[string]string{
		"honest": "1", "other_host": "0", "absolute": "0", "duplicate": "0", "connect": "0",
		"h2c": "0", "no_host": "0", "other_port": "0", "h2_preface": "0", "absolute_allowed": "1", "keepalive_ok": "1",
	})
	for _, reason := range []string{"host_not_allowed", "conflicting_host", "connect_method", "h2c_upgrade", "no_host"} {
		if !strings.Contains(r.stderr, "layer=http reason="+reason) {
			t.Errorf("no http refusal with reason %s on stderr", reason)
		}
	}
	for _, c := range w.web.Contacts() {
		if c.Host != "allowed.test" {
			t.Errorf("the web server saw a request for %q", c.Host)
		}
	}
	if n := len(w.web.Contacts()); n != 3 { // honest, absolute_allowed, keep-alive's first
		t.Errorf("the web server saw %d requests, want 3", n)
	}
	// The honest request again, to an address never resolved for the name.
	r = w.run(t, []string{"--allow", "allowed.test:80"}, prelude+`
dig +short allowed.test >/dev/null
printf 'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n' | nc -w 3 `+evilAddr+` 80 | wc -c | sed 's/^/spoofed_dst=/'
`)
	expect(t, r, map[string]string{"spoofed_dst": "0"})
	noContacts(t, "an attacker endpoint", w.sinkContacts())
}

func TestProxySlowClients(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test:443", "--hello-timeout", "1s"}, prelude+`
dig +short allowed.test >/dev/null
`+helperCmd()+` slowloris `+allowedAddr+`:443 1500 3s
try after `+c+` https://allowed.test/
s=$(date +%s); nc -w 10 `+allowedAddr+` 443 </dev/null; echo silent_seconds=$(( $(date +%s) - s ))
`)
	v := r.values()
	if v["opened"] == "" || v["cut"] != v["opened"] {
		t.Errorf("opened %s stalled connections, %s cut by the gateway; want all cut", v["opened"], v["cut"])
	}
	expect(t, r, map[string]string{"after": ok})
	if s := v["silent_seconds"]; s != "1" && s != "2" {
		t.Errorf("a client that sends nothing was cut after %s s, want the 1 s hello timeout", s)
	}
	if !strings.Contains(r.stderr, "reason=hello_timeout") {
		t.Errorf("stalled connections not logged")
	}
	if !strings.Contains(r.stderr, "layer=tls reason=too_many_pending") {
		t.Errorf("the stalled connections beyond the 1024 awaiting a hello were not refused as too_many_pending")
	}
}

// TestProxyIdleTimeout: an allowed upstream that accepts and never answers
// holds the agent's connection only for the idle timeout, on the HTTP and
// on the TLS path; on the TLS path both sides are cut with a reset.
func TestProxyIdleTimeout(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, "  - host: \"*.synth.test\"\n    http_ports: [82]\n"+drainPolicy)
	r := w.run(t, []string{"--policy", pol, "--idle-timeout", "1s"}, prelude+`
a=$(dig +short h.synth.test)
s=$(date +%s); printf 'GET / HTTP/1.1\r\nHost: h.synth.test:82\r\n\r\n' | nc -w 20 $a 82 >/dev/null; echo http_seconds=$(( $(date +%s) - s ))
dig +short allowed.test >/dev/null
s=$(date +%s)
`+hangupCmd("tls_cut", allowedAddr+":9443", "allowed.test", "idle")+`echo tls_seconds=$(( $(date +%s) - s ))
`)
	v := r.values()
	for _, k := range []string{"http_seconds", "tls_seconds"} {
		if s := v[k]; s != "1" && s != "2" && s != "3" {
			t.Errorf("%s = %s: a silent connection was held past the 1 s idle timeout", k, s)
		}
	}
	expect(t, r, map[string]string{"tls_cut": "cut_by_reset"})
	if ends := w.drainEnds(t, 1); !slices.Equal(ends, []string{"reset"}) {
		t.Errorf("the destination saw the idle connection end as %v, want [reset]", ends)
	}
	if len(w.silent.Contacts()) == 0 {
		t.Error("the request never reached the silent upstream; the test tests nothing")
	}
}

// TestCIDREntryPassesByAddress: a destination a cidr entry allows on 443
// and 80 has no name to check, by the policy's own choice: the proxy
// passes it on both paths (the TLS loop's dial without a replay, and the
// HTTP path's hand-over to a loop) whatever the agent sends, and nothing
// else of that address.
func TestCIDREntryPassesByAddress(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, "  - cidr: "+evilAddr+"/32\n    ports: [443, 80]\n")
	r := w.run(t, []string{"--policy", pol, "--log-allowed"}, prelude+`
try tls sh -c "printf 'not a hello' | nc -w 2 `+evilAddr+` 443"
try http sh -c "printf 'GET / HTTP/1.1\r\nHost: anything.test\r\n\r\n' | nc -w 2 `+evilAddr+` 80"
try other_port nc -z -w 2 `+evilAddr+` 4444
`)
	expect(t, r, map[string]string{"tls": ok, "http": ok, "other_port": "1"})
	var got []string
	for _, c := range w.sinkContacts() {
		got = append(got, c.Local)
	}
	slices.Sort(got)
	if want := []string{evilAddr + ":443", evilAddr + ":80"}; !slices.Equal(got, want) {
		t.Errorf("the cidr destination saw %v, want %v", got, want)
	}
	for _, layer := range []string{"tls", "http"} {
		if !strings.Contains(r.stderr, "layer="+layer+" reason=allowed") {
			t.Errorf("no allowed %s decision on stderr:\n%s", layer, r.stderr)
		}
	}
}

// TestProxyConnectionLimit: beyond --max-connections open at once, a new
// connection is reset at once and journaled; those within it are relayed.
func TestProxyConnectionLimit(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, drainPolicy)
	r := w.run(t, []string{"--policy", pol, "--max-connections", "20"}, prelude+`
dig +short allowed.test >/dev/null
`+helperCmd()+` hold `+allowedAddr+`:9443 allowed.test 30
`)
	expect(t, r, map[string]string{"held": "20", "reset": "10", "other": "0"})
	if !strings.Contains(r.stderr, "layer=tls reason=too_many_connections") {
		t.Error("no too_many_connections refusal on stderr")
	}
}
