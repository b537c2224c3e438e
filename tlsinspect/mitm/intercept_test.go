package mitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

type recorder struct {
	mu  sync.Mutex
	evs []journal.Event
}

func (r *recorder) Record(ev journal.Event) journal.Ticket {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	return 0
}

func (r *recorder) Wait(context.Context, journal.Ticket) error { return nil }

func (r *recorder) events() []journal.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]journal.Event(nil), r.evs...)
}

// rig is an interceptor on a loopback listener in front of an HTTPS
// test server named example.com.
type rig struct {
	ca       *CA
	upstream *httptest.Server
	addr     string // the interceptor's listener
	journal  *recorder
	dials    chan string
}

// okRules allow GET /ok/* alone.
const okRules = "    http:\n      - methods: [GET]\n        paths: ['/ok/*']\n"

func newRig(t testing.TB, roots *x509.CertPool, mutate func(*Config)) *rig {
	return newRigRules(t, roots, okRules, mutate)
}

func newRigRules(t testing.TB, roots *x509.CertPool, rules string, mutate func(*Config)) *rig {
	t.Helper()
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok/ws" { // switches protocols whatever was asked
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				io.Copy(io.Discard, c)
				c.Close()
			}
			return
		}
		io.WriteString(w, "upstream "+r.Method+" "+r.URL.Path)
	}))
	t.Cleanup(upstream.Close)
	dst := netip.MustParseAddrPort(upstream.Listener.Addr().String())
	entries, err := policy.ParseFile("p.yaml", []byte(fmt.Sprintf("version: 1\nallow:\n  - host: example.com\n    tls_ports: [%d]\n%s", dst.Port(), rules)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	rg := &rig{ca: ca, upstream: upstream, journal: &recorder{}, dials: make(chan string, 16)}
	if roots == upstreamRoots {
		roots = x509.NewCertPool()
		roots.AddCert(upstream.Certificate())
	}
	cfg := Config{Agent: "t", CA: ca, Roots: roots, Journal: rg.journal, Policy: func() *policy.Policy { return p }}
	if mutate != nil {
		mutate(&cfg)
	}
	i, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rg.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go i.Serve(Conn{Client: c, Name: "example.com", Dst: dst,
				Dial: func(ctx context.Context) (net.Conn, error) {
					select { // recorded for the tests that count dials; benchmarks dial more
					case rg.dials <- dst.String():
					default:
					}
					var d net.Dialer
					return d.DialContext(ctx, "tcp", dst.String())
				}})
		}
	}()
	return rg
}

// upstreamRoots asks newRig for roots that hold the test server's CA.
var upstreamRoots = x509.NewCertPool()

