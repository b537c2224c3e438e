package dnsfilter

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
)

func reportFixture(t *testing.T, allow ...string) *fixture {
	t.Helper()
	return newFixtureWith(t, func(c *Config) { c.Report = true }, allow...)
}

// TestReportAnswersNamesNotAllowed: in report mode a name no entry
// allows is resolved upstream and answered as an allowed one is, with
// its addresses pinned to it but nothing opened in the sets; the record
// is a would-be refusal for name_not_allowed with the addresses handed
// out, and carries no Blocked EDE. The same question in enforce mode is
// the control: NXDOMAIN, never asked upstream.
func TestReportAnswersNamesNotAllowed(t *testing.T) {
	enforce := newFixture(t, "allowed.test:443")
	if r := enforce.ask(t, "www.allowed.test.", dns.TypeA); r.Rcode != dns.RcodeNameError || len(enforce.up.questions()) != 0 {
		t.Fatalf("enforce mode: %s, upstream asked %v; want NXDOMAIN, not asked", dns.RcodeToString[r.Rcode], enforce.up.questions())
	}

	f := reportFixture(t, "allowed.test:443")
	r := f.ask(t, "WWW.allowed.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answers(r), []string{"198.18.2.10"}) || ede(r) != "" {
		t.Fatalf("report mode: %s %v (EDE %q), want the upstream's answer, no EDE", dns.RcodeToString[r.Rcode], answers(r), ede(r))
	}
	if q := f.up.questions(); !slices.Equal(q, []string{"www.allowed.test. A"}) {
		t.Errorf("upstream asked %v, want the canonical name once", q)
	}
	if got := f.fw.allowed(); len(got) != 0 {
		t.Errorf("a name no entry allows opened the sets: %v", got)
	}
	if !f.pins.Pinned("www.allowed.test", netip.MustParseAddr("198.18.2.10")) {
		t.Error("the answer's address is not pinned to the name")
	}
	ev := f.log.Last()
	if ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameNotAllowed || ev.Name != "www.allowed.test" ||
		!slices.Equal(ev.Addrs, []netip.Addr{netip.MustParseAddr("198.18.2.10")}) || ev.Rule != "" || ev.PolicyHash == "" {
		t.Errorf("record %+v, want would_refuse name_not_allowed with the address handed out", ev)
	}

	// An allowed name is what it always is.
	f.ask(t, "allowed.test.", dns.TypeA)
	if ev := f.log.Last(); ev.Kind != journal.Allowed || ev.Reason != journal.ReasonAllowed {
		t.Errorf("allowed name recorded as %+v", ev)
	}
	if len(f.fw.calls) != 1 || !slices.Equal(f.fw.calls[0].ports, []uint16{443}) {
		t.Errorf("allower calls %+v, want one, for the allowed name's port 443", f.fw.calls)
	}

	// A name the upstream does not know: its NXDOMAIN, recorded as the
	// would-be refusal it is, with what the upstream said.
	r = f.ask(t, "nowhere.test.", dns.TypeA)
	if ev := f.log.Last(); r.Rcode != dns.RcodeNameError || ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameNotAllowed ||
		!strings.Contains(ev.Detail, "NXDOMAIN") {
		t.Errorf("unknown name: %s, record %+v", dns.RcodeToString[r.Rcode], ev)
	}

	// The answer's filter still applies (no entry: not private), and
	// what it removed is a record of its own.
	r = f.ask(t, "meta.allowed.test.", dns.TypeA)
	if !slices.Equal(answers(r), []string{"198.18.2.10"}) {
		t.Errorf("meta.allowed.test answered %v, want only its global address", answers(r))
	}
	evs := f.log.Events()
	would, dropped := evs[len(evs)-2], evs[len(evs)-1]
	if would.Kind != journal.WouldRefuse || !slices.Equal(would.Addrs, []netip.Addr{netip.MustParseAddr("198.18.2.10")}) ||
		dropped.Kind != journal.Dropped || dropped.Reason != journal.ReasonAddrsDropped || len(dropped.Addrs) != 3 {
		t.Errorf("records %+v and %+v, want a would-be refusal with the address handed out and the dropped ones", would, dropped)
	}
}

