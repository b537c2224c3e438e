package dnsfilter

import (
	"context"
	"fmt"
	"testing"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
)

// These measure the resolver's own CPU per answer, with a fake upstream and
// a fake set update; bench/dns.sh measures the whole path with the kernel.

func BenchmarkAnswerCached(b *testing.B) {
	f := newFixture(b, "allowed.test")
	q := new(dns.Msg)
	q.SetQuestion("allowed.test.", dns.TypeA)
	ctx := context.Background()
	f.srv.Answer(ctx, agentSrc, q)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f.srv.Answer(ctx, agentSrc, q)
	}
}

func BenchmarkAnswerDenied(b *testing.B) {
	f := newFixture(b, "allowed.test")
	q := new(dns.Msg)
	q.SetQuestion("secret.evil.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		f.srv.Answer(ctx, agentSrc, q)
	}
}

func BenchmarkAnswerUncached(b *testing.B) {
	// A budget above the 4096 names: each is admitted once, then known.
	f := newFixture(b, "*.bench.test!names=10000")
	f.srv.cache = newCache(0)
	f.srv.cfg.Pins = NewPins(1 << 22)
	f.up.raw = func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A: []byte{198, 18, 5, 5}}}
		return r
	}
	ctx := context.Background()
	names := make([]*dns.Msg, 4096)
	for i := range names {
		names[i] = new(dns.Msg)
		names[i].SetQuestion(fmt.Sprintf("h%d.bench.test.", i), dns.TypeA)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.srv.Answer(ctx, agentSrc, names[i%len(names)])
		i++
		if len(f.fw.calls) > 1<<16 {
			f.fw.calls = f.fw.calls[:0]
		}
	}
}

// BenchmarkUDPCached is a UDP worker's own CPU for a cached answer: the
// fast path's copy of a packed reply, against the slow path's unpack,
// Answer and pack (BenchmarkUDPCachedSlow).
func BenchmarkUDPCached(b *testing.B) {
	benchUDP(b, true)
}

func BenchmarkUDPCachedSlow(b *testing.B) {
	benchUDP(b, false)
}

// discard is a journal that keeps nothing: the fixture's keeps every
// record, and its appends would be most of what is measured.
type discard struct{}

func (discard) Record(journal.Event) journal.Ticket        { return 0 }
func (discard) Wait(context.Context, journal.Ticket) error { return journal.ErrNotRecorded }

func benchUDP(b *testing.B, fast bool) {
	f := newFixtureWith(b, func(c *Config) { c.Journal = discard{} }, "allowed.test")
	q := new(dns.Msg)
	q.SetQuestion("allowed.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	wire, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	u := &udpScratch{buf: make([]byte, udpReadSize)}
	var reply []byte
	ctx := context.Background()
	run := func() {
		out, ok := f.srv.fastAnswer(wire, agentSrc, reply)
		if ok {
			reply = out
		} else {
			out = f.srv.answerSlow(ctx, wire, agentSrc, u)
		}
		if out == nil {
			b.Fatal("no answer")
		}
	}
	run()
	if !fast {
		f.srv.fast = nil
	}
	b.ReportAllocs()
	for b.Loop() {
		run()
	}
}
