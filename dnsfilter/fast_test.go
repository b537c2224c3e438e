package dnsfilter

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
)

// query packs a query for name and qtype with id, the RD and CD bits,
// and, when size > 0, an OPT record of that UDP size (DO set with do,
// and a cookie option with cookie).
func query(t testing.TB, name string, qtype, id uint16, rd, cd bool, size uint16, do, cookie bool) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id, m.RecursionDesired, m.CheckingDisabled = id, rd, cd
	if size > 0 {
		m.SetEdns0(size, do)
		if cookie {
			o := m.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// udpOnce runs the query b through the server as a UDP reader and its
// workers do: the fast path, else the slow one.
func udpOnce(f *fixture, b []byte) []byte {
	if out, ok := f.srv.fastAnswer(b, agentSrc, nil); ok {
		return bytes.Clone(out)
	}
	u := &udpScratch{buf: make([]byte, udpReadSize)}
	return bytes.Clone(f.srv.answerSlow(context.Background(), bytes.Clone(b), agentSrc, u))
}

// slowOnce is udpOnce with the fast path off (and nothing kept for it).
func slowOnce(f *fixture, b []byte) []byte {
	fast := f.srv.fast
	f.srv.fast = nil
	defer func() { f.srv.fast = fast }()
	return udpOnce(f, b)
}

// fastOnce asks the fast path alone.
func fastOnce(f *fixture, b []byte) ([]byte, bool) {
	out, ok := f.srv.fastAnswer(b, agentSrc, nil)
	return bytes.Clone(out), ok
}

func lastEvent(f *fixture) journal.Event {
	evs := f.log.Events()
	if len(evs) == 0 {
		return journal.Event{}
	}
	return evs[len(evs)-1]
}

// fastFixture is a server on a clock of the test's, with names that give
// an NXDOMAIN with an SOA, and 20 addresses (more than fit in 512 bytes).
func fastFixture(t *testing.T) (*fixture, *time.Time) {
	f := newFixture(t, "allowed.test", "*.allowed.test")
	clock := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	f.srv.now = func() time.Time { return clock }
	// Every fast answer recorded at once, to compare with the slow
	// path's record (TestFastJournalFolds folds them).
	f.srv.held.interval = 0
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("many.allowed.test. 300 IN A 198.18.3.%d", i+1))
	}
	f.up.zone["many.allowed.test."] = many
	long := strings.Repeat(`\001`, 200)
	f.up.zone["txt.allowed.test."] = []string{`txt.allowed.test. 300 IN TXT "a` + long + `"`, `txt.allowed.test. 300 IN TXT "b` + long + `"`, `txt.allowed.test. 300 IN TXT "c` + long + `"`}
	zone := f.up.zone
	f.up.answerWith(func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		if name == "nx.allowed.test." {
			r.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("allowed.test. 120 IN SOA ns.allowed.test. host.allowed.test. 1 7200 900 1209600 90")
			r.Ns = []dns.RR{soa}
			return r
		}
		rrs, ok := zone[name]
		if !ok {
			r.Rcode = dns.RcodeNameError
		}
		for _, s := range rrs {
			rr, _ := dns.NewRR(s)
			if rr.Header().Rrtype == q.Question[0].Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				r.Answer = append(r.Answer, rr)
			}
		}
		return r
	})
	return f, &clock
}

// withOption returns the query q (whose OPT record is last) with one
// more option, opt, raw.
func withOption(t testing.TB, q []byte, opt []byte) []byte {
	t.Helper()
	b := append(bytes.Clone(q), opt...)
	rdlen := len(b) - len(q) + int(q[len(q)-2])<<8 | int(q[len(q)-1])
	b[len(q)-2], b[len(q)-1] = byte(rdlen>>8), byte(rdlen)
	return b
}

