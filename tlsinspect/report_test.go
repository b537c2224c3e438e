package tlsinspect

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/testing/fakenet"
)

// tlsWorld is a proxy serving TLS on a loopback listener, whose
// connections all go (as their original destination) to dst: a
// loopback listener the test plays, or whatever the test sets.
type tlsWorld struct {
	px    *Proxy
	rec   *journal.Memory
	proxy string           // the proxy's listening address
	up    *net.TCPListener // the destination
	dst   atomic.Value     // netip.AddrPort: the original destination of new connections
	seen  int              // records looked at so far
	pins  fakePins         // the resolver's pins
	port  uint16           // the destination's port
}

// newTLSWorld starts a proxy of cfg (its journal and pins the world's)
// under a policy of allow, each entry's port the destination's unless
// it names one.
func newTLSWorld(t *testing.T, cfg Config, allow ...string) *tlsWorld {
	t.Helper()
	up, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	w := &tlsWorld{rec: &journal.Memory{}, up: up, port: uint16(up.Addr().(*net.TCPAddr).Port)}
	w.dst.Store(up.Addr().(*net.TCPAddr).AddrPort())
	w.pins = fakePins{"allowed.test": {netip.MustParseAddr("127.0.0.1")}, "port.test": {netip.MustParseAddr("127.0.0.1")}}
	var entries []policy.Entry
	for _, a := range allow {
		if !strings.Contains(a, ":") {
			a = fmt.Sprintf("%s:%d", a, w.port)
		}
		e, err := policy.ParseAllowFlag(a)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	p, err := policy.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pins, cfg.Journal, cfg.Internal = w.pins, w.rec, []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	px, err := New(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	px.loopbackForTests = true
	px.dstForTests = func(int) (netip.AddrPort, error) { return w.dst.Load().(netip.AddrPort), nil }
	w.px = px
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w.proxy = ln.Addr().String()
	if err := px.ServeTLS(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	return w
}

// send opens a connection through the proxy and sends b on it.
func (w *tlsWorld) send(t *testing.T, b []byte) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", w.proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// relayed checks that the next connection the destination accepts
// starts with b, exactly as sent, and that bytes then pass both ways.
func (w *tlsWorld) relayed(t *testing.T, client *net.TCPConn, b []byte) {
	t.Helper()
	w.up.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := w.up.AcceptTCP()
	if err != nil {
		t.Fatalf("the destination got no connection: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	s.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(b))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("the destination read %d bytes (%v), not the %d the agent sent", len(got), err, len(b))
	}
	ping(t, client, s)
	ping(t, s, client)
}

// refused sends b on a new connection through the proxy, which must
// reset it: at once (the reset may come before the dial returns, or
// before the write), or once it has read b.
func (w *tlsWorld) refused(t *testing.T, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", w.proxy)
	if err == nil {
		defer c.Close()
		if _, err = c.Write(b); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("got %v, want a reset", err)
	}
}

// records returns the records since the last call, waiting until there
// are n (the proxy records as it decides, before the bytes go on).
func (w *tlsWorld) records(t *testing.T, n int) []journal.Event {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d records", n), func() bool { return len(w.rec.Events()) >= w.seen+n })
	evs := w.rec.Events()[w.seen:]
	w.seen += len(evs)
	return evs
}

func withSNI(t *testing.T, name string) []byte {
	t.Helper()
	msg, err := fakenet.SetSNI(goHello(t, "allowed.test"), name)
	if err != nil {
		t.Fatal(err)
	}
	return fakenet.Record(msg)
}

func echHello(t *testing.T) []byte {
	t.Helper()
	echOuter := append([]byte{0, 0, 1, 0, 1, 5, 0, 32}, make([]byte, 32)...)
	echOuter = append(echOuter, append([]byte{0, 16}, make([]byte, 16)...)...)
	ech, err := fakenet.AddExtension(goHello(t, "allowed.test"), extECH, echOuter)
	if err != nil {
		t.Fatal(err)
	}
	return fakenet.Record(ech)
}

// TestReportRelaysWhatWouldBeRefused: in report mode a TLS connection
// that enforce mode refuses for what the agent asked to reach, or for a
// hello that names no host the proxy can check, is relayed to its
// original destination, the hello replayed exactly, and journaled once,
// as a would-be refusal with its reason (no allowed record after). An
// allowed connection is recorded as allowed, and the refusals that
// protect the gateway stay refusals.
func TestReportRelaysWhatWouldBeRefused(t *testing.T) {
	w := newTLSWorld(t, Config{Report: true}, "allowed.test", "other.test", "port.test:1")
	for _, tc := range []struct {
		what   string
		hello  []byte
		kind   journal.Kind
		reason journal.Reason
		name   string
	}{
		{"allowed, pinned", goHello(t, "allowed.test"), journal.Allowed, journal.ReasonAllowed, "allowed.test"},
		{"a name not allowed", goHello(t, "evil.test"), journal.WouldRefuse, journal.ReasonSNINotAllowed, "evil.test"},
		{"an address not pinned", goHello(t, "other.test"), journal.WouldRefuse, journal.ReasonNotPinned, "other.test"},
		{"a port not allowed", goHello(t, "port.test"), journal.WouldRefuse, journal.ReasonPortNotAllowed, "port.test"},
		{"no SNI", goHello(t, ""), journal.WouldRefuse, journal.ReasonNoSNI, ""},
		{"an IP literal", withSNI(t, "127.0.0.1"), journal.WouldRefuse, journal.ReasonIPLiteralSNI, "127.0.0.1"},
		{"ECH", echHello(t), journal.WouldRefuse, journal.ReasonECH, "allowed.test"},
		{"not TLS", []byte("SSH-2.0-OpenSSH_9.2\r\n"), journal.WouldRefuse, journal.ReasonNotTLS, ""},
	} {
		c := w.send(t, tc.hello)
		w.relayed(t, c, tc.hello)
		evs := w.records(t, 1)
		if len(evs) != 1 || evs[0].Kind != tc.kind || evs[0].Reason != tc.reason || evs[0].Name != tc.name || evs[0].Dst != w.dst.Load() {
			t.Errorf("%s: records %+v, want one %s %s for %q", tc.what, evs, tc.kind, tc.reason, tc.name)
		}
	}
	// What the agent may not reach whatever the policy, and the limits.
	w.dst.Store(netip.MustParseAddrPort(fmt.Sprintf("127.0.0.2:%d", w.port)))
	w.refused(t, goHello(t, "evil.test"))
	if evs := w.records(t, 1); evs[0].Kind != journal.Refused || evs[0].Reason != journal.ReasonGatewayDst {
		t.Errorf("to an internal address: %+v, want refused gateway_destination", evs)
	}
	// It did not reach the destination: the next connection it gets is
	// the next one let through.
	w.dst.Store(w.up.Addr().(*net.TCPAddr).AddrPort())
	hello := goHello(t, "allowed.test")
	w.relayed(t, w.send(t, hello), hello)

	small := newTLSWorld(t, Config{Report: true, MaxHello: 100}, "allowed.test")
	small.refused(t, goHello(t, "evil.test"))
	if evs := small.records(t, 1); evs[0].Kind != journal.Refused || evs[0].Reason != journal.ReasonHelloTooLarge {
		t.Errorf("a hello over the cap: %+v, want refused hello_too_large", evs)
	}
	small.relayed(t, small.send(t, []byte("SSH-2.0-x\r\n")), []byte("SSH-2.0-x\r\n"))
}

// TestEnforceRefusesWhatReportRelays is the control: the same proxy in
// enforce mode resets a name not allowed, journals the refusal, and
// sends nothing on.
func TestEnforceRefusesWhatReportRelays(t *testing.T) {
	w := newTLSWorld(t, Config{}, "allowed.test")
	w.refused(t, goHello(t, "evil.test"))
	if evs := w.records(t, 1); evs[0].Kind != journal.Refused || evs[0].Reason != journal.ReasonSNINotAllowed {
		t.Errorf("records %+v, want refused sni_not_allowed", evs)
	}
	hello := goHello(t, "allowed.test")
	w.relayed(t, w.send(t, hello), hello)
}

// TestReportableReasons: which refusals report mode lets through, and
// that a host with git or http rules keeps them.
func TestReportableReasons(t *testing.T) {
	px := testProxy(t, "allowed.test")
	px.cfg.Report = true
	plain := &policy.Entry{Host: "plain.test"}
	ruled := &policy.Entry{Host: "ruled.test", HTTP: []policy.HTTPRule{{Methods: []string{"GET"}, Paths: []string{"/"}}}}
	for _, tc := range []struct {
		reason journal.Reason
		e      *policy.Entry
		want   bool
	}{
		{journal.ReasonSNINotAllowed, nil, true},
		{journal.ReasonHostNotAllowed, nil, true},
		{journal.ReasonPortNotAllowed, plain, true},
		{journal.ReasonNotPinned, plain, true},
		{journal.ReasonNoSNI, nil, true},
		{journal.ReasonIPLiteralSNI, nil, true},
		{journal.ReasonInvalidSNI, nil, true},
		{journal.ReasonECH, plain, true},
		{journal.ReasonNotTLS, nil, true},
		{journal.ReasonNotPinned, ruled, true},
		{journal.ReasonPortNotAllowed, ruled, false},
		{journal.ReasonECH, ruled, false},
		{journal.ReasonHTTPNotAllowed, ruled, false},
		{journal.ReasonGatewayDst, nil, false},
		{journal.ReasonHelloTimeout, nil, false},
		{journal.ReasonHelloTooLarge, nil, false},
		{journal.ReasonNoOrigDst, nil, false},
		{journal.ReasonDialFailed, nil, false},
		{journal.ReasonTooManyPending, nil, false},
		{journal.ReasonTooManyConns, nil, false},
		{journal.ReasonNoHost, nil, false},
		{journal.ReasonConflictingHost, nil, false},
		{journal.ReasonConnect, nil, false},
		{journal.ReasonH2C, nil, false},
		{journal.ReasonBadRequest, nil, false},
		{journal.ReasonRevoked, nil, false},
	} {
		if got := px.reportable(tc.reason, tc.e); got != tc.want {
			t.Errorf("reportable(%s, %v) = %v, want %v", tc.reason, tc.e, got, tc.want)
		}
	}
	px.cfg.Report = false
	if px.reportable(journal.ReasonSNINotAllowed, nil) {
		t.Error("enforce mode reports")
	}
}

// TestReportHTTP: on the plain HTTP path in report mode a request whose
// Host is not allowed is sent on and journaled as a would-be refusal,
// an allowed one after it on the same connection is allowed, a policy
// change that no longer allows the connection cuts nothing and is
// journaled once as a would-be revocation, and a request the proxy
// cannot forward as checked (CONNECT) is refused.
func TestReportHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	host := fmt.Sprintf("up.test:%d", dst.Port())
	e, err := policy.ParseAllowFlag(host)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New([]policy.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	rec := &journal.Memory{}
	px, err := New(Config{Pins: fakePins{"up.test": {dst.Addr()}}, Journal: rec, Report: true, HelloTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}, p)
	if err != nil {
		t.Fatal(err)
	}
	px.loopbackForTests = true
	client, in := tcpPair(t)
	if !px.track(in) {
		t.Fatal("not tracked")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer px.untrack(in)
		px.inspectHTTP(in, dst, journal.Event{Layer: journal.LayerHTTP, Dst: dst}, func() {})
	}()
	t.Cleanup(func() {
		client.Close()
		<-done
	})
	client.SetDeadline(time.Now().Add(5 * time.Second))
	var hosts []string
	upstream(t, client, ln, func(req *http.Request, _ *bufio.Reader, w io.Writer) error {
		hosts = append(hosts, req.Host)
		_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err
	})
	t.Cleanup(func() { ln.Close() }) // before upstream's: a test that fails early must not wait on its accept
	r := bufio.NewReader(client)
	exchange := func(h string) {
		t.Helper()
		if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: "+h+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if code, body := readResponse(t, r, "GET"); code != 200 || body != "ok" {
			t.Fatalf("Host %s: %d %q, want the destination's answer", h, code, body)
		}
	}
	exchange("evil.test")
	exchange(host)
	evs := rec.Events()
	if len(evs) != 2 || evs[0].Kind != journal.WouldRefuse || evs[0].Reason != journal.ReasonHostNotAllowed || evs[0].Name != "evil.test" ||
		evs[1].Kind != journal.Allowed || evs[1].Name != "up.test" {
		t.Errorf("records %+v, want would_refuse host_not_allowed for evil.test, then allowed up.test", evs)
	}
	empty, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n := px.SetPolicy(empty, nil); n != 0 {
			t.Errorf("SetPolicy cut %d connections in report mode", n)
		}
	}
	if evs := rec.Events()[2:]; len(evs) != 1 || evs[0].Kind != journal.WouldRefuse || evs[0].Reason != journal.ReasonRevoked {
		t.Errorf("records after two policy changes %+v, want one would-be revocation", evs)
	}
	exchange(host) // the connection goes on, the request now a would-be refusal
	if ev := rec.Last(); ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonHostNotAllowed {
		t.Errorf("request after the change: %+v, want would_refuse host_not_allowed", ev)
	}
	if _, err := io.WriteString(client, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after a CONNECT: read %v, want the connection ended", err)
	}
	if ev := rec.Last(); ev.Kind != journal.Refused || ev.Reason != journal.ReasonConnect {
		t.Errorf("CONNECT: %+v, want refused connect_method", ev)
	}
	if strings.Join(hosts, " ") != "evil.test "+host+" "+host {
		t.Errorf("the destination saw Hosts %q", hosts)
	}
}

// TestReportSetPolicyCutsNothing: in report mode a relayed connection
// that a policy change no longer allows keeps relaying, and is
// journaled once as a would-be revocation, however many changes follow.
func TestReportSetPolicyCutsNothing(t *testing.T) {
	px, rec := loopProxy(t, Config{Report: true})
	client, server := relayed(t, px)
	ping(t, client, server)
	onLoops(px, func(l *loop) {
		for _, c := range l.conns {
			c.name = "gone.test"
		}
	})
	before := len(rec.Events())
	p, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n := px.SetPolicy(p, nil); n != 0 {
			t.Errorf("SetPolicy cut %d connections in report mode", n)
		}
	}
	ping(t, client, server)
	ping(t, server, client)
	if evs := rec.Events()[before:]; len(evs) != 1 || evs[0].Kind != journal.WouldRefuse || evs[0].Reason != journal.ReasonRevoked ||
		evs[0].Name != "gone.test" || evs[0].PolicyHash != p.Hash() {
		t.Errorf("records %+v, want one would-be revocation of gone.test", evs)
	}
}

// TestIdleRelayHoldsNoHello: once relaying, a connection keeps none of
// its hello's bytes, an idle one costing its state alone; the control:
// before the hello is decided, the connection holds what it read.
func TestIdleRelayHoldsNoHello(t *testing.T) {
	w := newTLSWorld(t, Config{}, "allowed.test")
	hello := goHello(t, "allowed.test")
	holds := func(p phase) (conns, holding int) {
		seen := map[*conn]bool{} // a relayed one is there by both its sockets
		onLoops(w.px, func(l *loop) {
			for _, c := range l.conns {
				if !seen[c] && c.phase == p {
					seen[c] = true
					conns++
					if c.hello != nil || c.reader.msg != nil || c.reader.hello.Raw != nil {
						holding++
					}
				}
			}
		})
		return conns, holding
	}
	w.send(t, hello[:len(hello)-1]) // all but the last byte: still reading
	waitFor(t, 5*time.Second, "a connection reading its hello", func() bool { n, h := holds(phaseHello); return n == 1 && h == 1 })
	client := w.send(t, hello)
	w.relayed(t, client, hello)
	if n, h := holds(phaseRelay); n != 1 || h != 0 {
		t.Errorf("%d relayed connections, %d of them holding their hello", n, h)
	}
}

// TestAcceptBurstNotStranded: connections queued beyond what one wake-up
// accepts are still taken, though nothing else happens on the loop: the
// agent's hello, queued behind idle connections, is relayed long before
// their hello timeout. The control: the same hello with nothing queued
// ahead of it passes the same check.
func TestAcceptBurstNotStranded(t *testing.T) {
	w := newTLSWorld(t, Config{HelloTimeout: time.Minute}, "allowed.test")
	hello := goHello(t, "allowed.test")
	w.relayed(t, w.send(t, hello), hello)

	release := make(chan struct{})
	var once sync.Once
	resume := func() { once.Do(func() { close(release) }) }
	t.Cleanup(resume) // a failure below must not leave the loops held, or Close waits for ever
	for _, l := range w.px.loops {
		l.do(func() { <-release }) // the loops stop while the queue fills
	}
	for range 3 * acceptBatch {
		w.send(t, nil)
	}
	client := w.send(t, hello)
	resume()
	w.relayed(t, client, hello)
}
