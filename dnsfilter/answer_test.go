package dnsfilter

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
)

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.CNAME:
			out = append(out, "cname "+rr.Target)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func ede(m *dns.Msg) string {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok && e.InfoCode == dns.ExtendedErrorCodeBlocked {
				return e.ExtraText
			}
		}
	}
	return ""
}

func TestDeniedNamesNeverLeaveTheGateway(t *testing.T) {
	f := newFixture(t, "allowed.test", "*.wild.test")
	names := []string{
		"evil.test.", "x.allowed.test.", "wild.test.", "secret-data.evil.test.", "allowed.test.evil.test.",
		"evil\\.allowed.test.", "allowed.test\\000.", "a\\000.wild.test.",
	}
	for _, name := range names {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeMX, dns.TypeHTTPS, dns.TypeNULL} {
			r := f.ask(t, name, qt)
			if r.Rcode != dns.RcodeNameError {
				t.Errorf("%s %s: rcode %s, want NXDOMAIN", name, dns.TypeToString[qt], dns.RcodeToString[r.Rcode])
			}
			if !strings.Contains(ede(r), "sluice: ") {
				t.Errorf("%s: no Blocked EDE with a reason, got %q", name, ede(r))
			}
		}
	}
	if q := f.up.questions(); len(q) != 0 {
		t.Errorf("upstream was asked %v; denied queries must not leave the gateway", q)
	}
	if ev := f.log.Last(); ev.Kind != journal.Refused || ev.PolicyHash == "" || ev.Layer != "dns" || ev.Agent != "test" {
		t.Errorf("journal event %+v lacks decision fields", ev)
	}
}

func TestAllowedAnswerProgramsSetsFirst(t *testing.T) {
	f := newFixture(t, "allowed.test:443", "*.allowed.test")
	r := f.ask(t, "Allowed.TEST.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answers(r), []string{"198.18.2.10", "198.18.2.11"}) {
		t.Fatalf("answer %v %v", dns.RcodeToString[r.Rcode], answers(r))
	}
	if r.Question[0].Name != "Allowed.TEST." {
		t.Errorf("question echoed as %q, want the client's spelling", r.Question[0].Name)
	}
	if len(f.fw.calls) != 1 || !slices.Equal(f.fw.calls[0].ports, []uint16{443}) {
		t.Fatalf("allower calls %+v, want one with port 443", f.fw.calls)
	}
	if !f.pins.Pinned("allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("198.18.2.10 not pinned to allowed.test")
	}
	if f.pins.Pinned("www.allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("pin leaked to another name")
	}
	if q := f.up.questions(); !slices.Equal(q, []string{"allowed.test. A"}) {
		t.Errorf("upstream asked %v, want canonical question", q)
	}
}

func TestFailedSetUpdateIsServfail(t *testing.T) {
	f := newFixture(t, "allowed.test")
	f.fw.err = errFake
	r := f.ask(t, "allowed.test.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("got %s %v, want SERVFAIL without addresses", dns.RcodeToString[r.Rcode], answers(r))
	}
	if ev := f.log.Last(); ev.Reason != journal.ReasonSetUpdateFailed {
		t.Errorf("reason %q, want %q", ev.Reason, journal.ReasonSetUpdateFailed)
	}
	if f.pins.Pinned("allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("address pinned although the set update failed")
	}
}

func TestUpstreamFailureIsServfail(t *testing.T) {
	f := newFixture(t, "allowed.test")
	f.up.err = errFake
	if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	f.up.err = nil
	f.up.raw = func(q *dns.Msg) *dns.Msg { // answers another question
		r := new(dns.Msg)
		r.SetQuestion("evil.test.", dns.TypeA)
		r.Response, r.Id = true, q.Id
		r.Answer = []dns.RR{mustRR("evil.test. 300 IN A 192.0.2.66")}
		return r
	}
	if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("mismatched upstream answer accepted: %s %v", dns.RcodeToString[r.Rcode], answers(r))
	}
	if got := f.fw.allowed(); len(got) != 0 {
		t.Errorf("addresses %v allowed from a mismatched answer", got)
	}
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func TestCNAMEChainBindsToQueriedName(t *testing.T) {
	f := newFixture(t, "chain.allowed.test")
	r := f.ask(t, "chain.allowed.test.", dns.TypeA)
	want := []string{"cname l2.allowed.test.", "cname l1.other.test.", "198.18.2.20"}
	if !slices.Equal(answers(r), want) {
		t.Fatalf("answer %v, want %v (stray records dropped)", answers(r), want)
	}
	if got := f.fw.allowed(); !slices.Equal(got, []string{"198.18.2.20"}) {
		t.Errorf("allowed %v, want only the chain's end", got)
	}
	if !f.pins.Pinned("chain.allowed.test", netip.MustParseAddr("198.18.2.20")) {
		t.Error("chain address not pinned to the queried name")
	}
	if f.pins.Pinned("l1.other.test", netip.MustParseAddr("198.18.2.20")) {
		t.Error("chain address pinned to the CNAME target")
	}
	if len(r.Extra) != 1 || r.Extra[0].Header().Rrtype != dns.TypeOPT {
		t.Errorf("additional section %v, want only OPT", r.Extra)
	}
}

