package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// AsyncConfig configures an Async.
type AsyncConfig struct {
	// Writer stores the events. Required.
	Writer Writer
	// Buffer is how many accepted events may wait for the writer; beyond
	// it Record drops. DefaultBuffer when 0.
	Buffer int
	// Batch is the most events handed to one WriteEvents. DefaultBatch
	// when 0.
	Batch int
	// Linger is how long the writer waits, after an event, for more to
	// fill the batch (0: it writes what is there at once); when zero, a
	// Writer that is a Lingerer says. A store pays per write (a
	// transaction), so one write of many events costs far less than many
	// of one; a record is stored that much later.
	Linger time.Duration
	// Log says when events were dropped. slog.Default() when nil.
	Log *slog.Logger
	// Agent names the agent in the record of dropped events.
	Agent string
}

// Ticker is a Writer that wants to hear the time about once a second,
// from the writer goroutine: to store what it holds back (coalesced
// repeats) and to apply retention.
type Ticker interface {
	Tick(now time.Time) error
}

// Lingerer is a Writer that wants its batches to wait for more events
// (see AsyncConfig.Linger): a store that pays per write. A log does not:
// batches that wait come in bursts, which hold up the data path's
// goroutines when they share a core.
type Lingerer interface {
	Linger() time.Duration
}

// tickEvery is how often Run calls a Ticker Writer.
const tickEvery = time.Second

// Defaults of AsyncConfig.
const (
	DefaultBuffer = 4096
	DefaultBatch  = 256
)

// Async is a Sink that hands events to one writer goroutine (Run) through
// a bounded buffer, so that a slow medium (a disk, a database) never
// stalls the data path. The buffer takes memory as events wait in it and
// gives it back once the writer has caught up, but for room for a few
// (keepQueue): sluice serve has an Async per agent. Record never blocks: when the buffer is full, or
// once the Async is closed, it counts the event in Dropped and returns the
// zero Ticket. Tickets are sequence numbers in the order Record accepted
// the events, and the writer stores them in that order, so Wait(t) returns
// once the batch holding t was written.
//
// Lifecycle: NewAsync, then Run (on its own goroutine) until Close or the
// end of Run's context; both stop accepting and let Run store every event
// accepted before it returns.
type Async struct {
	cfg     AsyncConfig
	wake    chan struct{} // holds a signal when events were queued
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
	written atomic.Uint64

	mu sync.Mutex
	// pending[head:] are the events accepted and not yet taken by the
	// writer, oldest first.
	pending  []queued
	head     int
	seq      Ticket        // the last Ticket given
	stored   Ticket        // every Ticket up to this one is stored
	progress chan struct{} // closed, and replaced, when stored moves or the writer ends
	closed   bool          // accepting no more events
	claimed  bool          // a writer (Run, or Close without Run) has begun
	finished bool          // the writer has ended
	err      error         // the Writer's error that ended the writer

	reported uint64 // drops already logged; the writer's alone

	stopOnce sync.Once
}

type queued struct {
	t  Ticket
	ev Event
}

