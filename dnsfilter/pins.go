package dnsfilter

import (
	"net/netip"
	"sync"
	"time"
)

// Pins remembers, for one agent, which addresses the resolver handed out
// for which name and until when. The TLS proxy asks it whether a connection
// to an address may carry a given SNI: an address is evidence only for the
// name whose answer put it in the sets.
type Pins struct {
	mu    sync.Mutex
	names map[string]map[netip.Addr]time.Time
	count int
	max   int
	now   func() time.Time
	// swept is when the table was last swept: a full table is swept at
	// most once a second, so an agent that fills it cannot make every
	// answer pay for a scan.
	swept time.Time
}

// NewPins returns an empty pin table that holds at most max address pins;
// past that, expired pins are swept and, if that is not enough, the new
// pin is refused (so the answer fails closed with SERVFAIL).
func NewPins(max int) *Pins {
	return &Pins{names: map[string]map[netip.Addr]time.Time{}, max: max, now: time.Now}
}

// Pin records that name resolved to addrs, valid until until.
// It reports false when the table is full.
func (p *Pins) Pin(name string, addrs []netip.Addr, until time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.names[name]
	fresh := 0
	for _, a := range addrs {
		if _, ok := m[a]; !ok {
			fresh++
		}
	}
	if p.count+fresh > p.max {
		if now := p.now(); now.Sub(p.swept) >= time.Second {
			p.swept = now
			p.sweepLocked()
		}
		if p.count+fresh > p.max {
			return false
		}
	}
	if m == nil {
		m = map[netip.Addr]time.Time{}
		p.names[name] = m
	}
	for _, a := range addrs {
		if _, ok := m[a]; !ok {
			p.count++
		}
		if until.After(m[a]) {
			m[a] = until
		}
	}
	return true
}

// Pinned reports whether addr was handed out for name and is still valid.
func (p *Pins) Pinned(name string, addr netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.names[name][addr.Unmap()]
	return ok && p.now().Before(until)
}

// Len is the number of pins held, expired ones included until the next sweep.
func (p *Pins) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Sweep drops expired pins.
func (p *Pins) Sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
}

func (p *Pins) sweepLocked() {
	now := p.now()
	for name, m := range p.names {
		for a, until := range m {
			if !now.Before(until) {
				delete(m, a)
				p.count--
			}
		}
		if len(m) == 0 {
			delete(p.names, name)
		}
	}
}

// Retain asks decide about every unexpired pin: a pin it refuses (a
// policy change no longer allows the name, or no longer that address for
// it) is dropped; for the others it says the ports the address is open on,
// and keep is called with them.
func (p *Pins) Retain(decide func(name string, addr netip.Addr) (ports []uint16, ok bool), keep func(addr netip.Addr, ports []uint16)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for name, m := range p.names {
		for a, until := range m {
			if !now.Before(until) {
				continue
			}
			ports, ok := decide(name, a)
			if !ok {
				delete(m, a)
				p.count--
				continue
			}
			keep(a, ports)
		}
		if len(m) == 0 {
			delete(p.names, name)
		}
	}
}