func TestForbiddenAddressesDropped(t *testing.T) {
	f := newFixture(t, "meta.allowed.test", "mapped.allowed.test", "internal.allowed.test")
	r := f.ask(t, "meta.allowed.test.", dns.TypeA)
	if !slices.Equal(answers(r), []string{"198.18.2.10"}) {
		t.Errorf("answer %v, want only the public address", answers(r))
	}
	if ev := f.log.Last(); ev.Kind != journal.Dropped || ev.Reason != journal.ReasonAddrsDropped || !slices.Contains(ev.Addrs, netip.MustParseAddr("169.254.169.254")) {
		t.Errorf("event %+v, want a dropped notice (not a refusal) naming the metadata address", ev)
	}
	if r := f.ask(t, "mapped.allowed.test.", dns.TypeAAAA); len(r.Answer) != 0 {
		t.Errorf("mapped/NAT64 forms of metadata passed: %v", answers(r))
	}
	if r := f.ask(t, "internal.allowed.test.", dns.TypeA); len(r.Answer) != 0 {
		t.Errorf("private address passed without private: true: %v", answers(r))
	}
	if got := f.fw.allowed(); !slices.Equal(got, []string{"198.18.2.10"}) {
		t.Errorf("allowed %v", got)
	}
}

func TestPrivateEntryAllowsPrivateButNotGateway(t *testing.T) {
	f := newFixture(t, "internal.allowed.test!private", "meta.allowed.test!private")
	if r := f.ask(t, "internal.allowed.test.", dns.TypeA); !slices.Equal(answers(r), []string{"10.1.2.3"}) {
		t.Errorf("private entry: answer %v, want 10.1.2.3", answers(r))
	}
	r := f.ask(t, "meta.allowed.test.", dns.TypeA)
	if got := answers(r); !slices.Equal(got, []string{"198.18.2.10", "10.0.0.1"}) {
		t.Errorf("private entry: answer %v, want no link-local and no gateway subnet", got)
	}
}

func TestTTLClamp(t *testing.T) {
	f := newFixture(t, "short.allowed.test", "huge.allowed.test")
	r := f.ask(t, "short.allowed.test.", dns.TypeA)
	if r.Answer[0].Header().Ttl != 1 {
		t.Errorf("served TTL %d, want the upstream's 1", r.Answer[0].Header().Ttl)
	}
	if need := f.fw.calls[0].need; need != DefaultMinTTL {
		t.Errorf("1 s TTL opened the set for %v, want min TTL %v", need, DefaultMinTTL)
	}
	r = f.ask(t, "huge.allowed.test.", dns.TypeA)
	if ttl := r.Answer[0].Header().Ttl; time.Duration(ttl)*time.Second != DefaultMaxTTL {
		t.Errorf("served TTL %d, want capped at max TTL", ttl)
	}
	if need := f.fw.calls[1].need; need != DefaultMaxTTL {
		t.Errorf("huge TTL opened the set for %v, want %v", need, DefaultMaxTTL)
	}
}

