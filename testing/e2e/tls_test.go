package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/testing/fakenet"
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

// TestTLSHelloShapes: hellos split across segments and records pass
// (full handshakes, the positive controls); hellos carrying ECH or ESNI,
// hellos past the size cap and bytes that are not TLS are reset at once,
// each followed on the same path by a plain hello that is answered, so a
// hang, a FIN or a broken proxy cannot pass for a refusal.
func TestTLSHelloShapes(t *testing.T) {
	w := newWorld(t)
	addr := allowedAddr + ":443"
	control := "hello:allowed.test:plain"
	r := w.run(t, []string{"--allow", "allowed.test:443"}, prelude+`
dig +short allowed.test >/dev/null
`+w.hello("plain", addr, "allowed.test", "plain")+
		w.hello("segments1", addr, "allowed.test", "segments1")+
		w.hello("records7", addr, "allowed.test", "records7")+
		rawCmd("ech", addr, "hello:allowed.test:ech", control)+
		rawCmd("esni", addr, "hello:allowed.test:esni", control)+
		rawCmd("huge", addr, "hello:allowed.test:huge", control)+
		rawCmd("http_on_443", addr, `bytes:GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n`, control)+
		rawCmd("garbage", addr, "random:4096", control)+
		rawCmd("ssh", addr, `bytes:SSH-2.0-OpenSSH_9.2\r\n`, control))
	refused := "reset," + rawAnswered
	expect(t, r, map[string]string{
		"plain": "ok", "segments1": "ok", "records7": "ok",
		"ech": refused, "esni": refused, "huge": refused,
		"http_on_443": refused, "garbage": refused, "ssh": refused,
	})
	countReasons(t, r, "tls", map[string]int{"ech": 2, "hello_too_large": 1, "not_tls": 3})
	if n := len(w.web.Contacts()); n != 3 {
		t.Errorf("web server saw %d requests, want the 3 good handshakes: %+v", n, w.web.Contacts())
	}
}

