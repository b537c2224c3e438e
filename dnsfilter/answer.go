package dnsfilter

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// outcome is what one query came to: the message to send and the decision
// to record. Answer builds it; nothing else writes to the wire.
type outcome struct {
	msg      *dns.Msg
	ev       journal.Event
	record   bool // whether ev goes to the journal
	withEDNS bool
	// dropped is a second record, of the addresses removed from an
	// answer released as a would-be refusal (report mode), whose own
	// record is ev.
	dropped *journal.Event
	// fast is what the fast path needs to serve the answer again, when
	// it came from the cache or the upstream with its addresses open.
	fast *fastInfo
}

// Answer decides and answers one query from src. It returns nil when the
// message deserves no reply at all.
func (s *Server) Answer(ctx context.Context, src netip.Addr, req *dns.Msg) *dns.Msg {
	return s.answer(ctx, src, req).msg
}

// answer is Answer, with the outcome its record was taken from.
func (s *Server) answer(ctx context.Context, src netip.Addr, req *dns.Msg) outcome {
	if s.cfg.AnswerTime != nil {
		defer func(start time.Time) { s.cfg.AnswerTime(time.Since(start)) }(time.Now())
	}
	o := s.resolve(ctx, src, req)
	if o.msg == nil {
		return o
	}
	if o.record {
		for _, ev := range []*journal.Event{&o.ev, o.dropped} {
			if ev != nil {
				ev.Time, ev.Agent, ev.Layer = s.now(), s.cfg.Agent, journal.LayerDNS
				s.cfg.Journal.Record(*ev)
			}
		}
	}
	if req.IsEdns0() != nil {
		o.msg.SetEdns0(1232, false)
		if o.ev.Kind == journal.Refused && o.withEDNS {
			opt := o.msg.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{
				InfoCode:  dns.ExtendedErrorCodeBlocked,
				ExtraText: fmt.Sprintf("sluice: %s (policy %s)", o.ev.Reason, o.ev.PolicyHash),
			})
		}
	}
	return o
}

func (s *Server) resolve(ctx context.Context, src netip.Addr, req *dns.Msg) outcome {
	if req.Response {
		return outcome{}
	}
	p := s.policy.Load()
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		rcode := dns.RcodeFormatError
		if req.Opcode != dns.OpcodeQuery {
			rcode = dns.RcodeNotImplemented
		}
		return outcome{msg: reply(req, rcode), record: true, ev: journal.Event{Reason: journal.ReasonNotQuery, PolicyHash: p.Hash(),
			Detail: fmt.Sprintf("opcode %d, %d questions", req.Opcode, len(req.Question))}}
	}
	q := req.Question[0]
	ev := journal.Event{Name: q.Name, Proto: dns.TypeToString[q.Qtype], PolicyHash: p.Hash()}
	if !policy.InPrefixes(s.cfg.Clients, src) {
		ev.Reason, ev.Detail = journal.ReasonForeignClient, "query from "+src.String()
		return outcome{msg: reply(req, dns.RcodeRefused), record: true, ev: ev}
	}
	// Under arpa. only reverse lookups are asked, except home.arpa. (RFC
	// 8375), the homelab's own names.
	if q.Qclass != dns.ClassINET || q.Qtype == dns.TypeANY ||
		dns.IsSubDomain("arpa.", q.Name) && !dns.IsSubDomain("home.arpa.", q.Name) && q.Qtype != dns.TypePTR {
		ev.Reason = journal.ReasonBadQuestion
		return outcome{msg: reply(req, dns.RcodeRefused), record: true, ev: ev, withEDNS: true}
	}
	d := p.MatchName(q.Name)
	ev.Rule = d.Rule()
	// would is the reason that refuses the question in enforce mode and
	// that report mode journals instead; "" when the policy allows it.
	var would journal.Reason
	if !d.Allow {
		ev.Reason = journal.Reason(d.Reason) // every policy word is a journal one (TestPolicyReasons)
		if !s.reports(ev.Reason) {
			return outcome{msg: reply(req, dns.RcodeNameError), record: true, ev: ev, withEDNS: true}
		}
		would = ev.Reason
	}
	ev.Name = d.Name
	if d.Allow && !s.budgets.admit(d.Entry, d.Name, s.now()) {
		ev.Reason = journal.ReasonNameBudget
		ev.Detail = fmt.Sprintf("more than %d new names a minute under %s", d.Entry.NameBudget(), d.Entry.Host)
		if !s.cfg.Report {
			return outcome{msg: reply(req, dns.RcodeNameError), record: true, ev: ev, withEDNS: true}
		}
		would = ev.Reason
	}
	if q.Qtype == dns.TypeAAAA && !s.cfg.IPv6 {
		ev.Kind, ev.Reason, ev.Detail = journal.Allowed, journal.ReasonAllowed, joinDetail(ev.Detail, "no IPv6 on the gateway: empty answer")
		wouldRefuse(&ev, would)
		return outcome{msg: reply(req, dns.RcodeSuccess), record: true, ev: ev}
	}
	return s.forward(ctx, req, q.Qtype, p, d, would, ev)
}