func TestCacheServesAndRefreshes(t *testing.T) {
	f := newFixture(t, "allowed.test")
	now := time.Unix(1_000_000, 0)
	f.srv.now = func() time.Time { return now }
	f.pins.now = f.srv.now
	f.ask(t, "allowed.test.", dns.TypeA)
	now = now.Add(250 * time.Second)
	r := f.ask(t, "allowed.test.", dns.TypeA)
	if q := f.up.questions(); len(q) != 1 {
		t.Errorf("upstream asked %d times, want 1 (cache)", len(q))
	}
	if ttl := r.Answer[0].Header().Ttl; ttl != 50 {
		t.Errorf("cached TTL %d, want 50", ttl)
	}
	if len(f.fw.calls) != 2 || f.fw.calls[1].need != DefaultMinTTL {
		t.Errorf("cache hit must still assert the sets for max(remaining, min TTL): %+v", f.fw.calls)
	}
	if !f.pins.Pinned("allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("pin lapsed while cache still serves")
	}
	now = now.Add(60 * time.Second)
	f.ask(t, "allowed.test.", dns.TypeA)
	if q := f.up.questions(); len(q) != 2 {
		t.Errorf("upstream asked %d times after expiry, want 2", len(q))
	}
}

func TestHTTPSRecordsStripped(t *testing.T) {
	f := newFixture(t, "svc.allowed.test")
	r := f.ask(t, "svc.allowed.test.", dns.TypeHTTPS)
	if len(r.Answer) != 1 {
		t.Fatalf("answer %v", answers(r))
	}
	s := r.Answer[0].String()
	for _, bad := range []string{"ech=", "ipv4hint", "ipv6hint"} {
		if strings.Contains(s, bad) {
			t.Errorf("HTTPS record kept %s: %s", bad, s)
		}
	}
	if !strings.Contains(s, `alpn="h2"`) {
		t.Errorf("HTTPS record lost alpn: %s", s)
	}
	if len(f.fw.calls) != 0 {
		t.Errorf("hints went into the sets: %+v", f.fw.calls)
	}
}

func TestNoIPv6WithholdsAAAA(t *testing.T) {
	f := newFixture(t, "www.allowed.test")
	f.srv.cfg.IPv6 = false
	r := f.ask(t, "www.allowed.test.", dns.TypeAAAA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("got %s %v, want empty NOERROR", dns.RcodeToString[r.Rcode], answers(r))
	}
	if q := f.up.questions(); len(q) != 0 {
		t.Errorf("upstream asked %v", q)
	}
}