// TestHTTPHostRules: on the HTTP path, each request whose authority is
// not allowed, is ambiguous or would carry other traffic is reset at
// once, and an honest request on a new connection to the same address
// right after it gets its 200, so a hang, a FIN or a broken proxy cannot
// pass for a refusal. A refusal after an allowed request on a kept-alive
// connection ends it with a FIN behind the first answer.
func TestHTTPHostRules(t *testing.T) {
	w := newWorld(t)
	addr := allowedAddr + ":80"
	honest := `http:GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`
	refusal := func(name, req string) string { return rawCmd(name, addr, "http:"+req, honest) }
	r := w.run(t, []string{"--allow", "allowed.test:80"}, prelude+`
dig +short allowed.test >/dev/null
`+rawCmd("honest", addr, honest)+
		refusal("other_host", `GET / HTTP/1.1\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+
		refusal("absolute", `GET http://cust-evil.cdn.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`)+
		refusal("duplicate", `GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+
		refusal("connect", `CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n`)+
		refusal("h2c", `GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n`)+
		refusal("no_host", `GET / HTTP/1.0\r\n\r\n`)+
		refusal("other_port", `GET / HTTP/1.1\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n`)+
		refusal("h2_preface", `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`)+
		rawCmd("absolute_allowed", addr, `http:GET http://allowed.test/ HTTP/1.1\r\nHost: cust-evil.cdn.test\r\nConnection: close\r\n\r\n`)+
		rawCmd("keepalive", addr, `http:GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET /two HTTP/1.1\r\nHost: cust-evil.cdn.test\r\n\r\n`))
	// absolute_allowed names allowed.test in its URI and another host in its
	// Host header: it passes as allowed.test, and the loop below checks that
	// the upstream saw only that Host (the request is written anew).
	refused := "reset,200_fin"
	expect(t, r, map[string]string{
		"honest": "200_fin", "other_host": refused, "absolute": refused, "duplicate": refused, "connect": refused,
		"h2c": refused, "no_host": refused, "other_port": refused, "h2_preface": refused,
		"absolute_allowed": "200_fin", "keepalive": "200_fin",
	})
	countReasons(t, r, "http", map[string]int{
		"host_not_allowed": 3, // other_host, absolute, keep-alive's second
		"conflicting_host": 2, // duplicate, other_port
		"connect_method":   1, "h2c_upgrade": 1, "no_host": 1, "bad_request": 1,
	})
	for _, c := range w.web.Contacts() {
		if c.Host != "allowed.test" || c.Path == "/two" {
			t.Errorf("the web server saw a request for %q %s", c.Host, c.Path)
		}
	}
	// honest, the 8 refusals' controls, absolute_allowed, keep-alive's first
	if n := len(w.web.Contacts()); n != 11 {
		t.Errorf("the web server saw %d requests, want 11", n)
	}
	// The honest request again, to an address never resolved for the name,
	// then to the one that was.
	r = w.run(t, []string{"--allow", "allowed.test:80"}, prelude+`
dig +short allowed.test >/dev/null
`+rawCmd("spoofed_dst", evilAddr+":80", honest)+rawCmd("control", addr, honest))
	expect(t, r, map[string]string{"spoofed_dst": "reset", "control": "200_fin"})
	countReasons(t, r, "http", map[string]int{"address_not_pinned": 1})
	noContacts(t, "an attacker endpoint", w.sinkContacts())
}

// countReasons checks how many refusals of each reason the run logged on
// layer, so that each refusal of a test is seen refused for its reason.
func countReasons(t *testing.T, r result, layer string, want map[string]int) {
	t.Helper()
	for reason, n := range want {
		if got := strings.Count(r.stderr, "layer="+layer+" reason="+reason+" "); got != n {
			t.Errorf("%d %s refusals with reason %s on stderr, want %d", got, layer, reason, n)
		}
	}
}

// The test binary doubles as a raw client too (besides the world's
// helper): SLUICE_E2E_RAW=1 BINARY NAME ADDR SPEC... sends each SPEC on a
// new connection to ADDR and prints NAME=OUTCOME,OUTCOME,... A SPEC is
//
//	http:BYTES   a request (Go string escapes), read to the end
//	bytes:BYTES  bytes to send, then one byte of answer awaited
//	random:N     N random bytes that do not start a TLS record, likewise
//	hello:SNI:MODE  a Go ClientHello, plain, or with ECH, ESNI or padded
//	             past the proxy's cap in 1-byte records (huge), likewise
//
// An OUTCOME is how the connection went: "answered" (a byte came back),
// the status codes of the responses read, and then how it ended: "fin",
// "reset" (ECONNRESET, or EPIPE on a write) or "timeout" (nothing for
// 3 s), joined by "_".
const rawEnv = "SLUICE_E2E_RAW"

// rawAnswered is the outcome of a spec answered with at least a byte.
const rawAnswered = "answered"

func init() {
	if os.Getenv(rawEnv) != "" {
		os.Exit(rawClient(os.Args[1:]))
	}
}

// rawCmd is the script line that runs the raw client (without the race
// detector's pause at exit).
func rawCmd(name, addr string, specs ...string) string {
	exe, _ := os.Executable()
	return rawEnv + "=1 GORACE=atexit_sleep_ms=0 " + exe + " " + name + " " + addr + " '" + strings.Join(specs, "' '") + "'\n"
}

func rawClient(args []string) int {
	if len(args) < 3 {
		fmt.Println("raw=usage")
		return 2
	}
	var outcomes []string
	for _, spec := range args[2:] {
		outcomes = append(outcomes, rawOutcome(args[1], spec))
	}
	fmt.Printf("%s=%s\n", args[0], strings.Join(outcomes, ","))
	return 0
}

func rawOutcome(addr, spec string) string {
	payload, whole, err := rawPayload(spec)
	if err != nil {
		return "bad_spec(" + err.Error() + ")"
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "dial_" + rawEnd(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return rawEnd(err)
	}
	if !whole {
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			return rawEnd(err)
		}
		return rawAnswered
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return strings.Join(append(statuses(got), rawEnd(err)), "_")
		}
	}
}

// rawPayload returns the bytes a spec sends, and whether the answer is
// to be read to its end.
func rawPayload(spec string) ([]byte, bool, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "http", "bytes":
		s, err := strconv.Unquote(`"` + arg + `"`)
		return []byte(s), kind == "http", err
	case "random":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 {
			return nil, false, fmt.Errorf("random:%s", arg)
		}
		b := make([]byte, n)
		rand.Read(b)
		b[0] &^= 0x80 // no TLS record starts so: the proxy need not wait for more
		b[0] |= 0x40
		return b, false, nil
	case "hello":
		sni, mode, _ := strings.Cut(arg, ":")
		b, err := rawHello(sni, mode)
		return b, false, err
	}
	return nil, false, fmt.Errorf("unknown spec %q", kind)
}

// rawHello is a Go ClientHello for sni, as mode says.
func rawHello(sni, mode string) ([]byte, error) {
	rec, err := fakenet.CaptureHello(&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	var msg []byte
	switch mode {
	case "plain":
		return rec, nil
	case "ech":
		msg, err = fakenet.AddExtension(rec, 0xfe0d, append([]byte{0, 0, 1, 0, 1, 5, 0, 32}, make([]byte, 50)...))
	case "esni":
		msg, err = fakenet.AddExtension(rec, 0xffce, append([]byte{0, 0, 1, 0, 1, 5, 0, 32}, make([]byte, 50)...))
	case "huge": // a legal message, past the cap once framed in 1-byte records
		msg, err = fakenet.AddExtension(rec, 21, make([]byte, 12000))
		if err == nil {
			return fakenet.Reframe(fakenet.Record(msg), 1), nil
		}
	default:
		return nil, fmt.Errorf("unknown hello mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	return fakenet.Record(msg), nil
}

// statuses returns the status codes of the HTTP responses in b, and
// "garbage" for bytes after them that are none.
func statuses(b []byte) []string {
	var out []string
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		if err != nil {
			return append(out, "garbage")
		}
		out = append(out, strconv.Itoa(resp.StatusCode))
	}
}

// rawEnd names how a connection ended.
func rawEnd(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "fin"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error(" + strings.ReplaceAll(err.Error(), " ", "_") + ")"
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
