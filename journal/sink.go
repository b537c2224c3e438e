package journal

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Sink receives decisions. Every layer records through one.
type Sink interface {
	// Record hands ev over, and it never blocks: it sits on the path of a
	// DNS answer or a connection. A sink that stores slowly queues ev in a
	// bounded buffer, and when that is full it drops ev and counts the
	// drop (see Async), never silently. Record returns the Ticket to Wait
	// on, or the zero Ticket when ev was not accepted.
	Record(Event) Ticket
	// Wait returns nil once the record of t is stored: written to the log,
	// or committed to the store, so that it survives a crash of sluice as
	// far as the sink's medium does. It returns ErrNotRecorded for the zero
	// Ticket, the store's error or ErrClosed when the record never will be,
	// and ctx's error when ctx ends first.
	Wait(ctx context.Context, t Ticket) error
}

// Ticket stands for one record a Sink accepted, to ask that sink about
// with Wait. The zero Ticket stands for none.
type Ticket uint64

// Errors of Wait.
var (
	// ErrNotRecorded: the sink did not accept the record (a full buffer, a
	// closed sink, a sink that keeps nothing, or an event it does not keep).
	ErrNotRecorded = errors.New("journal: record not accepted")
	// ErrClosed: the sink stopped before it stored the record.
	ErrClosed = errors.New("journal: closed before the record was stored")
)

// Writer stores batches of events: the medium behind Async (a log, a
// database). Async calls it from one goroutine at a time; a batch is
// stored when WriteEvents returns nil.
type Writer interface {
	WriteEvents([]Event) error
}

// LogSink writes each event as one structured log line. Its Record writes
// before it returns, so every Ticket it gives is already stored; wrapped
// in an Async (as a Writer) it writes from the Async's goroutine instead.
type LogSink struct {
	Log *slog.Logger
	// Allowed also logs decisions that allowed something; refusals,
	// would-be refusals and dropped addresses are always logged.
	Allowed bool
}

// written is the Ticket of a record LogSink has written.
const written Ticket = 1

// Record logs ev at INFO when it is a pass and at WARN otherwise (a
// refusal, a would-be refusal, or addresses dropped from an answer). It
// returns the zero Ticket for an event it does not log, or when the log
// failed to write.
func (s LogSink) Record(ev Event) Ticket {
	if logged, err := s.write(ev); !logged || err != nil {
		return 0
	}
	return written
}

// Wait returns nil for a Ticket of Record: it was written before Record
// returned.
func (s LogSink) Wait(_ context.Context, t Ticket) error {
	if t == 0 {
		return ErrNotRecorded
	}
	return nil
}

// WriteEvents logs each event, as Record does; it returns the first error
// of the log's handler.
func (s LogSink) WriteEvents(evs []Event) error {
	var first error
	for _, ev := range evs {
		if _, err := s.write(ev); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// write logs ev as one line, its Kind the message, unless it is a pass
// and s does not log passes; logged says whether it went to the handler.
func (s LogSink) write(ev Event) (logged bool, err error) {
	if ev.Kind == Allowed && !s.Allowed {
		return false, nil
	}
	level := slog.LevelWarn
	if ev.Kind == Allowed {
		level = slog.LevelInfo
	}
	ctx := context.Background()
	h := s.Log.Handler()
	if !h.Enabled(ctx, level) {
		return false, nil
	}
	r := slog.NewRecord(time.Now(), level, ev.Kind.String(), 0)
	r.AddAttrs(
		slog.String("agent", ev.Agent),
		slog.String("layer", string(ev.Layer)),
		slog.String("reason", string(ev.Reason)),
	)
	if ev.Name != "" {
		r.AddAttrs(slog.String("name", bound(ev.Name)))
	}
	if ev.Dst.IsValid() {
		r.AddAttrs(slog.String("dst", ev.Dst.String()))
	}
	if ev.Proto != "" {
		r.AddAttrs(slog.String("proto", ev.Proto))
	}
	if ev.Rule != "" {
		r.AddAttrs(slog.String("rule", ev.Rule))
	}
	r.AddAttrs(slog.String("policy", ev.PolicyHash))
	if len(ev.Addrs) > 0 {
		addrs := make([]string, len(ev.Addrs))
		for i, a := range ev.Addrs {
			addrs[i] = a.String()
		}
		r.AddAttrs(slog.String("addrs", strings.Join(addrs, ",")))
	}
	if ev.Detail != "" {
		r.AddAttrs(slog.String("detail", bound(ev.Detail)))
	}
	if ev.Count > 1 {
		r.AddAttrs(slog.Int64("count", ev.Count)) // repeats folded into one event
	}
	return true, h.Handle(ctx, r)
}

// Discard is a Sink that drops every event, for tests and benchmarks.
type Discard struct{}

// Record keeps nothing: it returns the zero Ticket.
func (Discard) Record(Event) Ticket { return 0 }

// Wait returns ErrNotRecorded: Discard stores nothing.
func (Discard) Wait(context.Context, Ticket) error { return ErrNotRecorded }

// Memory is a Sink that keeps every event, for tests. It is safe for
// concurrent use; a record is stored once Record returns.
type Memory struct {
	mu     sync.Mutex
	events []Event
}

// Record keeps ev; its Ticket is its position in Events, from 1.
func (m *Memory) Record(ev Event) Ticket {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
	return Ticket(len(m.events))
}

// Wait returns nil for every Ticket Memory gave.
func (m *Memory) Wait(_ context.Context, t Ticket) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t == 0 || int(t) > len(m.events) {
		return ErrNotRecorded
	}
	return nil
}

// WriteEvents keeps evs, so that Memory can stand behind an Async in tests.
func (m *Memory) WriteEvents(evs []Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, evs...)
	return nil
}

// Events returns a copy of the events kept so far, in order.
func (m *Memory) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// Last returns the latest event, the zero Event when there is none.
func (m *Memory) Last() Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return Event{}
	}
	return m.events[len(m.events)-1]
}

// Tee is a Writer that writes each batch to each of its Writers in turn
// (the store, then the log), and ticks those that are Tickers. The first
// error ends the batch.
type Tee []Writer

// WriteEvents writes evs to every Writer of t.
func (t Tee) WriteEvents(evs []Event) error {
	for _, w := range t {
		if err := w.WriteEvents(evs); err != nil {
			return err
		}
	}
	return nil
}

// Linger is the longest of its Writers' lingers.
func (t Tee) Linger() time.Duration {
	var d time.Duration
	for _, w := range t {
		if l, ok := w.(Lingerer); ok {
			d = max(d, l.Linger())
		}
	}
	return d
}

// Tick ticks the Writers of t that are Tickers.
func (t Tee) Tick(now time.Time) error {
	for _, w := range t {
		if tk, ok := w.(Ticker); ok {
			if err := tk.Tick(now); err != nil {
				return err
			}
		}
	}
	return nil
}
