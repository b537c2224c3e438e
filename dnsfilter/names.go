package dnsfilter

import (
	"sync"
	"time"

	"github.com/sluicegw/sluice/policy"
)

// Under a wildcard entry the query names themselves can carry data out
// (one new name per chunk), so each wildcard entry has a budget of distinct
// new names per agent: policy.Entry.NameBudget a minute. A name admitted
// stays known for nameMemory, and asking it again in that time costs
// nothing; a new name beyond the budget is refused before it leaves.
const (
	budgetWindow = time.Minute
	nameMemory   = 10 * time.Minute
)

// nameBudgets holds the budget state of one agent's wildcard entries, by
// host pattern (so that a reloaded policy keeps it). It is safe for
// concurrent use.
type nameBudgets struct {
	mu      sync.Mutex
	entries map[string]*nameBudget
}

// nameBudget is one entry's state. Its memory is bounded by its limit: at
// most limit admissions in any budgetWindow, so at most
// limit*nameMemory/budgetWindow names known at once, and a sweep runs when
// twice that many are held.
type nameBudget struct {
	limit  int
	seen   map[string]time.Time // name → when it stops being known
	admits []time.Time          // the last limit admissions, a ring
	next   int                  // the oldest admission once the ring is full
}

func newNameBudgets() *nameBudgets {
	return &nameBudgets{entries: map[string]*nameBudget{}}
}

// admit reports whether the canonical name, matched by e, may be resolved
// at now, and records it when it may.
func (b *nameBudgets) admit(e *policy.Entry, name string, now time.Time) bool {
	limit := e.NameBudget()
	if limit == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nb := b.entries[e.Host]
	if nb == nil || nb.limit != limit {
		nb = &nameBudget{limit: limit, seen: map[string]time.Time{}}
		b.entries[e.Host] = nb
	}
	if until, ok := nb.seen[name]; ok && now.Before(until) {
		return true
	}
	if len(nb.admits) < limit {
		nb.admits = append(nb.admits, now)
	} else {
		if now.Sub(nb.admits[nb.next]) < budgetWindow {
			return false
		}
		nb.admits[nb.next] = now
		nb.next = (nb.next + 1) % limit
	}
	nb.seen[name] = now.Add(nameMemory)
	if len(nb.seen) > 2*nb.known() {
		for n, until := range nb.seen {
			if !now.Before(until) {
				delete(nb.seen, n)
			}
		}
	}
	return true
}

// known is how many names can be known at once.
func (nb *nameBudget) known() int {
	return nb.limit * int(nameMemory/budgetWindow)
}

// held is how many names the entry's state holds (for tests).
func (b *nameBudgets) held(host string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if nb := b.entries[host]; nb != nil {
		return len(nb.seen)
	}
	return 0
}
