package journal

import (
	"context"
	"log/slog"
	"testing"
)

// nullWriter stores nothing, at no cost: the hand-off alone is measured.
type nullWriter struct{}

func (nullWriter) WriteEvents([]Event) error { return nil }

// BenchmarkAsyncRecord: the cost a layer pays per record, with the writer
// keeping up, from 8 goroutines as the resolver's workers would.
func BenchmarkAsyncRecord(b *testing.B) {
	a, err := NewAsync(AsyncConfig{Writer: nullWriter{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	go a.Run(context.Background())
	defer a.Close()
	ev := Event{Agent: "bench", Layer: LayerDNS, Reason: ReasonNameNotAllowed, Name: "x.example."}
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Record(ev)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
}