func TestMalformedQueries(t *testing.T) {
	f := newFixture(t, "allowed.test")
	two := new(dns.Msg)
	two.SetQuestion("allowed.test.", dns.TypeA)
	two.Question = append(two.Question, dns.Question{Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	if r := f.srv.Answer(context.Background(), agentSrc, two); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
	resp := new(dns.Msg)
	resp.SetQuestion("allowed.test.", dns.TypeA)
	resp.Response = true
	if r := f.srv.Answer(context.Background(), agentSrc, resp); r != nil {
		t.Errorf("answered a response: %v", r)
	}
	anyq := new(dns.Msg)
	anyq.SetQuestion("allowed.test.", dns.TypeANY)
	if r := f.srv.Answer(context.Background(), agentSrc, anyq); r.Rcode != dns.RcodeRefused {
		t.Errorf("ANY: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	q := new(dns.Msg)
	q.SetQuestion("allowed.test.", dns.TypeA)
	if r := f.srv.Answer(context.Background(), netip.MustParseAddr("192.0.2.9"), q); r.Rcode != dns.RcodeRefused {
		t.Errorf("foreign client: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if q := f.up.questions(); len(q) != 0 {
		t.Errorf("upstream asked %v", q)
	}
}

func TestPinsBounded(t *testing.T) {
	p := NewPins(2)
	until := time.Now().Add(time.Minute)
	a := []netip.Addr{netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2")}
	if !p.Pin("a.test", a, until) {
		t.Fatal("first pin refused")
	}
	if p.Pin("b.test", a[:1], until) {
		t.Error("pin beyond the bound accepted")
	}
	if !p.Pin("a.test", a, until.Add(time.Minute)) {
		t.Error("re-pinning known addresses refused")
	}
}

// TestEmbeddedIPv4FormsDropped: the NAT64 and 6to4 forms of the gateway's
// own address (in Internal), of loopback and of the metadata address are
// judged as the IPv4 address they stand for, for private entries too; the
// same forms of a public address pass.
func TestEmbeddedIPv4FormsDropped(t *testing.T) {
	f := newFixture(t, "allowed.test")
	tests := []struct {
		addr    string
		private bool
		want    bool // dropped
	}{
		{"64:ff9b::c612:1", false, true},    // NAT64 of the gateway, 198.18.0.1
		{"64:ff9b::c612:1", true, true},     //
		{"2002:c612:1::", false, true},      // 6to4 of the gateway
		{"2002:c612:1:ffff::1", true, true}, //
		{"64:ff9b::7f00:1", false, true},    // NAT64 of 127.0.0.1
		{"64:ff9b::7f00:1", true, true},     //
		{"2002:7f00:1::1", false, true},     // 6to4 of 127.0.0.1
		{"2002:7f00:1::1", true, true},      //
		{"64:ff9b::a9fe:a9fe", false, true}, // NAT64 of 169.254.169.254
		{"64:ff9b::a9fe:a9fe", true, true},  //
		{"2002:a9fe:a9fe::", false, true},   // 6to4 of 169.254.169.254
		{"2002:a9fe:a9fe::", true, true},    //
		{"64:ff9b::a01:203", false, true},   // NAT64 of 10.1.2.3: private only with private: true
		{"64:ff9b::a01:203", true, false},   //
		{"64:ff9b::c612:20a", false, false}, // NAT64 of 198.18.2.10, an address of the fake internet
		{"64:ff9b::c612:20a", true, false},  //
		{"2002:c612:20a::1", false, false},  // 6to4 of it
		{"2002:c612:20a::1", true, false},   //
	}
	for _, tt := range tests {
		if got := f.srv.forbidden(netip.MustParseAddr(tt.addr), tt.private); got != tt.want {
			t.Errorf("forbidden(%s, private %v) = %v, want %v", tt.addr, tt.private, got, tt.want)
		}
	}
}

// TestEmbeddedIPv4FormsNotAnswered: the same through a whole answer and
// the sets, for a private entry and a plain one.
func TestEmbeddedIPv4FormsNotAnswered(t *testing.T) {
	f := newFixture(t, "nat64.allowed.test!private", "sixtofour.allowed.test")
	f.up.zone["nat64.allowed.test."] = []string{
		"nat64.allowed.test. 300 IN AAAA 64:ff9b::c612:1",
		"nat64.allowed.test. 300 IN AAAA 64:ff9b::7f00:1",
		"nat64.allowed.test. 300 IN AAAA 64:ff9b::a9fe:a9fe",
		"nat64.allowed.test. 300 IN AAAA 64:ff9b::c612:20a",
	}
	f.up.zone["sixtofour.allowed.test."] = []string{
		"sixtofour.allowed.test. 300 IN AAAA 2002:c612:1::1",
		"sixtofour.allowed.test. 300 IN AAAA 2002:7f00:1::1",
		"sixtofour.allowed.test. 300 IN AAAA 2002:a9fe:a9fe::1",
		"sixtofour.allowed.test. 300 IN AAAA 2002:c612:20a::1",
	}
	for _, tt := range [][2]string{{"nat64.allowed.test.", "64:ff9b::c612:20a"}, {"sixtofour.allowed.test.", "2002:c612:20a::1"}} {
		name, want := tt[0], tt[1]
		r := f.ask(t, name, dns.TypeAAAA)
		if got := answers(r); !slices.Equal(got, []string{want}) {
			t.Errorf("%s: answer %v, want only %s", name, got, want)
		}
		if ev := f.log.Last(); ev.Kind != journal.Dropped || ev.Reason != journal.ReasonAddrsDropped || len(ev.Addrs) != 3 {
			t.Errorf("%s: event %+v, want addresses_dropped naming three addresses", name, ev)
		}
	}
	if got := f.fw.allowed(); !slices.Equal(got, []string{"64:ff9b::c612:20a", "2002:c612:20a::1"}) {
		t.Errorf("allowed %v", got)
	}
}

// TestRefusedSetUpdateNeverAnswers: while the kernel refuses the update
// (a full set), every answer is SERVFAIL, the cached one too; once it
// accepts again, the same name resolves.
func TestRefusedSetUpdateNeverAnswers(t *testing.T) {
	f := newFixture(t, "allowed.test")
	f.fw.err = errors.New("add element: no space left on device")
	for i := range 2 { // the second is answered from the cache
		r := f.ask(t, "allowed.test.", dns.TypeA)
		if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
			t.Fatalf("try %d: got %s %v, want SERVFAIL without addresses", i, dns.RcodeToString[r.Rcode], answers(r))
		}
		if ev := f.log.Last(); ev.Kind != journal.Refused || ev.Reason != journal.ReasonSetUpdateFailed || !strings.Contains(ev.Detail, "no space") {
			t.Errorf("try %d: event %+v, want a refusal for %s with the kernel's error", i, ev, journal.ReasonSetUpdateFailed)
		}
	}
	if q := f.up.questions(); len(q) != 1 {
		t.Errorf("upstream asked %v, want once (the answer is cached, never released)", q)
	}
	f.fw.err = nil
	if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Errorf("after the set accepts again: %s %v, want both addresses", dns.RcodeToString[r.Rcode], answers(r))
	}
}

// TestFullPinTableIsServfail: an answer whose addresses cannot be pinned
// is SERVFAIL, never the addresses.
func TestFullPinTableIsServfail(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.Pins = NewPins(2) }, "*.allowed.test")
	if r := f.ask(t, "v6.allowed.test.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("one pin of two: %s %v, want the address", dns.RcodeToString[r.Rcode], answers(r))
	}
	r := f.ask(t, "www.allowed.test.", dns.TypeA) // a new pin: fits
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("second pin: %s %v, want the address", dns.RcodeToString[r.Rcode], answers(r))
	}
	r = f.ask(t, "chain.allowed.test.", dns.TypeA) // a third
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("full pin table: %s %v, want SERVFAIL without addresses", dns.RcodeToString[r.Rcode], answers(r))
	}
	if ev := f.log.Last(); ev.Kind != journal.Refused || ev.Reason != journal.ReasonPinTableFull {
		t.Errorf("event %+v, want %s", ev, journal.ReasonPinTableFull)
	}
	if f.pins.Pinned("chain.allowed.test", netip.MustParseAddr("198.18.2.20")) {
		t.Error("address pinned although the table was full")
	}
}

