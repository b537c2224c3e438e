package firewall

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// nextAddrs returns n fresh addresses after *a.
func nextAddrs(a *netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		*a = a.Next()
		out[i] = *a
	}
	return out
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkAllowNewAnswer is the set update of one uncached DNS answer:
// one address, ports 80 and 443, one netlink transaction.
func BenchmarkAllowNewAnswer(b *testing.B) {
	m, _ := newManagerB(b)
	addr := netip.MustParseAddr("198.19.0.0")
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		addrs := nextAddrs(&addr, 1)
		t0 := time.Now()
		if err := m.Allow(ctx, addrs, []uint16{80, 443}, time.Minute); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

// BenchmarkAllowRefresh re-asserts elements that are about to lapse, the
// delete-and-add path kernels before 6.12 need.
func BenchmarkAllowRefresh(b *testing.B) {
	m, _ := newManagerB(b)
	m.refresh = true
	addrs := []netip.Addr{netip.MustParseAddr("198.19.0.1")}
	ctx := context.Background()
	if err := m.Allow(ctx, addrs, []uint16{443}, time.Minute); err != nil {
		b.Fatal(err)
	}
	need := time.Minute
	var lat []time.Duration
	for b.Loop() {
		need += 10 * time.Second // always longer than what the kernel has
		t0 := time.Now()
		if err := m.Allow(ctx, addrs, []uint16{443}, need); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

// BenchmarkAllowNewAnswerParallel is the same with concurrent answers,
// which share batches (group commit).
func BenchmarkAllowNewAnswerParallel(b *testing.B) {
	m, _ := newManagerB(b)
	ctx := context.Background()
	var next atomic.Uint32
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			a := netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n)})
			if err := m.Allow(ctx, []netip.Addr{a}, []uint16{80}, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAllowCachedAnswer is a cache hit whose elements outlive the
// answer: no netlink call at all.
func BenchmarkAllowCachedAnswer(b *testing.B) {
	m, _ := newManagerB(b)
	addrs := []netip.Addr{netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("198.19.0.2")}
	ctx := context.Background()
	if err := m.Allow(ctx, addrs, []uint16{80, 443}, time.Hour); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Allow(ctx, addrs, []uint16{80, 443}, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowBulk inserts 1000 addresses × 2 ports per call, to give
// elements per second in bulk.
func BenchmarkAllowBulk(b *testing.B) {
	m, _ := newManagerB(b)
	addr := netip.MustParseAddr("198.18.128.0")
	ctx := context.Background()
	n := 0
	for b.Loop() {
		if n >= 60000 { // stay under the set's size
			b.StopTimer()
			if err := m.Install(); err != nil {
				b.Fatal(err)
			}
			n = 0
			b.StartTimer()
		}
		if err := m.Allow(ctx, nextAddrs(&addr, 1000), []uint16{80, 443}, time.Minute); err != nil {
			b.Fatal(err)
		}
		n += 2000
	}
	b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "elements/s")
}
