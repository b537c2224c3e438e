package dnsfilter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestSetPolicyTakesEffectAtOnce: a name added resolves, a name removed
// is refused, and the refusal names the new policy.
func TestSetPolicyTakesEffectAtOnce(t *testing.T) {
	f := newFixture(t, "allowed.test")
	if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("before: %s", dns.RcodeToString[r.Rcode])
	}
	p := fixturePolicy(t, "www.allowed.test")
	f.srv.SetPolicy(p, nil)
	if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("a removed name: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := f.ask(t, "www.allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("an added name: %s %v, want an answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if last := f.log.Last(); last.PolicyHash != p.Hash() {
		t.Errorf("the decision names policy %s, want the new %s", last.PolicyHash, p.Hash())
	}
}

// blockingUpstream holds every question until release is closed.
type blockingUpstream struct {
	Upstream
	asked   chan struct{}
	release chan struct{}
}

func (b *blockingUpstream) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, string, error) {
	b.asked <- struct{}{}
	<-b.release
	return b.Upstream.Exchange(ctx, q)
}

// askHeldUpstream starts a resolver over f (in report mode when report
// is set) whose upstream holds every question until released, asks it
// allowed.test, and returns once the question is upstream; done gets
// the answer.
func askHeldUpstream(t *testing.T, f *fixture, report bool) (srv *Server, up *blockingUpstream, done <-chan *dns.Msg) {
	t.Helper()
	up = &blockingUpstream{Upstream: f.up, asked: make(chan struct{}, 1), release: make(chan struct{})}
	srv, err := New(Config{
		Agent: "test", Clients: f.srv.cfg.Clients, Global: testGlobal, Upstream: up,
		Allower: f.fw, Pins: f.pins, Journal: f.log, Report: report,
	}, f.srv.policy.Load())
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan *dns.Msg, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("allowed.test.", dns.TypeA)
		answers <- srv.Answer(context.Background(), agentSrc, q)
	}()
	<-up.asked
	return srv, up, answers
}

// TestPolicyChangeWhileUpstream: a question decided under the old policy
// whose answer comes back after the name was removed opens nothing.
func TestPolicyChangeWhileUpstream(t *testing.T) {
	f := newFixture(t, "allowed.test")
	srv, up, done := askHeldUpstream(t, f, false)
	srv.SetPolicy(fixturePolicy(t, "www.allowed.test"), nil)
	close(up.release)
	r := <-done
	if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Errorf("answer after the name was removed: %s %v, want NXDOMAIN", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if calls := f.fw.calls; len(calls) != 0 {
		t.Errorf("the sets were opened for a removed name: %v", calls)
	}
	if f.pins.Pinned("allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("a removed name was pinned")
	}
}

func TestPinsRetain(t *testing.T) {
	p := NewPins(10)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("198.18.2.10"), netip.MustParseAddr("198.18.2.11")
	p.Pin("kept.test", []netip.Addr{a}, now.Add(time.Minute))
	p.Pin("kept.test", []netip.Addr{b}, now.Add(-time.Second)) // expired
	p.Pin("gone.test", []netip.Addr{a, b}, now.Add(time.Minute))
	var kept []string
	p.Retain(func(name string, _ netip.Addr) ([]uint16, bool) { return []uint16{443}, name == "kept.test" },
		func(addr netip.Addr, ports []uint16) { kept = append(kept, fmt.Sprint(addr, ports)) })
	if fmt.Sprint(kept) != "[198.18.2.10 [443]]" {
		t.Errorf("Retain kept %v, want kept.test's one live pin", kept)
	}
	if p.Pinned("gone.test", a) || !p.Pinned("kept.test", a) {
		t.Error("Retain kept a refused name's pin, or dropped a kept one")
	}
	if p.Len() != 2 {
		t.Errorf("Len = %d after Retain, want 2 (the expired pin stays until a sweep)", p.Len())
	}
}

// TestListenerLossIsFatal: a listener that stops serving before Shutdown
// is reported to the owner; Shutdown itself reports nothing.
func TestListenerLossIsFatal(t *testing.T) {
	var srv *Server
	serve := func() net.Listener {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(ln, pc); err != nil {
			t.Fatal(err)
		}
		return ln
	}
	run := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		return done
	}
	// The control: Run ends without an error when its context does.
	srv = newFixture(t, "allowed.test").srv
	serve()
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run at the end of its context: %v, want nil", err)
	}
	srv = newFixture(t, "allowed.test").srv
	ln := serve()
	done = run(context.Background())
	ln.Close() // lost from under the server
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run ended with no error when a listener was lost")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a listener that stopped serving was not reported")
	}
}