// TestFastAnswerEqualsSlow: for every question the fast path serves, at
// every age it serves it, its reply is byte for byte what the slow path
// (unpack, Answer, Truncate, pack) sends for the same query at the same
// moment (ID, RD and CD bits, the question's case, aged TTLs, EDNS), and
// it journals the same record.
func TestFastAnswerEqualsSlow(t *testing.T) {
	f, clock := fastFixture(t)
	t0 := *clock
	questions := []struct {
		name  string
		qtype uint16
	}{
		{"allowed.test.", dns.TypeA},
		{"www.allowed.test.", dns.TypeAAAA},
		{"chain.allowed.test.", dns.TypeA},
		{"nx.allowed.test.", dns.TypeA},
		{"many.allowed.test.", dns.TypeA},
	}
	// Each question primed once, without EDNS and with.
	for _, q := range questions {
		for _, size := range []uint16{0, 1232} {
			if udpOnce(f, query(t, q.name, q.qtype, 1, true, false, size, false, false)) == nil {
				t.Fatalf("%s: no answer", q.name)
			}
		}
	}
	kept := map[string]*fastEntry{} // each question's, with or without EDNS
	for k, e := range f.srv.fast.entries {
		kept[k.name] = e
	}
	served := 0
	for _, age := range []time.Duration{0, 1500 * time.Millisecond, 59 * time.Second, 89 * time.Second, 200 * time.Second} {
		*clock = t0.Add(age)
		for _, q := range questions {
			var wire [255]byte
			if _, ok := parseFastQuery(query(t, q.name, q.qtype, 1, true, false, 0, false, false), &wire); !ok {
				t.Fatal("the fixture's query is not plain")
			}
			// Served fast within the TTL, while the addresses stay open as
			// long as the slow path would keep them (TestFastAnswerDeclines).
			e := kept[string(wire[:len(q.name)+1])]
			need := min(max(e.lifetime-age, f.srv.cfg.MinTTL), f.srv.cfg.MaxTTL)
			if age >= e.lifetime || !e.open.IsZero() && e.open.Before(clock.Add(need)) {
				continue
			}
			for i, variant := range []struct {
				name   string
				id     uint16
				rd, cd bool
				size   uint16
				do, ck bool
			}{
				{q.name, 7, true, false, 0, false, false},
				{strings.ToUpper(q.name[:3]) + q.name[3:], 0xbeef, false, true, 0, false, false},
				{q.name, 9, true, false, 1232, false, false},
				{strings.ToUpper(q.name), 0xffff, true, true, 4096, true, true},
			} {
				b := query(t, variant.name, q.qtype, variant.id, variant.rd, variant.cd, variant.size, variant.do, variant.ck)
				fast, ok := fastOnce(f, b)
				fastEv := lastEvent(f)
				slow := slowOnce(f, b)
				slowEv := lastEvent(f)
				if q.name == "many.allowed.test." && variant.size == 0 {
					if ok {
						t.Errorf("%s without EDNS: the fast path served a reply that takes more than 512 bytes", q.name)
					}
					continue
				}
				if !ok {
					t.Errorf("age %v, %s variant %d: the fast path declined", age, q.name, i)
					continue
				}
				served++
				if !bytes.Equal(fast, slow) {
					fm, sm := new(dns.Msg), new(dns.Msg)
					_ = fm.Unpack(fast)
					_ = sm.Unpack(slow)
					t.Errorf("age %v, %s variant %d: fast reply\n%v\n% x\nslow reply\n%v\n% x", age, q.name, i, fm, fast, sm, slow)
				}
				if !reflect.DeepEqual(fastEv, slowEv) {
					t.Errorf("age %v, %s variant %d: fast path journaled %+v, slow %+v", age, q.name, i, fastEv, slowEv)
				}
			}
		}
	}
	if served < 70 {
		t.Errorf("the fast path served %d replies", served)
	}
}

