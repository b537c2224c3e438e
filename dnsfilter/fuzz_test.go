package dnsfilter

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/policy"
)

func packed(t testing.TB, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzQuery feeds arbitrary bytes from the agent to the resolver. Whatever
// it sends, the resolver must not crash and must not ask the upstream about
// a name the policy does not allow.
func FuzzQuery(f *testing.F) {
	for _, name := range []string{"allowed.test.", "x.wild.test.", "evil.test.", "evil\\.allowed.test."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		q.SetEdns0(4096, true)
		f.Add(packed(f, q))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		fx := newFixture(t, "allowed.test", "*.wild.test", "chain.allowed.test")
		r := fx.srv.Answer(context.Background(), agentSrc, req)
		if r != nil {
			if _, err := r.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v", err)
			}
		}
		p := fx.srv.policy.Load()
		for _, q := range fx.up.questions() {
			name := strings.Fields(q)[0]
			if !p.MatchName(name).Allow {
				t.Fatalf("upstream asked about %q, which the policy does not allow", name)
			}
		}
	})
}

// FuzzUpstreamAnswer feeds arbitrary upstream answers (made to match the
// question, as a spoofer would) to the filter. Only public addresses may
// reach the sets, and only ones present in the answer.
func FuzzUpstreamAnswer(f *testing.F) {
	seed := func(rrs ...string) {
		r := new(dns.Msg)
		r.SetQuestion("allowed.test.", dns.TypeA)
		r.Response = true
		for _, s := range rrs {
			r.Answer = append(r.Answer, mustRR(s))
		}
		f.Add(packed(f, r))
	}
	seed("allowed.test. 300 IN A 198.18.2.10")
	seed("allowed.test. 0 IN CNAME a.evil.test.", "a.evil.test. 5 IN A 192.0.2.66", "b.evil.test. 5 IN A 192.0.2.67")
	seed("allowed.test. 300 IN A 169.254.169.254", "allowed.test. 300 IN AAAA ::ffff:127.0.0.1")
	seed("allowed.test. 300 IN CNAME allowed.test.")
	f.Fuzz(func(t *testing.T, data []byte) {
		raw := new(dns.Msg)
		if err := raw.Unpack(data); err != nil {
			return
		}
		fx := newFixture(t, "allowed.test")
		fx.up.raw = func(q *dns.Msg) *dns.Msg {
			r := raw.Copy()
			r.Id, r.Response, r.Question = q.Id, true, q.Question
			return r
		}
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS} {
			r := fx.ask(t, "allowed.test.", qt)
			if _, err := r.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v", err)
			}
		}
		present := map[netip.Addr]bool{}
		for _, rr := range raw.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					present[a] = true
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					present[a] = true
				}
			}
		}
		for _, c := range fx.fw.calls {
			for _, a := range c.addrs {
				v4, embeds := policy.EmbeddedIPv4(a)
				global := policy.InPrefixes(testGlobal, a) || embeds && policy.InPrefixes(testGlobal, v4)
				if policy.Forbidden(a) && !global || !present[a] || a.Is4In6() {
					t.Fatalf("address %s reached the sets", a)
				}
			}
		}
	})
}