// TestPinExpires: a pin lasts as long as the set element, max(TTL, min
// TTL), and not a moment longer; a sweep then frees it.
func TestPinExpires(t *testing.T) {
	f := newFixture(t, "short.allowed.test")
	now := time.Unix(1_000_000, 0)
	f.srv.now = func() time.Time { return now }
	f.pins.now = f.srv.now
	f.ask(t, "short.allowed.test.", dns.TypeA) // TTL 1 s: held for the min TTL
	a := netip.MustParseAddr("198.18.2.10")
	if need := f.fw.calls[0].need; need != DefaultMinTTL {
		t.Fatalf("set element for %v, want %v", need, DefaultMinTTL)
	}
	now = now.Add(DefaultMinTTL - time.Millisecond)
	if !f.pins.Pinned("short.allowed.test", a) {
		t.Error("pin expired before the set element")
	}
	now = now.Add(time.Millisecond)
	if f.pins.Pinned("short.allowed.test", a) {
		t.Error("pin still valid when the set element expires")
	}
	f.pins.Sweep()
	if n := f.pins.Len(); n != 0 {
		t.Errorf("%d pins after a sweep, want 0", n)
	}
}

// TestMaxTTLBoundsSetAndPin: --max-ttl bounds the set element's timeout,
// the pin and the served TTL of a huge upstream TTL.
func TestMaxTTLBoundsSetAndPin(t *testing.T) {
	const maxTTL = 10 * time.Second
	f := newFixtureWith(t, func(c *Config) { c.MinTTL, c.MaxTTL = 2*time.Second, maxTTL }, "huge.allowed.test")
	now := time.Unix(1_000_000, 0)
	f.srv.now = func() time.Time { return now }
	f.pins.now = f.srv.now
	r := f.ask(t, "huge.allowed.test.", dns.TypeA)
	if ttl := time.Duration(r.Answer[0].Header().Ttl) * time.Second; ttl != maxTTL {
		t.Errorf("served TTL %v, want %v", ttl, maxTTL)
	}
	if need := f.fw.calls[0].need; need != maxTTL {
		t.Errorf("set element for %v, want %v", need, maxTTL)
	}
	a := netip.MustParseAddr("198.18.2.10")
	now = now.Add(maxTTL - time.Millisecond)
	if !f.pins.Pinned("huge.allowed.test", a) {
		t.Error("pin expired before max TTL")
	}
	now = now.Add(time.Millisecond)
	if f.pins.Pinned("huge.allowed.test", a) {
		t.Error("pin outlived max TTL")
	}
}

