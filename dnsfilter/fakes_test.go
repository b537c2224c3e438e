package dnsfilter

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// fakeUpstream answers from a zone of RR strings and records every question.
type fakeUpstream struct {
	mu    sync.Mutex
	zone  map[string][]string // lower-case fqdn → RRs in presentation form
	asked []string
	raw   func(q *dns.Msg) *dns.Msg // when set, answers instead of the zone
	err   error
}

// fakeServer is the server fakeUpstream says it is.
const fakeServer = "198.51.100.53:53"

func (f *fakeUpstream) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q.Question[0].Name+" "+dns.TypeToString[q.Question[0].Qtype])
	if f.err != nil {
		return nil, "", f.err
	}
	if f.raw != nil {
		return f.raw(q), fakeServer, nil
	}
	r := new(dns.Msg)
	r.SetReply(q)
	rrs, ok := f.zone[strings.ToLower(q.Question[0].Name)]
	if !ok {
		r.Rcode = dns.RcodeNameError
	}
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		r.Answer = append(r.Answer, rr)
	}
	return r, fakeServer, nil
}

// answerWith makes raw answer every question from now on.
func (f *fakeUpstream) answerWith(raw func(q *dns.Msg) *dns.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.raw = raw
}

func (f *fakeUpstream) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

// fakeAllower records what would have been put into the sets.
type fakeAllower struct {
	mu    sync.Mutex
	calls []allowCall
	err   error
}

type allowCall struct {
	addrs []netip.Addr
	ports []uint16
	need  time.Duration
}

func (f *fakeAllower) Allow(_ context.Context, addrs []netip.Addr, ports []uint16, need time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, allowCall{append([]netip.Addr(nil), addrs...), ports, need})
	return nil
}

func (f *fakeAllower) allowed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		for _, a := range c.addrs {
			out = append(out, a.String())
		}
	}
	return out
}

var agentSrc = netip.MustParseAddr("198.18.0.2")

// testGlobal are the ranges the fake internet of these tests lives on,
// treated as globally reachable as the e2e harness does.
var testGlobal = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

type fixture struct {
	srv  *Server
	up   *fakeUpstream
	fw   *fakeAllower
	pins *Pins
	log  *journal.Memory
}

func newFixture(t testing.TB, allow ...string) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, allow...)
}

// newFixtureWith is newFixture with the Server's Config changed by mod
// first (mod may be nil).
// fixturePolicy is a policy of --allow entries; "HOST!private" marks an
// entry private, "HOST!names=N" gives a wildcard a budget of N new names a
// minute (0: none).
func fixturePolicy(t testing.TB, allow ...string) *policy.Policy {
	t.Helper()
	var entries []policy.Entry
	for _, a := range allow {
		// "HOST!names=N" gives a wildcard a budget of N new names a minute (0: none).
		a, budget, hasBudget := strings.Cut(a, "!names=")
		private := strings.HasSuffix(a, "!private")
		e, err := policy.ParseAllowFlag(strings.TrimSuffix(a, "!private"))
		if err != nil {
			t.Fatal(err)
		}
		e.Private = private
		if hasBudget {
			n, err := strconv.Atoi(budget)
			if err != nil {
				t.Fatal(err)
			}
			e.MaxNewNames = cmp.Or(n, policy.NoNameBudget)
		}
		entries = append(entries, e)
	}
	p, err := policy.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFixtureWith(t testing.TB, mod func(*Config), allow ...string) *fixture {
	t.Helper()
	p := fixturePolicy(t, allow...)
	f := &fixture{up: &fakeUpstream{zone: testZone()}, fw: &fakeAllower{}, pins: NewPins(1000), log: &journal.Memory{}}
	cfg := Config{
		Agent: "test", Clients: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Internal: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Global:   testGlobal,
		IPv6:     true, Upstream: f.up, Allower: f.fw, Pins: f.pins, Journal: f.log,
	}
	if mod != nil {
		mod(&cfg)
		f.pins = cfg.Pins
	}
	var err error
	if f.srv, err = New(cfg, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, e := range f.log.Events() {
			if !e.Reason.Known() {
				t.Errorf("journaled reason %q is not in journal's vocabulary", e.Reason)
			}
		}
	})
	return f
}

func testZone() map[string][]string {
	return map[string][]string{
		"allowed.test.":       {"allowed.test. 300 IN A 198.18.2.10", "allowed.test. 300 IN A 198.18.2.11"},
		"www.allowed.test.":   {"www.allowed.test. 300 IN A 198.18.2.10", "www.allowed.test. 300 IN AAAA 2001:db8:2::10"},
		"v6.allowed.test.":    {"v6.allowed.test. 300 IN AAAA 2001:db8:2::10"},
		"short.allowed.test.": {"short.allowed.test. 1 IN A 198.18.2.10"},
		"huge.allowed.test.":  {"huge.allowed.test. 2147483647 IN A 198.18.2.10"},
		"chain.allowed.test.": {
			"chain.allowed.test. 300 IN CNAME l2.allowed.test.",
			"l2.allowed.test. 300 IN CNAME l1.other.test.",
			"l1.other.test. 120 IN A 198.18.2.20",
			"stray.evil.test. 300 IN A 192.0.2.67", // not on the chain
		},
		"meta.allowed.test.": {
			"meta.allowed.test. 300 IN A 169.254.169.254",
			"meta.allowed.test. 300 IN A 198.18.2.10",
			"meta.allowed.test. 300 IN A 10.0.0.1",
			"meta.allowed.test. 300 IN A 198.18.0.1",
		},
		"mapped.allowed.test.": {"mapped.allowed.test. 300 IN AAAA ::ffff:169.254.169.254", "mapped.allowed.test. 300 IN AAAA 64:ff9b::a9fe:a9fe"},
		"svc.allowed.test.": {
			`svc.allowed.test. 300 IN HTTPS 1 . alpn="h2" ipv4hint="192.0.2.66" ech="AEX+DQBBpQAgACB/DKhfKMMm0Qs35ZYUGDK4rQ9jfqe/XGXcxi5QhBy3AAQAAQABABJlY2guYWxsb3dlZC50ZXN0AAA=" ipv6hint="2001:db8:66::66"`,
		},
		"internal.allowed.test.": {"internal.allowed.test. 300 IN A 10.1.2.3"},
	}
}

func (f *fixture) ask(t testing.TB, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	r := f.srv.Answer(context.Background(), agentSrc, q)
	if r == nil {
		t.Fatalf("%s: no answer", name)
	}
	return r
}

var errFake = errors.New("fake failure")
