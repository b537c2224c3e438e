package gateway

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Reload reads the policy source again and puts it in force (SetPolicy).
// A policy that does not load changes nothing: the one in force stays,
// and the error (every problem, with file:line) is logged and returned.
func (g *Gateway) Reload() error {
	return g.reloadAs(journal.ReasonReload, "reload of "+g.cfg.PolicySource.String())
}

func (g *Gateway) reloadAs(reason journal.Reason, who string) error {
	p, warnings, err := g.cfg.PolicySource.Load()
	if err != nil {
		g.log.Error("policy reload failed: keeping the policy in force", "policy", g.policy.Load().Hash(), "err", err)
		return err
	}
	for _, w := range warnings {
		g.log.Warn("policy: "+w.Msg, "at", w.Source)
	}
	return g.setBase(p, reason, who)
}

// SetPolicy puts p in force at once. A host added is allowed from the
// next question. A host removed is revoked: its addresses leave the sets
// (those another allowed name still justifies stay), its pins go, and its
// open connections are cut, the proxied ones by the proxy and the
// forwarded ones by the firewall. Connections to hosts that did not
// change are untouched. If the kernel refuses the new rules, nothing
// changes and the error is returned.
// The reviewers' allowances stay on top of p.
func (g *Gateway) SetPolicy(p *policy.Policy) error {
	return g.setBase(p, journal.ReasonReload, "")
}

// setBase makes p the policy the allowances go on top of, and puts the
// two in force.
func (g *Gateway) setBase(p *policy.Policy, reason journal.Reason, who string) error {
	g.change.Lock()
	defer g.change.Unlock()
	g.allow.mu.Lock()
	eff, err := effective(p, g.allow.active)
	g.allow.mu.Unlock()
	if err != nil {
		return err
	}
	if err := g.setPolicy(eff, reason, who); err != nil {
		return err
	}
	g.allow.mu.Lock()
	g.allow.base = p
	g.allow.mu.Unlock()
	return nil
}

// setPolicy puts p in force as it is, journaled as a change for reason,
// by who. Callers hold g.change across working p out and putting it in
// force, so that changes apply in the order they were worked out.
func (g *Gateway) setPolicy(p *policy.Policy, reason journal.Reason, who string) error {
	g.reload.Lock()
	defer g.reload.Unlock()
	start := time.Now()
	old := g.policy.Load()
	if err := g.checkRuledHosts(p); err != nil {
		g.log.Error("policy change refused: keeping the policy in force", "policy", old.Hash(), "err", err)
		return err
	}
	tlsPorts, httpPorts := p.InspectedPorts()
	oldPrefixes, err := g.fw.Reconfigure(p.Prefixes(), tlsPorts, httpPorts)
	if err != nil {
		g.log.Error("policy change failed: keeping the policy in force", "policy", old.Hash(), "err", err)
		return err
	}
	// From here on every decision is the new policy's. While the resolver
	// holds its gate, no answer opens the sets (those decided under the
	// old policy have finished, those under the new one wait), so what
	// is revoked here is all the old policy opened that p does not allow.
	var cut, revoked int
	g.resolver.SetPolicy(p, func() {
		g.policy.Store(p)
		cut = g.proxy.SetPolicy(p, g.resolver.Permits)
		justified := justified(p, g.pins, g.resolver.Permits, g.cfg.Report)
		revoked, err = g.fw.Revoke(func(a netip.Addr, port uint16) bool { return justified[addrPort{a, port}] })
		if err == nil {
			err = g.fw.ForgetPrefixFlows(oldPrefixes, p.Prefixes())
		}
	})
	if serr := g.state.SetPolicy(p.Hash()); serr != nil { // for `sluice status`; the run goes on
		g.log.Warn("could not record the new policy's hash for sluice status", "err", serr)
	}
	g.log.Info("policy reloaded", "old", old.Hash(), "new", p.Hash(), "entries", len(p.Entries()),
		"revoked_addresses", revoked, "cut_connections", cut, "took", time.Since(start).Round(time.Microsecond))
	g.journal.Record(journal.Event{Time: time.Now(), Agent: g.cfg.Name, Layer: journal.LayerPolicy, Kind: journal.Changed,
		Reason: reason, PolicyHash: p.Hash(), OldPolicy: old.Hash(),
		Detail: fmt.Sprintf("%s\nrevoked %d addresses, cut %d connections\n%s", who, revoked, cut, policyDiff(old, p))})
	if err != nil {
		// The new policy is in force, but what the old one opened may
		// still be open: fail closed, the run ends.
		err = fmt.Errorf("revoking what the new policy no longer allows: %w", err)
		g.reportFatal(err)
	}
	return err
}

// policyDiff lists the entries old has and p has not ("-") and those p
// has and old has not ("+").
func policyDiff(old, p *policy.Policy) string {
	lines := func(q *policy.Policy) map[string]bool {
		m := map[string]bool{}
		for _, e := range q.Entries() {
			m[e.String()] = true
		}
		return m
	}
	was, is := lines(old), lines(p)
	var b strings.Builder
	for _, e := range old.Entries() {
		if !is[e.String()] {
			b.WriteString("- " + e.String() + "\n")
		}
	}
	for _, e := range p.Entries() {
		if !was[e.String()] {
			b.WriteString("+ " + e.String() + "\n")
		}
	}
	return b.String()
}

type addrPort struct {
	addr netip.Addr
	port uint16
}

// justified is what the sets may hold under p: every live pin's address
// that p still allows for its name (permits applies the answers' filter
// for the entry's private flag), on the ports of the entry the name
// matches now. The pins p no longer allows are dropped on the way, but
// in report mode, where they stay (with nothing open in the sets): a
// connection to such a name is let through and journaled, and its pin
// still tells whether it goes where the name led.
func justified(p *policy.Policy, pins *dnsfilter.Pins, permits func(netip.Addr, bool) bool, report bool) map[addrPort]bool {
	out := make(map[addrPort]bool, pins.Len())
	var last string
	var d policy.Decision
	pins.Retain(func(name string, a netip.Addr) ([]uint16, bool) {
		if name != last {
			last, d = name, p.MatchName(name)
		}
		if !d.Allow || !permits(a, d.Entry.Private) {
			return nil, report
		}
		return d.Entry.Ports, true
	}, func(a netip.Addr, ports []uint16) {
		for _, port := range ports {
			out[addrPort{a.Unmap(), port}] = true
		}
	})
	return out
}