// TestReportKeepsWhatIsNoPolicysChoice: report mode answers no more
// than a name no entry allows. A query from a foreign source, a message
// that is not one query, a question sluice never forwards and a name
// that is no host name are refused as in enforce mode, and never go
// upstream.
func TestReportKeepsWhatIsNoPolicysChoice(t *testing.T) {
	f := reportFixture(t, "allowed.test")
	ask := func(src netip.Addr, q *dns.Msg) *dns.Msg { return f.srv.Answer(context.Background(), src, q) }
	q := func(name string, qtype uint16) *dns.Msg { m := new(dns.Msg); m.SetQuestion(name, qtype); return m }
	two := q("evil.test.", dns.TypeA)
	two.Question = append(two.Question, dns.Question{Name: "evil2.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	for _, tc := range []struct {
		what   string
		src    netip.Addr
		q      *dns.Msg
		rcode  int
		reason journal.Reason
	}{
		{"foreign client", netip.MustParseAddr("192.0.2.9"), q("evil.test.", dns.TypeA), dns.RcodeRefused, journal.ReasonForeignClient},
		{"two questions", agentSrc, two, dns.RcodeFormatError, journal.ReasonNotQuery},
		{"ANY", agentSrc, q("evil.test.", dns.TypeANY), dns.RcodeRefused, journal.ReasonBadQuestion},
		{"arpa", agentSrc, q("x.arpa.", dns.TypeA), dns.RcodeRefused, journal.ReasonBadQuestion},
		{"not a host name", agentSrc, q("evil\\032name.test.", dns.TypeA), dns.RcodeNameError, journal.ReasonInvalidName},
	} {
		r := ask(tc.src, tc.q)
		if ev := f.log.Last(); r == nil || r.Rcode != tc.rcode || ev.Kind != journal.Refused || ev.Reason != tc.reason {
			t.Errorf("%s: answer %v, record %+v; want %s refused %s", tc.what, r, ev, dns.RcodeToString[tc.rcode], tc.reason)
		}
	}
	if q := f.up.questions(); len(q) != 0 {
		t.Errorf("upstream asked %v", q)
	}
}

// TestReportPassesSpentNameBudget: a new name past its wildcard's
// budget is answered in report mode, opened in the sets on its entry's
// ports (the entry allows it), and journaled as a would-be refusal for
// name_budget_exceeded.
func TestReportPassesSpentNameBudget(t *testing.T) {
	f := reportFixture(t, "*.allowed.test:443!names=1")
	f.ask(t, "www.allowed.test.", dns.TypeA)
	if ev := f.log.Last(); ev.Kind != journal.Allowed {
		t.Fatalf("first new name: %+v, want allowed", ev)
	}
	r := f.ask(t, "short.allowed.test.", dns.TypeA)
	ev := f.log.Last()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameBudget ||
		!strings.Contains(ev.Detail, "new names a minute") || ev.Rule == "" || len(ev.Addrs) != 1 {
		t.Errorf("second new name: %s %v, record %+v; want answered, would_refuse name_budget_exceeded", dns.RcodeToString[r.Rcode], answers(r), ev)
	}
	if len(f.fw.calls) != 2 || !slices.Equal(f.fw.calls[1].ports, []uint16{443}) {
		t.Errorf("allower calls %+v, want the second name opened on 443 too", f.fw.calls)
	}
}

// TestReportNoIPv6: without IPv6 on the gateway an AAAA question for a
// name no entry allows gets the empty answer an allowed one gets, and
// its record is the would-be refusal.
func TestReportNoIPv6(t *testing.T) {
	f := reportFixture(t, "allowed.test")
	f.srv.cfg.IPv6 = false
	r := f.ask(t, "www.allowed.test.", dns.TypeAAAA)
	if ev := f.log.Last(); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameNotAllowed {
		t.Errorf("got %s %v, record %+v; want an empty answer, would_refuse", dns.RcodeToString[r.Rcode], answers(r), ev)
	}
}

// TestReportUpstreamFailure: a name no entry allows that no upstream
// answers is SERVFAIL, as an allowed one is, and its record keeps the
// would-be refusal with the failure in its detail.
func TestReportUpstreamFailure(t *testing.T) {
	f := reportFixture(t, "allowed.test")
	f.up.err = errFake
	r := f.ask(t, "www.allowed.test.", dns.TypeA)
	if ev := f.log.Last(); r.Rcode != dns.RcodeServerFailure || ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameNotAllowed ||
		!strings.Contains(ev.Detail, "upstream_failed") {
		t.Errorf("got %s, record %+v; want SERVFAIL, would_refuse with the failure", dns.RcodeToString[r.Rcode], ev)
	}
}

// TestReportPolicyChangeWhileUpstream: in report mode, a question
// decided under a policy that allowed its name, whose answer comes back
// after the name was removed, is answered all the same, opens nothing
// in the sets, and is journaled as the would-be refusal the new policy
// makes it.
func TestReportPolicyChangeWhileUpstream(t *testing.T) {
	f := reportFixture(t, "allowed.test")
	srv, up, done := askHeldUpstream(t, f, true)
	p := fixturePolicy(t, "www.allowed.test")
	srv.SetPolicy(p, nil)
	close(up.release)
	r := <-done
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Errorf("answer after the name was removed: %s %v, want the answer", dns.RcodeToString[r.Rcode], answers(r))
	}
	if calls := f.fw.calls; len(calls) != 0 {
		t.Errorf("the sets were opened for a removed name: %v", calls)
	}
	if ev := f.log.Last(); ev.Kind != journal.WouldRefuse || ev.Reason != journal.ReasonNameNotAllowed || ev.PolicyHash != p.Hash() || ev.Rule != "" {
		t.Errorf("record %+v, want would_refuse name_not_allowed under the new policy", ev)
	}
}
