package tlsinspect

import (
	"net"
	"net/netip"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// liveHTTP is what the HTTP path last let through on a connection: the
// name (canonical Host) and destination of its latest request.
type liveHTTP struct {
	name string
	dst  netip.AddrPort
	ev   journal.Event
	// intercepted: handed to the interceptor, which checks each request
	// under the policy in force (see stillAllowed).
	intercepted bool
	// reported: report mode let it through as a would-be refusal (or
	// journaled its would-be revocation already): nothing to revoke.
	reported bool
}

// SetPolicy puts p in force: every decision from now on is made under it,
// and every open connection it no longer allows is cut (reset both ways)
// and journaled as revoked: its name or port no longer allowed, or its
// address no longer one the name's entry may resolve to (permits says,
// for the entry's private flag; nil: any). Connections it still allows
// are untouched, whatever their pins: a long-lived connection keeps going
// after the answer that opened it expired, as it would have without the
// change. It returns the number of connections cut. In report mode it
// cuts none: each connection it would have cut is journaled once as a
// would-be revocation, and goes on.
func (px *Proxy) SetPolicy(p *policy.Policy, permits func(addr netip.Addr, private bool) bool) int {
	px.mu.Lock()
	px.permits = permits
	px.mu.Unlock()
	px.policy.Store(p)
	still := func(name string, dst netip.AddrPort) bool { return stillAllowed(p, permits, name, dst, false) }
	n := 0
	px.mu.Lock()
	for c, st := range px.live {
		if st.name != "" && !st.reported && !stillAllowed(p, permits, st.name, st.dst, st.intercepted) {
			ev := st.ev
			ev.PolicyHash = p.Hash()
			if px.cfg.Report {
				px.wouldRefuse(ev, journal.ReasonRevoked)
				st.reported = true
				continue
			}
			px.record(ev, journal.ReasonRevoked)
			reset(c) // the handler's next read or write fails
			n++
		}
	}
	px.mu.Unlock()
	loops, _ := px.eventLoops() // none started: no connection to cut there
	for _, l := range loops {
		l.call(func() { n += l.revoke(p, still) })
	}
	return n
}

// stillAllowed says whether p allows a connection decided for name (by
// SNI or Host) to dst, or, without a name, to dst by a cidr entry. A
// connection spliced or proxied as plain HTTP is not allowed once its
// host has rules: its requests would go unchecked. An intercepted one
// stays: its next request is decided under p.
func stillAllowed(p *policy.Policy, permits func(netip.Addr, bool) bool, name string, dst netip.AddrPort, intercepted bool) bool {
	if name == "" {
		return p.MatchAddr(dst.Addr(), dst.Port()).Allow
	}
	d := p.MatchNamePort(name, dst.Port())
	return d.Allow && (permits == nil || permits(dst.Addr(), d.Entry.Private)) && (intercepted || !d.Entry.Inspected())
}

// noteHTTP records what the HTTP path let through on c, for SetPolicy. It
// reports false when a policy change since the decision (ev's) no longer
// allows it: under px.mu, either SetPolicy's scan comes after and sees the
// name, or the new policy is in force here. An ev of kind WouldRefuse
// was let through by report mode, and journaled so: it passes, and
// reported says so. In report mode, what a change no longer allows
// passes too, journaled as a would-be revocation, and reported.
func (px *Proxy) noteHTTP(c *net.TCPConn, ev journal.Event, intercepted bool) (ok, reported bool) {
	px.mu.Lock()
	defer px.mu.Unlock()
	reported = px.cfg.Report && ev.Kind == journal.WouldRefuse
	ok = reported || !px.changedSinceLocked(ev, ev.Dst, intercepted)
	if !ok && px.cfg.Report {
		px.wouldRefuse(ev, journal.ReasonRevoked)
		ok, reported = true, true
	}
	if st := px.live[c]; st != nil {
		st.name, st.dst, st.ev, st.intercepted, st.reported = ev.Name, ev.Dst, ev, intercepted, reported
	}
	return ok, reported
}

// changedSince reports whether the policy in force is not the one that
// decided ev (for name ev.Name, or by address without one) and no longer
// allows it.
func (px *Proxy) changedSince(ev journal.Event, dst netip.AddrPort) bool {
	px.mu.Lock()
	defer px.mu.Unlock()
	return px.changedSinceLocked(ev, dst, false)
}

func (px *Proxy) changedSinceLocked(ev journal.Event, dst netip.AddrPort, intercepted bool) bool {
	p := px.policy.Load()
	return p.Hash() != ev.PolicyHash && !stillAllowed(p, px.permits, ev.Name, dst, intercepted)
}

// revoke cuts, on the loop, the connections p no longer allows: those
// past their decision (dialing, relaying). One still reading its hello is
// decided under p anyway. It returns how many it cut.
func (l *loop) revoke(p *policy.Policy, still func(string, netip.AddrPort) bool) int {
	n := 0
	for _, c := range l.conns {
		name := c.name
		switch c.phase {
		case phaseDial:
			name = c.ev.Name
		case phaseRelay:
		default:
			continue
		}
		if c.reported || still(name, c.dst) {
			continue
		}
		ev := journal.Event{Agent: l.px.cfg.Agent, Layer: journal.LayerTLS, Proto: "tcp", Name: name, Dst: c.dst, PolicyHash: p.Hash()}
		if l.px.cfg.Report {
			l.px.wouldRefuse(ev, journal.ReasonRevoked)
			c.reported = true
			continue
		}
		l.px.record(ev, journal.ReasonRevoked)
		c.failed = -1 // both sides reset at once: nothing held is owed to either
		c.cut()
		n++
	}
	return n
}
