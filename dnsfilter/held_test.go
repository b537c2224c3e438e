package dnsfilter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
)

// gateSink holds up the first Record of a folded event until released.
type gateSink struct {
	journal.Memory
	once             sync.Once
	entered, release chan struct{}
}

func (g *gateSink) Record(ev journal.Event) journal.Ticket {
	if ev.Count > 0 {
		g.once.Do(func() { close(g.entered); <-g.release })
	}
	return g.Memory.Record(ev)
}

func (g *gateSink) Wait(context.Context, journal.Ticket) error { return nil }

// TestHeldCloseWaitsForFlush: a close (Shutdown) that comes while the
// timer's flush is recording returns only once that flush has recorded
// what it took, and an answer after it is recorded at once: the journal,
// closed next, loses none.
func TestHeldCloseWaitsForFlush(t *testing.T) {
	g := &gateSink{entered: make(chan struct{}), release: make(chan struct{})}
	h := &heldHits{sink: g, interval: 20 * time.Millisecond}
	a := &fastEntry{ev: journal.Event{Name: "a", Kind: journal.Allowed}}
	b := &fastEntry{ev: journal.Event{Name: "b", Kind: journal.Allowed}}
	t0 := time.Now()
	h.record(a, t0)
	h.record(a, t0.Add(time.Millisecond)) // held: a on the list, the timer armed
	h.record(b, t0)
	h.record(b, t0.Add(time.Millisecond)) // held: b on the list
	<-g.entered                           // the timer's flush is recording a
	time.AfterFunc(30*time.Millisecond, func() { close(g.release) })
	h.close()
	h.record(b, t0.Add(2*time.Millisecond)) // after Shutdown
	evs := g.Events()
	if _, a := countAnswers(evs, "a"); a != 2 {
		t.Errorf("after close, a %d answers recorded; want 2", a)
	}
	if _, n := countAnswers(evs, "b"); n != 3 {
		t.Errorf("after close, b %d answers recorded; want 3", n)
	}
}

// TestHeldStress: many goroutines answer from a few entries while the
// timer flushes and the server closes: every answer is counted once.
func TestHeldStress(t *testing.T) {
	for round := range 20 {
		var m journal.Memory
		h := &heldHits{sink: &m, interval: time.Millisecond}
		es := make([]*fastEntry, 4)
		for i := range es {
			es[i] = &fastEntry{ev: journal.Event{Name: string(rune('a' + i)), Kind: journal.Allowed}}
		}
		var given atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					h.record(es[(w+i)%len(es)], time.Now())
					given.Add(1)
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		if round%2 == 0 {
			h.close() // while they answer
			time.Sleep(5 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		h.close()
		var got int64
		for _, ev := range m.Events() {
			got += max(ev.Count, 1)
		}
		if got != given.Load() {
			t.Fatalf("round %d: %d answers given, %d recorded", round, given.Load(), got)
		}
	}
}