// TestFastAnswerDeclines: the fast path leaves to the slow path whatever
// it cannot answer as the slow path would: a query that is not plain, a
// reply too large for the query's UDP size, a policy changed since (a
// reload), an answer past its cache lifetime, and one whose sets and pins
// near their end (then the slow path opens them again, and the fast path
// serves once more). Each has its control: the same query served fast.
func TestFastAnswerDeclines(t *testing.T) {
	f, clock := fastFixture(t)
	t0 := *clock
	q := query(t, "allowed.test.", dns.TypeA, 1, true, false, 1232, false, false)
	if _, ok := fastOnce(f, q); ok {
		t.Fatal("served before anything was kept")
	}
	udpOnce(f, q)
	if _, ok := fastOnce(f, q); !ok {
		t.Fatal("control: not served once kept")
	}
	// Not plain: two questions; an answer record; trailing bytes; a
	// compression pointer in the question; an OPT of version 1.
	m := new(dns.Msg)
	m.SetQuestion("allowed.test.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	two, _ := m.Pack()
	withAnswer := bytes.Clone(q)
	withAnswer[7] = 1
	trailing := append(bytes.Clone(q), 0)
	pointer := append(bytes.Clone(q[:12]), 0xc0, 12, 0, 1, 0, 1)
	v1 := bytes.Clone(q)
	v1[len(v1)-5] = 1 // the OPT's version
	// An OPT option cut short, and one of a kind miekg/dns checks (a
	// client subnet of family 3): the slow path drops both.
	cut := withOption(t, q, []byte{0, 8, 0})
	subnet := withOption(t, q, []byte{0, 8, 0, 4, 0, 3, 0, 0})
	for name, b := range map[string][]byte{"two questions": two, "an answer record": withAnswer, "trailing bytes": trailing, "a pointer": pointer, "EDNS version 1": v1,
		"an option cut short": cut, "a malformed client subnet": subnet} {
		if _, ok := fastOnce(f, b); ok {
			t.Errorf("%s: served by the fast path", name)
		}
	}
	for name, b := range map[string][]byte{"an option cut short": cut, "a malformed client subnet": subnet} {
		if out := slowOnce(f, b); out != nil {
			t.Errorf("%s: the slow path answered; the test means a query it drops", name)
		}
	}
	// A reply that packs smaller than Truncate reckons (escaped bytes in
	// TXT records): kept from a query of 4096 bytes, it is not served to
	// one whose UDP size is its packed length, which the slow path
	// truncates.
	txt := query(t, "txt.allowed.test.", dns.TypeTXT, 1, true, false, 4096, false, false)
	packed := udpOnce(f, txt)
	if _, ok := fastOnce(f, txt); !ok {
		t.Error("control: TXT records not served fast at 4096 bytes")
	}
	small := query(t, "txt.allowed.test.", dns.TypeTXT, 1, true, false, uint16(len(packed)), false, false)
	if _, ok := fastOnce(f, small); ok {
		t.Errorf("served fast at %d bytes, which the slow path truncates", len(packed))
	}
	// Too large for 512 bytes.
	udpOnce(f, query(t, "many.allowed.test.", dns.TypeA, 1, true, false, 1232, false, false))
	if _, ok := fastOnce(f, query(t, "many.allowed.test.", dns.TypeA, 1, true, false, 1232, false, false)); !ok {
		t.Error("control: 20 addresses under EDNS not served fast")
	}
	if _, ok := fastOnce(f, query(t, "many.allowed.test.", dns.TypeA, 1, true, false, 512, false, false)); ok {
		t.Error("20 addresses served fast to a query of 512 bytes")
	}
	// Near the end of the sets (TTL 300, MinTTL 60: opened until 300 s,
	// and an answer at 280 s keeps them open until 340 s): the slow path
	// opens them again.
	*clock = t0.Add(280 * time.Second)
	calls := f.fw.count()
	if _, ok := fastOnce(f, q); ok {
		t.Error("served fast with the sets 20 s from their end")
	}
	udpOnce(f, q)
	if got := f.fw.count(); got != calls+1 {
		t.Errorf("the slow path did not open the addresses again (%d calls, %d before)", got, calls)
	}
	if _, ok := fastOnce(f, q); !ok {
		t.Error("not served fast once opened again")
	}
	// Past the cache lifetime.
	*clock = t0.Add(300 * time.Second)
	if _, ok := fastOnce(f, q); ok {
		t.Error("served fast past its TTL")
	}
	udpOnce(f, q) // from the upstream again
	if _, ok := fastOnce(f, q); !ok {
		t.Error("control: not served fast once asked again")
	}
	// A reload.
	f.srv.SetPolicy(fixturePolicy(t, "allowed.test", "*.allowed.test"), nil)
	if _, ok := fastOnce(f, q); ok {
		t.Error("served fast under another policy")
	}
	udpOnce(f, q)
	if _, ok := fastOnce(f, q); !ok {
		t.Error("control: not served fast under the new policy once answered")
	}
	// A reload that drops the name: refused, by the slow path.
	f.srv.SetPolicy(fixturePolicy(t, "other.test"), nil)
	if _, ok := fastOnce(f, q); ok {
		t.Error("served fast after the name was revoked")
	}
	r := new(dns.Msg)
	if err := r.Unpack(udpOnce(f, q)); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("after the revocation: %v, %v; want NXDOMAIN", r, err)
	}
	// A client outside the agent's prefixes.
	f.srv.SetPolicy(fixturePolicy(t, "allowed.test"), nil)
	udpOnce(f, q)
	if _, ok := f.srv.fastAnswer(q, netip.MustParseAddr("198.51.100.7"), nil); ok {
		t.Error("served fast to a foreign client")
	}
}

