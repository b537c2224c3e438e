package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// gatedWriter stores into mem, but each WriteEvents first says it has
// begun (on entered) and waits for a value on release.
type gatedWriter struct {
	mem     Memory
	entered chan int
	release chan error
}

func newGated() *gatedWriter {
	return &gatedWriter{entered: make(chan int, 100), release: make(chan error)}
}

func (g *gatedWriter) WriteEvents(evs []Event) error {
	g.entered <- len(evs)
	if err := <-g.release; err != nil {
		return err
	}
	return g.mem.WriteEvents(evs)
}

func newTestAsync(t *testing.T, w Writer, buffer, batch int) *Async {
	t.Helper()
	a, err := NewAsync(AsyncConfig{Writer: w, Buffer: buffer, Batch: batch, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ev(i int) Event { return Event{Agent: "a", Layer: LayerDNS, Name: fmt.Sprint(i)} }

// within fails the test unless f returns within a bound far beyond what
// it needs: a call that must not block, told apart from one that does.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestAsyncBoundedUnderStalledWriter(t *testing.T) {
	g := newGated()
	a := newTestAsync(t, g, 4, 1)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()

	first := a.Record(ev(0))
	<-g.entered // the writer holds event 0 and is stalled
	if err := a.Wait(cancelled(), first); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait before the write returned = %v, want the context's error", err)
	}
	var tickets []Ticket
	within(t, "Record with a stalled writer", func() {
		for i := 1; i <= 10; i++ {
			tickets = append(tickets, a.Record(ev(i)))
		}
	})
	for i, tk := range tickets {
		if accepted := tk != 0; accepted != (i < 4) {
			t.Errorf("event %d: ticket %d, want accepted only while the buffer of 4 has room", i+1, tk)
		}
	}
	if got := a.Dropped(); got != 6 {
		t.Errorf("Dropped = %d, want 6", got)
	}

	g.release <- nil // event 0 is written
	if err := a.Wait(context.Background(), first); err != nil {
		t.Fatalf("Wait after the write: %v", err)
	}
	<-g.entered // then the record of the drops
	g.release <- nil
	got := g.mem.Events()
	for deadline := time.Now().Add(5 * time.Second); len(got) < 2 && time.Now().Before(deadline); got = g.mem.Events() {
		time.Sleep(time.Millisecond)
	}
	if len(got) != 2 || got[0].Name != "0" || got[1].Kind != Lost || got[1].Count != 6 || got[1].Reason != ReasonRecordsLost {
		t.Fatalf("stored %+v, want event 0 and the record of 6 lost", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	for i := range 4 { // Close drains: each queued event is written
		select {
		case <-g.entered:
		case err := <-closed:
			t.Fatalf("Close returned (%v) with %d queued events unwritten", err, 4-i)
		}
		g.release <- nil
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, tk := range tickets[:4] {
		if err := a.Wait(cancelled(), tk); err != nil {
			t.Errorf("ticket %d after Close: %v, want stored", tk, err)
		}
	}
	if got := g.mem.Events(); len(got) != 6 || got[5].Name != "4" {
		t.Errorf("stored %d events, want events 0 to 4 in order, with the record of the drops: %+v", len(got), got)
	}
	if tk := a.Record(ev(99)); tk != 0 || a.Dropped() != 7 {
		t.Errorf("Record after Close: ticket %d, dropped %d; want 0 and a counted drop", tk, a.Dropped())
	}
	if err := a.Wait(context.Background(), 0); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("Wait(0) = %v, want ErrNotRecorded", err)
	}
}

func TestAsyncCloseDrainsInOrder(t *testing.T) {
	var mem Memory
	a := newTestAsync(t, &mem, 1000, 7)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	const writers, each = 8, 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	byTicket := map[Ticket]string{}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				name := fmt.Sprintf("%d.%d", w, i)
				tk := a.Record(Event{Name: name})
				mu.Lock()
				byTicket[tk] = name
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	got := mem.Events()
	if len(got) != writers*each || a.Dropped() != 0 {
		t.Fatalf("stored %d events, dropped %d; want %d and none", len(got), a.Dropped(), writers*each)
	}
	for i, e := range got { // stored in ticket order
		if want := byTicket[Ticket(i+1)]; e.Name != want {
			t.Fatalf("event %d is %q, want ticket %d's %q", i, e.Name, i+1, want)
		}
	}
}

func TestAsyncCloseWithoutRun(t *testing.T) {
	var mem Memory
	a := newTestAsync(t, &mem, 10, 0)
	tk := a.Record(ev(1))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(cancelled(), tk); err != nil || len(mem.Events()) != 1 {
		t.Errorf("Close without Run: Wait = %v, %d stored; want the event stored", err, len(mem.Events()))
	}
	if err := a.Run(context.Background()); err == nil {
		t.Errorf("Run after Close succeeded")
	}
}

func TestAsyncWriterError(t *testing.T) {
	g := newGated()
	a := newTestAsync(t, g, 10, 1)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	t1 := a.Record(ev(1))
	t2 := a.Record(ev(2))
	<-g.entered
	broken := errors.New("disk full")
	g.release <- broken
	if err := <-runErr; !errors.Is(err, broken) {
		t.Fatalf("Run = %v, want the writer's error", err)
	}
	for _, tk := range []Ticket{t1, t2} {
		if err := a.Wait(context.Background(), tk); !errors.Is(err, broken) {
			t.Errorf("Wait(%d) = %v, want the writer's error", tk, err)
		}
	}
	if err := a.Close(); !errors.Is(err, broken) {
		t.Errorf("Close = %v, want the writer's error", err)
	}
}

func TestAsyncContextEndDrains(t *testing.T) {
	var mem Memory
	a := newTestAsync(t, &mem, 10, 0)
	tk := a.Record(ev(1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(cancelled(), tk); err != nil {
		t.Errorf("Wait after Run ended = %v, want stored", err)
	}
	if a.Record(ev(2)) != 0 {
		t.Errorf("Record accepted after Run ended")
	}
}

// batchWriter records the size of each batch it is handed.
type batchWriter struct {
	mu    sync.Mutex
	sizes []int
}

func (w *batchWriter) WriteEvents(evs []Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sizes = append(w.sizes, len(evs))
	return nil
}

// TestAsyncLinger: events that come within the linger go to the writer
// as one batch; without a linger, the first goes alone.
func TestAsyncLinger(t *testing.T) {
	for _, tc := range []struct {
		linger time.Duration
		first  func(int) bool
	}{
		{time.Second, func(n int) bool { return n == 10 }},
		{0, func(n int) bool { return n < 10 }},
	} {
		w := &batchWriter{}
		a, err := NewAsync(AsyncConfig{Writer: w, Linger: tc.linger, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		go a.Run(context.Background())
		var last Ticket
		for i := range 10 {
			last = a.Record(ev(i))
			time.Sleep(time.Millisecond) // the writer runs between them
		}
		if err := a.Wait(context.Background(), last); err != nil {
			t.Fatal(err)
		}
		a.Close()
		w.mu.Lock()
		if len(w.sizes) == 0 || !tc.first(w.sizes[0]) {
			t.Errorf("linger %v: batches %v", tc.linger, w.sizes)
		}
		w.mu.Unlock()
	}
}

// TestAsyncGivesBackMemory: the buffer grows while events wait for a
// stalled writer and is given back once the writer has caught up (sluice
// serve keeps an Async per agent, most of them idle).
func TestAsyncGivesBackMemory(t *testing.T) {
	g := newGated()
	a := newTestAsync(t, g, 4096, 16)
	room := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return cap(a.pending)
	}
	if n := room(); n != 0 {
		t.Errorf("a new Async holds room for %d events, want none", n)
	}
	go func() { _ = a.Run(context.Background()) }()
	defer func() {
		go func() {
			for range g.entered {
				g.release <- nil
			}
		}()
		a.Close()
	}()
	last := a.Record(ev(0))
	<-g.entered
	for i := 1; i <= 1000; i++ {
		last = a.Record(ev(i))
	}
	if n := room(); n < 1000 {
		t.Fatalf("room for %d events with 1000 waiting", n)
	}
	g.release <- nil
	for range 1000 / 16 {
		<-g.entered
		g.release <- nil
	}
	<-g.entered
	g.release <- nil
	within(t, "the writer's catching up", func() {
		if err := a.Wait(context.Background(), last); err != nil {
			t.Error(err)
		}
	})
	if n := room(); n > keepQueue {
		t.Errorf("room for %d events kept after the writer caught up, want at most %d", n, keepQueue)
	}
	if got := g.mem.Events(); len(got) != 1001 || got[1000].Name != "1000" {
		t.Errorf("stored %d events, want 1001 in order", len(got))
	}
}
