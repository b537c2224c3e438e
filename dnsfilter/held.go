package dnsfilter

import (
	"sync"
	"time"

	"github.com/sluicegw/sluice/journal"
)

// A cached name asked again and again (a client polling, a build
// resolving one registry per package) is one journal record repeated:
// the journal's store folds the repeats of a second into one record with
// their count (journal.DefaultCoalesce), but only after each has gone
// through the journal's queue and its coalescer, which costs the fast
// path more than the answer itself. So the fast path folds them first,
// the same way: the first answer from a packed reply in an interval is
// recorded at once, as before; the repeats after it are counted in the
// reply's entry and recorded as one event with their count (at the time
// of the first of them, as the journal's coalescer has it) when the
// interval is over, by a timer armed only while some count is held, or
// at Shutdown. The journal gets the same records and
// the same total count, at most an interval later; the metrics' counters
// too. A count is never dropped with its entry: the held list keeps the
// entry until its count is recorded.

// heldHits holds the counts of repeated fast answers until they are
// recorded. Its zero interval records every answer at once.
type heldHits struct {
	sink     journal.Sink
	interval time.Duration

	// flushing is held through each flush, so that close waits for one
	// the timer started before it: what that flush took is recorded
	// before Shutdown returns.
	flushing sync.Mutex

	mu     sync.Mutex
	dirty  []*fastEntry // entries holding a count, or about to
	armed  bool         // a flush is due
	timer  *time.Timer
	closed bool // Shutdown flushed: every answer is recorded at once
}

// held is an entry's part: what it holds for the journal. Guarded by mu.
type held struct {
	mu    sync.Mutex
	start time.Time // when the interval of the last recorded answer began
	count int64     // answers since, not yet recorded
	first time.Time // the earliest of those
	dirty bool      // on the held list, or on a list being flushed
}

// record journals one answer from e at now.
func (h *heldHits) record(e *fastEntry, now time.Time) {
	j := &e.held
	j.mu.Lock()
	if h.interval > 0 && !j.start.IsZero() && !now.Before(j.start) && now.Sub(j.start) < h.interval {
		if j.count == 0 {
			j.first = now
		}
		j.count++
		mark := !j.dirty
		j.dirty = true
		j.mu.Unlock()
		if mark {
			h.markDirty(e)
		}
		return
	}
	// A new interval: what the last one held goes first.
	h.recordHeld(e)
	j.start = now
	ev := e.ev
	ev.Time = now
	h.sink.Record(ev)
	j.mu.Unlock()
}

// recordHeld journals what e holds as one event. j.mu is held.
func (h *heldHits) recordHeld(e *fastEntry) {
	j := &e.held
	if j.count == 0 {
		return
	}
	ev := e.ev
	ev.Time, ev.Count = j.first, j.count
	h.sink.Record(ev)
	j.count = 0
}

// markDirty puts e on the held list and arms the flush, or, once closed,
// records what e holds at once.
func (h *heldHits) markDirty(e *fastEntry) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.flushEntries([]*fastEntry{e})
		return
	}
	h.dirty = append(h.dirty, e)
	if !h.armed {
		h.armed = true
		if h.timer == nil {
			h.timer = time.AfterFunc(h.interval, h.flush)
		} else {
			h.timer.Reset(h.interval)
		}
	}
	h.mu.Unlock()
}

// flush records every count held.
func (h *heldHits) flush() {
	h.flushing.Lock()
	defer h.flushing.Unlock()
	h.mu.Lock()
	list := h.dirty
	h.dirty, h.armed = nil, false
	h.mu.Unlock()
	h.flushEntries(list)
}

func (h *heldHits) flushEntries(list []*fastEntry) {
	for _, e := range list {
		j := &e.held
		j.mu.Lock()
		h.recordHeld(e)
		j.dirty = false
		j.mu.Unlock()
	}
}

// close records every count held, and every answer from now on at once:
// the server is stopping, and its journal closes after it.
func (h *heldHits) close() {
	h.mu.Lock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
	}
	h.mu.Unlock()
	h.flush()
}
