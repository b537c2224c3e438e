package journal

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkStoreWrite stores distinct refusals (nothing to coalesce) in
// batches of DefaultBatch, as Async hands them over: the journal's
// sustained write rate, in records/s.
func BenchmarkStoreWrite(b *testing.B) {
	s := openTestStore(b, StoreConfig{})
	batch := make([]Event, DefaultBatch)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		now := time.Now()
		for j := range batch {
			batch[j] = refusal(0, fmt.Sprintf("n%d.bench.test.", i+j))
			batch[j].Time = now
			batch[j].Dst = netip.MustParseAddrPort("192.0.2.1:443")
		}
		if err := s.WriteEvents(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkList1M reads a filtered page of 100 from a journal of a million
// records: refusals of 10,000 names, one agent in ten and one record in a
// hundred allowed. The journal is built once, in JOURNAL_BENCH_DIR if set
// (kept, so that later runs skip the build), else in a temporary directory.
func BenchmarkList1M(b *testing.B) {
	const n = 1_000_000
	dir := os.Getenv("JOURNAL_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, "journal-1m.db")
	if _, err := os.Stat(path); err != nil {
		s, err := OpenStore(StoreConfig{Path: path, Coalesce: -1})
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]Event, 0, 1000)
		for i := range n {
			ev := refusal(i, fmt.Sprintf("n%d.example%d.test.", i%10000, i%97))
			ev.Agent = fmt.Sprint("agent", i%10)
			if i%100 == 0 {
				ev.Kind, ev.Reason, ev.Layer = Allowed, ReasonAllowed, LayerTLS
			}
			batch = append(batch, ev)
			if len(batch) == cap(batch) {
				if err := s.WriteEvents(batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	r, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for _, f := range []Filter{
		{Verdict: "refused"},
		{Verdict: "allowed", Agent: "agent3"},
		{Host: "example5.test"},
		{Host: "n7.example7.test"},
		{Agent: "agent9", Layer: "dns", Reason: "name_not_allowed", Since: t0.Add(900 * time.Second)},
		{Verdict: "refused", Before: n / 2},
	} {
		b.Run(fmt.Sprintf("%+v", f), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := r.List(ctx, f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