// TestGlobalOverride: documentation and benchmarking addresses are dropped
// from answers unless Config.Global widens them; the override never
// reaches the gateway's own prefixes or private ranges, and New refuses
// one outside the lab ranges.
func TestGlobalOverride(t *testing.T) {
	zone := map[string][]string{
		"lab.allowed.test.": {
			"lab.allowed.test. 300 IN A 198.18.2.10", "lab.allowed.test. 300 IN A 192.0.2.66",
			"lab.allowed.test. 300 IN A 198.18.0.1", "lab.allowed.test. 300 IN A 10.1.2.3",
		},
		"lab6.allowed.test.": {"lab6.allowed.test. 300 IN AAAA 2001:db8:2::10", "lab6.allowed.test. 300 IN AAAA 64:ff9b::c612:20a"},
	}
	for _, tt := range []struct {
		global    []netip.Prefix
		want4     []string
		want6     []string
		wantDrops int
	}{
		{nil, nil, nil, 6},
		{testGlobal, []string{"198.18.2.10", "192.0.2.66"}, []string{"2001:db8:2::10", "64:ff9b::c612:20a"}, 2},
	} {
		f := newFixtureWith(t, func(c *Config) { c.Global = tt.global }, "*.allowed.test")
		drops := 0
		for name, rrs := range zone {
			f.up.zone[name] = rrs
		}
		if got := answers(f.ask(t, "lab.allowed.test.", dns.TypeA)); !slices.Equal(got, tt.want4) {
			t.Errorf("global %v: A answer %v, want %v", tt.global, got, tt.want4)
		}
		if ev := f.log.Last(); ev.Reason == journal.ReasonAddrsDropped {
			drops = len(ev.Addrs)
		}
		if got := answers(f.ask(t, "lab6.allowed.test.", dns.TypeAAAA)); !slices.Equal(got, tt.want6) {
			t.Errorf("global %v: AAAA answer %v, want %v", tt.global, got, tt.want6)
		}
		if ev := f.log.Last(); ev.Reason == journal.ReasonAddrsDropped {
			drops += len(ev.Addrs)
		}
		if drops != tt.wantDrops {
			t.Errorf("global %v: %d addresses dropped, want %d", tt.global, drops, tt.wantDrops)
		}
	}
	for _, bad := range []string{"10.0.0.0/8", "127.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "fd00::/8", "198.16.0.0/14"} {
		_, err := New(Config{Upstream: &fakeUpstream{}, Allower: &fakeAllower{}, Pins: NewPins(1), Journal: &journal.Memory{},
			Global: []netip.Prefix{netip.MustParsePrefix(bad)}}, nil)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("New with Global %s: %v, want an error naming it", bad, err)
		}
	}
}

// TestConnectedNetworksNeedPrivate: an answer into a network the gateway
// is attached to (its router, a NAS of its LAN) is dropped unless the
// entry says private: true, even inside a range counted as global.
func TestConnectedNetworksNeedPrivate(t *testing.T) {
	connected := func(c *Config) { c.Connected = []netip.Prefix{netip.MustParsePrefix("198.18.2.0/28")} }
	f := newFixtureWith(t, connected, "allowed.test", "chain.allowed.test")
	if got := answers(f.ask(t, "allowed.test.", dns.TypeA)); len(got) != 0 {
		t.Errorf("answer into a connected network: %v, want it dropped", got)
	}
	// Control: the same server answers outside the connected network.
	if got := answers(f.ask(t, "chain.allowed.test.", dns.TypeA)); !slices.Contains(got, "198.18.2.20") {
		t.Errorf("answer outside the connected networks: %v, want 198.18.2.20", got)
	}
	f = newFixtureWith(t, connected, "allowed.test!private")
	if got := answers(f.ask(t, "allowed.test.", dns.TypeA)); !slices.Equal(got, []string{"198.18.2.10", "198.18.2.11"}) {
		t.Errorf("private entry, connected network: %v, want both addresses", got)
	}
}