// reports says whether report mode answers a question the policy
// refuses for reason: a name no entry allows. The other reasons of a
// policy's match (a name that is no host name, no policy in force) are
// no entry's choice, and stay refusals.
func (s *Server) reports(reason journal.Reason) bool {
	return s.cfg.Report && reason == journal.ReasonNameNotAllowed
}

// wouldRefuse makes ev, the record of a question that was answered, a
// would-be refusal for would (report mode), what it said before kept in
// its detail; with would "" it leaves ev as it is.
func wouldRefuse(ev *journal.Event, would journal.Reason) {
	if would == "" {
		return
	}
	if ev.Reason != journal.ReasonAllowed && ev.Reason != would {
		ev.Detail = joinDetail(string(ev.Reason), ev.Detail)
	}
	ev.Kind, ev.Reason = journal.WouldRefuse, would
}

// joinDetail joins two parts of a record's detail.
func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ": " + b
}

// forward answers an allowed question from the cache or the upstream, then
// opens the answer's addresses in the sets, and only then returns it. In
// report mode it answers a question that would be refused for would the
// same way (but that a name no entry allows opens nothing in the sets),
// and journals it as a would-be refusal.
func (s *Server) forward(ctx context.Context, req *dns.Msg, qtype uint16, p *policy.Policy, d policy.Decision, would journal.Reason, ev journal.Event) outcome {
	key := cacheKey{d.Name, qtype}
	now := s.now()
	c, age := s.cache.get(key, p, now)
	var dropped []netip.Addr
	if c == nil {
		f, server, err := s.lookup(ctx, d, qtype)
		if err != nil {
			// The gateway failed to resolve a name the policy allowed:
			// an error of the gateway's, not a refusal.
			if d.Allow { // report mode also asks for names no entry allows
				s.errorUpstream(d, qtype, err)
			}
			ev.Kind, ev.Reason, ev.Detail = journal.Allowed, journal.ReasonUpstreamFailed, joinDetail(ev.Detail, err.Error())
			wouldRefuse(&ev, would)
			return servfail(req, ev)
		}
		t := trouble(qtype, f)
		if warns(qtype, t) && d.Allow {
			s.warnUnresolved(d, qtype, server, t)
		}
		if rcode := f.msg.Rcode; rcode != dns.RcodeSuccess && rcode != dns.RcodeNameError {
			ev.Kind, ev.Reason, ev.Detail = journal.Allowed, journal.ReasonUpstreamFailed, joinDetail(ev.Detail, server+" answered "+t)
			wouldRefuse(&ev, would)
			return servfail(req, ev)
		}
		c, dropped = f.cached, f.dropped
		if t != "" {
			c.note = server + " answered " + t
		}
		c.stored, c.policy = now, p
		s.cache.put(key, c)
	}
	var open time.Time // until when the addresses are open; none: zero
	if len(c.addrs) > 0 {
		s.gate.RLock()
		if cur := s.policy.Load(); cur != p {
			// The policy changed while the question was upstream: decided
			// and filtered again under the one in force, the answer opens
			// only what it allows (an entry that lost private: true
			// drops the private addresses it had let through).
			s.gate.RUnlock()
			d = cur.MatchName(d.Name)
			ev.PolicyHash, ev.Rule = cur.Hash(), d.Rule()
			switch {
			case !d.Allow:
				ev.Reason = journal.Reason(d.Reason)
				if !s.reports(ev.Reason) {
					return outcome{msg: reply(req, dns.RcodeNameError), record: true, ev: ev, withEDNS: true}
				}
				would, ev.Detail = ev.Reason, ""
			case would != journal.ReasonNameBudget: // a budget spent stays spent
				would, ev.Detail = "", ""
			}
			return s.forward(ctx, req, qtype, cur, d, would, ev)
		}
		need := min(max(c.ttl-age, s.cfg.MinTTL), s.cfg.MaxTTL)
		reason, err := s.open(ctx, c, d, need, now)
		s.gate.RUnlock()
		if reason != "" {
			ev.Reason = reason
			if err != nil {
				ev.Detail = err.Error()
			}
			return servfail(req, ev)
		}
		open = now.Add(need)
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Rcode = c.msg.Rcode
	m.Answer = ageRRs(c.msg.Answer, age)
	m.Ns = ageRRs(c.msg.Ns, age)
	ev.Kind, ev.Reason, ev.Addrs, ev.Detail = journal.Allowed, journal.ReasonAllowed, c.addrs, joinDetail(ev.Detail, c.note)
	if would != "" {
		// Report mode: the answer went out; its record says what would
		// have refused it, and the addresses it handed out (for a flow
		// to one of them to be taken as the name's). The addresses the
		// answer's filter removed are a record of their own, as always.
		wouldRefuse(&ev, would)
		o := outcome{msg: m, record: true, ev: ev}
		if len(dropped) > 0 {
			dr := ev
			dr.Kind, dr.Reason, dr.Addrs, dr.Detail = journal.Dropped, journal.ReasonAddrsDropped, dropped, ""
			o.dropped = &dr
		}
		return o
	}
	if len(dropped) > 0 {
		// Released without some of its addresses: a notice, not a refusal.
		ev.Kind, ev.Reason, ev.Addrs = journal.Dropped, journal.ReasonAddrsDropped, dropped
	}
	f := &fastInfo{c: c, p: p, open: open, name: d.Name}
	if d.Entry != nil && d.Entry.NameBudget() > 0 {
		f.budget = d.Entry
	}
	return outcome{msg: m, record: true, ev: ev, fast: f}
}

// open puts the answer's addresses in the sets and the pin table for at
// least need (the remaining TTL bounded by MinTTL and MaxTTL), or says
// why it could not. A name no entry allows (report mode) has no ports to
// open: its addresses are only pinned.
func (s *Server) open(ctx context.Context, c *cached, d policy.Decision, need time.Duration, now time.Time) (journal.Reason, error) {
	if d.Allow {
		if err := s.cfg.Allower.Allow(ctx, c.addrs, d.Entry.Ports, need); err != nil {
			return journal.ReasonSetUpdateFailed, err
		}
	}
	if !s.cfg.Pins.Pin(d.Name, c.addrs, now.Add(need)) {
		return journal.ReasonPinTableFull, nil
	}
	return "", nil
}

// reply is an answer to req with rcode and nothing in it but the question.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

func servfail(req *dns.Msg, ev journal.Event) outcome {
	return outcome{msg: reply(req, dns.RcodeServerFailure), record: true, ev: ev}
}

// lookup asks the upstream with a query of our own making and filters the
// answer, of any rcode, down to what the agent may see, saying what it
// dropped and which server answered. An error means that no server gave
// an answer to the question.
func (s *Server) lookup(ctx context.Context, d policy.Decision, qtype uint16) (filtered, string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(d.Name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(1232, false) // no options from the agent ever travel upstream
	r, server, err := s.cfg.Upstream.Exchange(ctx, q)
	if err != nil {
		return filtered{}, "", err
	}
	if err := matches(q, r); err != nil {
		return filtered{}, "", &UpstreamError{Failures: []ServerFailure{{Server: server, Err: err}}}
	}
	return s.filterAnswer(d, qtype, r), server, nil
}

type filtered struct {
	*cached
	dropped []netip.Addr
}

// filterAnswer keeps only the CNAME chain that starts at the question and
// the records of the asked type at its end, drops forbidden addresses and
// strips ECH and address hints from HTTPS/SVCB records. Authority records
// other than the SOA, and the additional section, are never passed on.
func (s *Server) filterAnswer(d policy.Decision, qtype uint16, r *dns.Msg) filtered {
	out := new(dns.Msg)
	out.Rcode = r.Rcode
	owner := dns.Fqdn(d.Name)
	var addrs, dropped []netip.Addr
	var addrTTL uint32 = ^uint32(0)
	minTTL := ^uint32(0)
	for range maxChain {
		var next string
		for _, rr := range r.Answer {
			if rr.Header().Class != dns.ClassINET || !strings.EqualFold(rr.Header().Name, owner) {
				continue
			}
			if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				if next == "" {
					next = strings.ToLower(c.Target)
					out.Answer = append(out.Answer, &dns.CNAME{Hdr: hdr(c.Hdr, owner), Target: next})
					minTTL = min(minTTL, c.Hdr.Ttl)
				}
				continue
			}
			if rr.Header().Rrtype != qtype {
				continue
			}
			var kept dns.RR
			switch rr := rr.(type) {
			case *dns.A:
				kept = s.keepAddr(rr, rr.A.To4(), d, &addrs, &dropped)
			case *dns.AAAA:
				kept = s.keepAddr(rr, rr.AAAA, d, &addrs, &dropped)
			case *dns.HTTPS:
				kept = &dns.HTTPS{SVCB: stripSVCB(rr.SVCB)}
			case *dns.SVCB:
				svcb := stripSVCB(*rr)
				kept = &svcb
			default:
				kept = dns.Copy(rr)
			}
			if kept == nil {
				continue
			}
			kept.Header().Name = owner
			out.Answer = append(out.Answer, kept)
			minTTL = min(minTTL, rr.Header().Ttl)
			if qtype == dns.TypeA || qtype == dns.TypeAAAA {
				addrTTL = min(addrTTL, rr.Header().Ttl)
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok && len(out.Answer) == 0 {
			out.Ns = append(out.Ns, dns.Copy(soa))
			minTTL = min(minTTL, soa.Hdr.Ttl, soa.Minttl)
		}
	}
	ttl := negativeTTL
	if minTTL != ^uint32(0) {
		ttl = time.Duration(minTTL) * time.Second
	}
	if addrTTL != ^uint32(0) {
		ttl = min(ttl, time.Duration(addrTTL)*time.Second)
	}
	ttl = min(ttl, s.cfg.MaxTTL)
	capTTLs(out.Answer, ttl)
	capTTLs(out.Ns, ttl)
	return filtered{cached: &cached{msg: out, addrs: addrs, ttl: ttl}, dropped: dropped}
}

func hdr(h dns.RR_Header, owner string) dns.RR_Header {
	h.Name = owner
	h.Rdlength = 0
	return h
}

func (s *Server) keepAddr(rr dns.RR, ip []byte, d policy.Decision, addrs, dropped *[]netip.Addr) dns.RR {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return nil
	}
	if s.forbidden(a, d.Entry != nil && d.Entry.Private) { // no entry (report mode): not private
		*dropped = append(*dropped, a)
		return nil
	}
	if !slices.Contains(*addrs, a) {
		*addrs = append(*addrs, a)
	}
	return dns.Copy(rr)
}

// forbidden says whether an answer address must be dropped. The gateway's
// and agents' own prefixes are dropped even for private entries; the
// networks the gateway is attached to, for all others. An IPv6
// address that stands for an IPv4 one (NAT64, 6to4) is judged as that IPv4
// address too, so no form of the gateway, loopback or the metadata address
// passes.
func (s *Server) forbidden(a netip.Addr, private bool) bool {
	if a.Is4In6() {
		return true // a mapped address in an AAAA record is never what a client should dial
	}
	if policy.InPrefixes(s.cfg.Internal, a) {
		return true
	}
	if v4, ok := policy.EmbeddedIPv4(a); ok {
		return s.forbidden(v4, private) // the forms themselves are global: NAT64 is, 6to4 is N/A
	}
	if private {
		return a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() ||
			(a.Is4() && a.As4() == [4]byte{255, 255, 255, 255})
	}
	if policy.InPrefixes(s.cfg.Connected, a) {
		return true
	}
	return policy.Forbidden(a) && !policy.InPrefixes(s.cfg.Global, a)
}

// stripSVCB removes the ECH configuration (which would let a client hide
// its real SNI) and the address hints (addresses that never went through
// the sets) from an HTTPS/SVCB record.
func stripSVCB(rr dns.SVCB) dns.SVCB {
	out := rr
	out.Hdr.Rdlength = 0
	out.Value = nil
	for _, kv := range rr.Value {
		switch kv.Key() {
		case dns.SVCB_ECHCONFIG, dns.SVCB_IPV4HINT, dns.SVCB_IPV6HINT:
			continue
		}
		out.Value = append(out.Value, kv)
	}
	return out
}

func capTTLs(rrs []dns.RR, ttl time.Duration) {
	limit := uint32(ttl / time.Second)
	for _, rr := range rrs {
		rr.Header().Ttl = min(rr.Header().Ttl, limit)
	}
}

// ageRRs copies rrs with their TTLs lowered by age, as a cache must.
func ageRRs(rrs []dns.RR, age time.Duration) []dns.RR {
	out := make([]dns.RR, len(rrs))
	sec := uint32(age / time.Second)
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		h := out[i].Header()
		h.Ttl -= min(h.Ttl, sec)
	}
	return out
}