// NewAsync makes an Async over cfg.Writer; Run starts its writer.
func NewAsync(cfg AsyncConfig) (*Async, error) {
	if cfg.Writer == nil {
		return nil, errors.New("journal: Async needs a Writer")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if l, ok := cfg.Writer.(Lingerer); ok && cfg.Linger == 0 {
		cfg.Linger = l.Linger()
	}
	return &Async{
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		progress: make(chan struct{}),
	}, nil
}

// Record queues ev for the writer without blocking. It returns the zero
// Ticket, and counts a drop, when the buffer is full or a is closed.
func (a *Async) Record(ev Event) Ticket {
	a.mu.Lock()
	if a.closed || len(a.pending)-a.head >= a.cfg.Buffer {
		a.mu.Unlock()
		a.dropped.Add(1)
		return 0
	}
	if len(a.pending) == cap(a.pending) && a.head > 0 {
		// Reuse the room the writer has taken from the front before
		// growing the array.
		n := copy(a.pending, a.pending[a.head:])
		clear(a.pending[n:])
		a.pending, a.head = a.pending[:n], 0
	}
	a.seq++
	t := a.seq
	first := len(a.pending) == a.head
	a.pending = append(a.pending, queued{t, ev})
	a.mu.Unlock()
	if first {
		// The writer takes all it can each time it wakes and wakes
		// itself again while any is left: only an event queued while
		// none waits needs to tell it.
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return t
}

// keepQueue is the most room, in events, that an empty buffer keeps: what
// a burst grew beyond it is given back once the writer has caught up.
const keepQueue = 64

// take moves to batch the oldest events queued, until batch holds Batch,
// and says how many are still queued.
func (a *Async) take(batch []queued) ([]queued, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := min(a.cfg.Batch-len(batch), len(a.pending)-a.head)
	if n <= 0 {
		return batch, len(a.pending) - a.head
	}
	taken := a.pending[a.head : a.head+n]
	batch = append(batch, taken...)
	clear(taken) // the events are the batch's now; let them go with it
	a.head += n
	if a.head == len(a.pending) {
		a.head = 0
		if cap(a.pending) > keepQueue {
			a.pending = nil
		} else {
			a.pending = a.pending[:0]
		}
	}
	return batch, len(a.pending) - a.head
}

// Dropped is how many events Record refused: buffer full, or closed.
func (a *Async) Dropped() uint64 { return a.dropped.Load() }

// Written is how many events the Writer has stored.
func (a *Async) Written() uint64 { return a.written.Load() }

// Wait returns nil once the event of t is stored, the Writer's error or
// ErrClosed when the writer ended before storing it, ctx's error when ctx
// ends first, and ErrNotRecorded for the zero Ticket.
func (a *Async) Wait(ctx context.Context, t Ticket) error {
	if t == 0 {
		return ErrNotRecorded
	}
	for {
		a.mu.Lock()
		stored, finished, err, progress := a.stored, a.finished, a.err, a.progress
		a.mu.Unlock()
		switch {
		case t <= stored:
			return nil
		case err != nil:
			return err
		case finished:
			return ErrClosed
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run writes queued events in batches until ctx ends or Close is called;
// then it stops accepting events, writes those still queued, and returns.
// It returns the Writer's first error at once, storing nothing more: a
// journal that cannot store is the gateway's to act on (fail closed). Run
// may be called once.
func (a *Async) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.claimed {
		a.mu.Unlock()
		return errors.New("journal: Async runs once, and not after Close")
	}
	a.claimed = true
	a.mu.Unlock()
	var err error
	defer func() { a.finish(err) }()
	batch := make([]queued, 0, a.cfg.Batch)
	ticker, _ := a.cfg.Writer.(Ticker)
	var tick <-chan time.Time
	if ticker != nil {
		t := time.NewTicker(tickEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case now := <-tick:
			if err = ticker.Tick(now); err != nil {
				return err
			}
			if err = a.reportDrops(); err != nil {
				return err
			}
		case <-a.wake:
			batch, _ = a.take(batch[:0])
			if len(batch) == 0 {
				continue // taken with the batch before
			}
			if err = a.write(a.linger(ctx, batch)); err != nil {
				return err
			}
		case <-ctx.Done():
			err = a.drain(batch)
			return err
		case <-a.stop:
			err = a.drain(batch)
			return err
		}
	}
}

// Close stops accepting events and returns once every event accepted
// before it is stored (or Run has failed: its error). Without a Run, Close
// writes them itself.
func (a *Async) Close() error {
	a.mu.Lock()
	a.closed = true
	writer := !a.claimed
	a.claimed = true
	a.mu.Unlock()
	a.stopOnce.Do(func() { close(a.stop) })
	if writer {
		err := a.drain(make([]queued, 0, a.cfg.Batch))
		a.finish(err)
	}
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// drain closes a and writes what is queued; nothing more can be queued.
func (a *Async) drain(batch []queued) error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	for {
		batch, _ = a.take(batch[:0])
		if len(batch) == 0 {
			return nil
		}
		if err := a.write(batch); err != nil {
			return err
		}
	}
}

// linger adds to batch the events that come within Linger, up to
// Batch, unless enough are queued already. It takes each event as it
// comes: a writer that slept through the linger and then wrote all it
// found in one go would hold up the data path's goroutines, on the same
// core, for that long (measured: cached answers 15% fewer). It returns
// early when the Async stops.
func (a *Async) linger(ctx context.Context, batch []queued) []queued {
	if a.cfg.Linger <= 0 || len(batch) >= a.cfg.Batch {
		return batch
	}
	t := time.NewTimer(a.cfg.Linger)
	defer t.Stop()
	for len(batch) < a.cfg.Batch {
		select {
		case <-a.wake:
			batch, _ = a.take(batch)
		case <-t.C:
			return batch
		case <-ctx.Done():
			return batch
		case <-a.stop:
			return batch
		}
	}
	return batch
}

// write adds to batch (taken by Run, and lingered on) what else is
// queued, up to Batch, writes it and moves stored past it. When more is queued, the
// writer is woken again for it.
func (a *Async) write(batch []queued) error {
	batch, more := a.take(batch)
	if more > 0 {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	evs := make([]Event, len(batch))
	for i, q := range batch {
		evs[i] = q.ev
	}
	if err := a.cfg.Writer.WriteEvents(evs); err != nil {
		return err
	}
	a.written.Add(uint64(len(evs)))
	// A batch is a long run of work for the writer; the data path's
	// goroutines, on the same core, go first before the next.
	runtime.Gosched()
	a.mu.Lock()
	a.stored = batch[len(batch)-1].t
	close(a.progress)
	a.progress = make(chan struct{})
	a.mu.Unlock()
	return a.reportDrops()
}

// reportDrops logs the drops since the last report, if any, and stores
// their count as a record of its own: what the journal lost is in the
// journal.
func (a *Async) reportDrops() error {
	n := a.dropped.Load()
	if n <= a.reported {
		return nil
	}
	a.cfg.Log.Warn("journal buffer full: events dropped", "dropped", n-a.reported, "total", n)
	lost := Event{Time: time.Now(), Agent: a.cfg.Agent, Layer: LayerJournal, Kind: Lost, Reason: ReasonRecordsLost,
		Count: int64(n - a.reported), Detail: fmt.Sprintf("%d records dropped since the last report, %d in all: the journal fell behind", n-a.reported, n)}
	a.reported = n
	return a.cfg.Writer.WriteEvents([]Event{lost})
}

// finish ends the writer: Wait gives err, or ErrClosed, for what is left.
func (a *Async) finish(err error) {
	a.mu.Lock()
	a.closed, a.finished = true, true
	if err != nil && a.err == nil {
		a.err = err
	}
	close(a.progress)
	a.progress = make(chan struct{})
	a.mu.Unlock()
	close(a.done)
}