// dial makes a TLS connection as the agent would: trusting the CA,
// offering h2 and HTTP/1.1.
func (rg *rig) dial(t *testing.T) *tls.Conn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rg.ca.PEM())
	c, err := tls.Dial("tcp", rg.addr, &tls.Config{ServerName: "example.com", RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (rg *rig) get(t *testing.T, c *tls.Conn, target, host string) (int, string) {
	t.Helper()
	return rg.send(t, c, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
}

// send writes a raw request and reads the response.
func (rg *rig) send(t *testing.T, c *tls.Conn, raw string) (int, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a hang fails, not a refusal
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestInterceptUpstreamVerified: the upstream's certificate is checked,
// against Roots when given and the system's otherwise (where the test
// server's is not): goproxy's transport would have skipped the check.
func TestInterceptUpstreamVerified(t *testing.T) {
	rg := newRig(t, upstreamRoots, nil)
	if code, body := rg.get(t, rg.dial(t), "/ok/1", "example.com"); code != 200 || body != "upstream GET /ok/1" {
		t.Fatalf("with the upstream's CA in Roots: %d %q, want 200 from upstream", code, body)
	}
	rg = newRig(t, nil, nil)
	if code, body := rg.get(t, rg.dial(t), "/ok/1", "example.com"); code != http.StatusBadGateway || !strings.Contains(body, "certificate") {
		t.Errorf("with the system's roots: %d %q, want 502 naming the certificate", code, body)
	}
}

// TestInterceptIgnoresProxyEnv: HTTP(S)_PROXY, which goproxy's transport
// follows, send nothing anywhere: requests go to the pinned destination.
func TestInterceptIgnoresProxyEnv(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:9")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:9")
	rg := newRig(t, upstreamRoots, nil)
	if code, body := rg.get(t, rg.dial(t), "/ok/2", "example.com"); code != 200 || body != "upstream GET /ok/2" {
		t.Errorf("with a proxy in the environment: %d %q, want 200 from upstream", code, body)
	}
	select {
	case got := <-rg.dials:
		if want := rg.upstream.Listener.Addr().String(); got != want {
			t.Errorf("dialed %s, want the pinned destination %s", got, want)
		}
	default:
		t.Error("nothing dialed")
	}
}

// TestInterceptALPNAndLeafCache: the agent is offered HTTP/1.1 only, and
// two connections are shown the same cached leaf (goproxy without a
// CertStore signs one per connection).
func TestInterceptALPNAndLeafCache(t *testing.T) {
	rg := newRig(t, upstreamRoots, nil)
	a, b := rg.dial(t), rg.dial(t)
	if p := a.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", p)
	}
	if !a.ConnectionState().PeerCertificates[0].Equal(b.ConnectionState().PeerCertificates[0]) {
		t.Error("two connections were shown different leaves")
	}
}

// TestInterceptHandshakeDeadline: a client that connects and sends no
// hello is cut at the handshake deadline, not held (goproxy's handshake
// has none). The other tests, whose handshakes complete, are the control.
func TestInterceptHandshakeDeadline(t *testing.T) {
	rg := newRig(t, upstreamRoots, func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", rg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the interceptor held a silent connection for 10 s")
	}
	if n != 0 || err == nil {
		t.Errorf("read %d bytes, %v; want the connection closed", n, err)
	}
}

// TestInterceptRefusals: a request no rule allows, and one whose Host is
// not the SNI, are refused with a reason a person reads and a journal
// record, and never reach the upstream.
func TestInterceptRefusals(t *testing.T) {
	rg := newRig(t, upstreamRoots, nil)
	for _, tc := range []struct {
		target, host string
		code         int
		reason       journal.Reason
	}{
		{"/secret", "example.com", 403, journal.ReasonHTTPNotAllowed},
		{"/ok/x", "other.example", 421, journal.ReasonConflictingHost},
		{"/ok/x", "example.com:444", 421, journal.ReasonConflictingHost},
		{"https://other.example/ok/x", "example.com", 421, journal.ReasonConflictingHost},
		{"/ok/%2e%2e/secret", "example.com", 400, journal.ReasonBadRequest},
	} {
		code, body := rg.get(t, rg.dial(t), tc.target, tc.host)
		if code != tc.code || strings.HasPrefix(body, "upstream") || !strings.HasPrefix(body, "sluice: ") {
			t.Errorf("GET %s Host %s: %d %q, want %d from sluice", tc.target, tc.host, code, body, tc.code)
		}
		evs := rg.journal.events()
		if last := evs[len(evs)-1]; last.Reason != tc.reason || last.Kind != journal.Refused {
			t.Errorf("GET %s Host %s: journaled %s, want %s", tc.target, tc.host, last.Reason, tc.reason)
		}
	}
}

// TestInterceptNoProtocolSwitch: a request asking to upgrade is refused,
// however its Upgrade and Connection headers are split, and a server that
// switches protocols on its own is not passed on: either would leave a
// raw tunnel behind one checked request. A plain GET is the control.
func TestInterceptNoProtocolSwitch(t *testing.T) {
	rg := newRig(t, upstreamRoots, nil)
	if code, body := rg.get(t, rg.dial(t), "/ok/plain", "example.com"); code != 200 {
		t.Fatalf("control: %d %q", code, body)
	}
	for _, head := range []string{
		"Upgrade: websocket\r\nConnection: Upgrade\r\n",
		"Upgrade:\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
		"Connection: keep-alive, Upgrade\r\n",
	} {
		code, body := rg.send(t, rg.dial(t), "GET /ok/x HTTP/1.1\r\nHost: example.com\r\n"+head+"\r\n")
		if code != 403 || !strings.HasPrefix(body, "sluice: ") {
			t.Errorf("%q: %d %q, want 403 from sluice", head, code, body)
		}
	}
	if code, body := rg.get(t, rg.dial(t), "/ok/ws", "example.com"); code != http.StatusBadGateway || !strings.Contains(body, "switched protocols") {
		t.Errorf("a 101 from the server: %d %q, want 502", code, body)
	}
}

// TestInterceptHeadBound: a request head is read up to maxHead and no
// further (goproxy's reader has no bound): a longer one ends the
// connection. A head of 100 KB passes, the control.
func TestInterceptHeadBound(t *testing.T) {
	rg := newRig(t, upstreamRoots, nil)
	if code, _ := rg.send(t, rg.dial(t), "GET /ok/big HTTP/1.1\r\nHost: example.com\r\nX: "+strings.Repeat("a", 100<<10)+"\r\n\r\n"); code != 200 {
		t.Fatalf("a 100 KB head: %d, want 200", code)
	}
	c := rg.dial(t)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		io.WriteString(c, "GET /ok/big HTTP/1.1\r\nHost: example.com\r\nX: ")
		for range 64 {
			if _, err := io.WriteString(c, strings.Repeat("a", 16<<10)); err != nil {
				return
			}
		}
	}()
	n, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a 1 MB head was still being read after 10 s")
	}
	if n != 0 || err == nil {
		t.Errorf("a 1 MB head: read %d bytes, %v; want the connection closed", n, err)
	}
}

// TestInterceptGitEndpoints: on a host with git and http rules, a
// request at a git endpoint that git would not make is refused, though an
// http rule matches its path; the http rule still serves other paths.
// Its query's values reach no record.
func TestInterceptGitEndpoints(t *testing.T) {
	rg := newRigRules(t, upstreamRoots, "    git: {fetch: ['acme/*'], push: ['acme/*']}\n    http:\n      - methods: [GET, POST]\n        paths: ['/*/*/*', '/*/*/*/*']\n", nil)
	if code, body := rg.send(t, rg.dial(t), "POST /a/b/c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"); code != 200 {
		t.Fatalf("control: %d %q", code, body)
	}
	for _, target := range []string{
		"/attacker/exfil.git/git-receive-pack?x=1",
		"/attacker/exfil.git/info/refs?service=git-receive-pack&access_token=SECRET1",
		"/attacker/exfil.git/info/lfs/objects",
		"/acme/tools.git/info/refs?SECRET2",
	} {
		code, body := rg.send(t, rg.dial(t), "POST "+target+" HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")
		if code != 403 || !strings.HasPrefix(body, "sluice: ") {
			t.Errorf("POST %s: %d %q, want 403 from sluice", target, code, body)
		}
	}
	for _, ev := range rg.journal.events() {
		if strings.Contains(ev.Detail, "SECRET") {
			t.Errorf("a record holds a query's value: %q", ev.Detail)
		}
	}
}

func newRigB(b *testing.B) *rig { return newRig(b, upstreamRoots, nil) }
