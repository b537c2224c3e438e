package journal

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DefaultCoalesce is the interval over which repeats of one decision are
// folded into one record.
const DefaultCoalesce = time.Second

// coalescer folds repeats of one decision into counts. The first of each
// interval is stored at once (a reviewer sees it live, and a crash cannot
// lose it); the repeats after it within the interval are counted and
// stored as one record, with the count, when the interval ends. A flood
// of one refusal costs two records an interval, whatever its rate, and
// cannot fill the disk or bury other events.
type coalescer struct {
	interval time.Duration
	open     map[decisionKey]*interval
	// order holds the open intervals in the order they opened (the
	// events' order, nearly their time's), so that due looks only at
	// the oldest instead of at every one.
	order []*interval
}

// decisionKey is what makes two decisions the same.
type decisionKey struct {
	agent, name, proto, rule, policy, addrs string
	layer                                   Layer
	kind                                    Kind
	reason                                  Reason
	dst                                     netip.AddrPort
}

type interval struct {
	key    decisionKey
	start  time.Time // of the first decision, stored at once
	repeat Event     // the repeats since, Count of them; Count 0 for none
	closed bool      // replaced by a later interval of the same key
}

func newCoalescer(d time.Duration) *coalescer {
	return &coalescer{interval: d, open: map[decisionKey]*interval{}}
}

// coalescable kinds are decisions; the journal's own records and policy
// changes are always stored one by one.
func coalescable(k Kind) bool {
	return k == Refused || k == Allowed || k == Dropped || k == WouldRefuse
}

func keyOf(ev *Event) decisionKey {
	k := decisionKey{agent: ev.Agent, name: ev.Name, proto: ev.Proto, rule: ev.Rule, policy: ev.PolicyHash,
		layer: ev.Layer, kind: ev.Kind, reason: ev.Reason, dst: ev.Dst}
	if len(ev.Addrs) > 0 {
		var b strings.Builder
		for _, a := range ev.Addrs {
			b.WriteString(a.String())
			b.WriteByte(',')
		}
		k.addrs = b.String()
	}
	return k
}

// add appends to out what is to be stored now: ev itself when it opens
// an interval (after the repeats of the interval it closes, if due has
// not collected them yet) or is not a decision; nothing when it is a
// repeat, which is counted.
func (c *coalescer) add(ev Event, out []Event) []Event {
	if c.interval <= 0 || !coalescable(ev.Kind) {
		return append(out, ev)
	}
	k := keyOf(&ev)
	iv, ok := c.open[k]
	if ok && ev.Time.Sub(iv.start) < c.interval {
		if iv.repeat.Count == 0 {
			iv.repeat = ev
			iv.repeat.Count = 0
		}
		iv.repeat.Count += max(ev.Count, 1)
		return out
	}
	if ok {
		if iv.repeat.Count > 0 {
			out = append(out, iv.repeat)
		}
		iv.closed = true
	}
	iv = &interval{key: k, start: ev.Time}
	c.open[k] = iv
	c.order = append(c.order, iv)
	return append(out, ev)
}

// due returns the repeats of the intervals that ended by now (all of
// them when flush is set), as events to store, and forgets those
// intervals. It stops at the first interval still open: one opened
// later that ended already (an event's clock went back) waits for it.
func (c *coalescer) due(now time.Time, flush bool) []Event {
	var out []Event
	n := 0
	for _, iv := range c.order {
		if !flush && now.Sub(iv.start) < c.interval {
			break
		}
		n++
		if iv.closed {
			continue // its repeats went out when the next one opened
		}
		if iv.repeat.Count > 0 {
			out = append(out, iv.repeat)
		}
		delete(c.open, iv.key)
	}
	clear(c.order[:n])
	c.order = c.order[n:]
	if len(c.order) == 0 {
		c.order = c.order[:0:0] // let the backing array go
	}
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return out
}