func (f *fakeAllower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// TestFastAnswerTimed: the latency histogram gets one sample per answer,
// fast or slow, and none for a query the fast path leaves to the slow
// one before that answers it, or for junk.
func TestFastAnswerTimed(t *testing.T) {
	samples := 0
	f := newFixtureWith(t, func(c *Config) { c.AnswerTime = func(time.Duration) { samples++ } }, "allowed.test")
	q := query(t, "allowed.test.", dns.TypeA, 1, true, false, 1232, false, false)
	for i, want := range []int{1, 2} { // the slow path, then the fast one
		udpOnce(f, q)
		if samples != want {
			t.Errorf("answer %d: %d samples, want %d", i+1, samples, want)
		}
	}
	if udpOnce(f, []byte("junk")) != nil || samples != 2 {
		t.Errorf("junk: %d samples, want 2", samples)
	}
}

// countAnswers counts the records of name in evs, and the answers they
// stand for.
func countAnswers(evs []journal.Event, name string) (records int, answers int64) {
	for _, ev := range evs {
		if ev.Name == name {
			records++
			answers += max(ev.Count, 1)
		}
	}
	return records, answers
}

// TestFastJournalFolds: the fast path records the first answer of an
// interval at once and the repeats after it as one record with their
// count, at the interval's end (by its timer, or at Shutdown), so that
// the journal counts every answer: none lost when the entry is dropped
// meanwhile (a reload), or when the server stops.
func TestFastJournalFolds(t *testing.T) {
	f, clock := fastFixture(t)
	f.srv.held.interval = time.Second
	t0 := *clock
	q := query(t, "allowed.test.", dns.TypeA, 1, true, false, 1232, false, false)
	udpOnce(f, q) // the slow path: recorded, and kept
	answer := func(n int) {
		t.Helper()
		for range n {
			if _, ok := fastOnce(f, q); !ok {
				t.Fatal("the fast path declined")
			}
		}
	}
	want := func(records int, answers int64) {
		t.Helper()
		if r, a := countAnswers(f.log.Events(), "allowed.test"); r != records || a != answers {
			t.Fatalf("%d records counting %d answers; want %d counting %d\n%+v", r, a, records, answers, f.log.Events())
		}
	}
	answer(10)
	want(2, 2) // the slow path's, and the first fast one; nine held
	if ev := lastEvent(f); ev.Count != 0 || !ev.Time.Equal(t0) {
		t.Errorf("the first fast answer was recorded as %+v", ev)
	}
	*clock = t0.Add(1500 * time.Millisecond)
	answer(1) // a new interval: the nine held go first
	want(4, 12)
	evs := f.log.Events()
	if held := evs[len(evs)-2]; held.Count != 9 || !held.Time.Equal(t0) {
		t.Errorf("the nine repeats were recorded as %+v", held)
	}
	answer(4)
	repeated := *clock
	*clock = repeated.Add(200 * time.Millisecond)
	answer(1) // within the interval: held with them
	want(4, 12)
	f.srv.held.flush()
	want(5, 17)
	// At the time of the first of them, as the journal's coalescer has it.
	if ev := lastEvent(f); ev.Count != 5 || !ev.Time.Equal(repeated) || ev.Kind != journal.Allowed {
		t.Errorf("the five repeats were recorded as %+v", ev)
	}
	// Held across a reload, which drops the entry; recorded by the timer.
	answer(3)
	f.srv.SetPolicy(fixturePolicy(t, "allowed.test", "*.allowed.test"), nil)
	if _, ok := fastOnce(f, q); ok {
		t.Fatal("served from an entry of the old policy")
	}
	want(5, 17)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, a := countAnswers(f.log.Events(), "allowed.test"); a == 20 || time.Now().After(deadline) {
			break
		}
	}
	want(6, 20)
	// Held at Shutdown: recorded by it; an answer after it at once.
	udpOnce(f, q)
	answer(3)
	want(8, 22)
	f.srv.Shutdown()
	want(9, 24)
	answer(2)
	want(11, 26)
}
