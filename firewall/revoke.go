package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/policy"
)

// RevokeFor is how long a revoked destination stays refused to flows that
// were open before: longer than a TCP peer keeps retransmitting into
// silence, so that no packet of such a flow gets through after.
const RevokeFor = 30 * time.Minute

// Revoke takes out of the agent's sets every element that keep refuses,
// after a policy change: new flows to it are refused at once, open ones
// meet a refusal before the established-accept (their tracking entries
// are deleted too), for RevokeFor or until an answer allows it again.
// Elements keep accepts are untouched, and so are their flows. It returns
// the number of elements revoked. The caller keeps answers from opening
// elements meanwhile (the resolver's gate).
//
// In report mode the elements only leave the allow sets, so that new
// flows to them are journaled as would-be refusals; open flows go on
// (no revoked set, no tracked flow deleted: with nf_conntrack_tcp_loose
// off, a flow whose entry is deleted is cut as invalid).
func (m *Manager) Revoke(keep func(addr netip.Addr, port uint16) bool) (int, error) {
	now := time.Now()
	m.mu.Lock()
	var doomed []elemKey
	was := map[elemKey]time.Time{}
	for k, exp := range m.expiry {
		if exp.After(now) && !keep(k.addr, k.port) {
			doomed = append(doomed, k)
			was[k] = exp
			delete(m.expiry, k)
			if !m.cfg.Report {
				m.revoked[k] = now.Add(RevokeFor)
			}
		}
	}
	m.mu.Unlock()
	if len(doomed) == 0 {
		return 0, nil
	}
	slices.SortFunc(doomed, func(a, b elemKey) int { return a.addr.Compare(b.addr)*2 + cmpPort(a.port, b.port) })
	m.connMu.Lock()
	defer m.connMu.Unlock()
	for i := 0; i < len(doomed); i += maxBatch / 2 {
		chunk := doomed[i:min(i+maxBatch/2, len(doomed))]
		v4, v6 := splitFamilies(chunk, fixed(0))
		r4, r6 := splitFamilies(chunk, fixed(RevokeFor))
		// Into the revoked sets and out of the allow sets in one
		// transaction: no packet sees the element in neither.
		if !m.cfg.Report {
			m.setOp(setRevoked4, setRevoked6, r4, r6, true)
		}
		m.setOp(set4, set6, v4, v6, false)
		if err := m.conn.Flush(); err != nil {
			// The kernel still has these and the rest: say so, so that a
			// later Allow or Revoke sees them as they are.
			m.mu.Lock()
			for _, k := range doomed[i:] {
				m.expiry[k] = was[k]
				delete(m.revoked, k)
			}
			m.mu.Unlock()
			return i, fmt.Errorf("firewall: revoke %d elements: %w", len(doomed)-i, err)
		}
	}
	if m.cfg.Report {
		return len(doomed), nil
	}
	cut := make(map[elemKey]bool, len(doomed))
	for _, k := range doomed {
		cut[k] = true
	}
	if _, err := m.forget(func(f flow) bool { return f.proto == unix.IPPROTO_TCP && cut[elemKey{f.dst, f.dport}] }); err != nil {
		return len(doomed), err
	}
	return len(doomed), nil
}

func cmpPort(a, b uint16) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// splitFamilies turns keys into set elements by family, each with its
// timeout (none when zero: a delete carries none).
func splitFamilies(keys []elemKey, timeout func(elemKey) time.Duration) (v4, v6 []nftables.SetElement) {
	for _, k := range keys {
		el := nftables.SetElement{Key: elemBytes(k), Timeout: timeout(k)}
		if k.addr.Is6() {
			v6 = append(v6, el)
		} else {
			v4 = append(v4, el)
		}
	}
	return v4, v6
}

// fixed is the same timeout for every element.
func fixed(d time.Duration) func(elemKey) time.Duration {
	return func(elemKey) time.Duration { return d }
}

// setOp queues adding (or deleting) elements to a pair of sets.
func (m *Manager) setOp(name4, name6 string, v4, v6 []nftables.SetElement, add bool) {
	for _, s := range []struct {
		name string
		els  []nftables.SetElement
	}{{name4, v4}, {name6, v6}} {
		if len(s.els) == 0 {
			continue
		}
		if add {
			_ = m.conn.SetAddElements(m.sets[s.name], s.els) // errors only for anonymous sets
		} else {
			_ = m.conn.SetDeleteElements(m.sets[s.name], s.els)
		}
	}
}

// unrevokeLocked returns the keys among keys that are in the revoked sets
// and forgets them there: an answer allowed them again. The caller takes
// them out of the revoked sets in the batch that adds them to the allow
// sets.
func (m *Manager) unrevokeLocked(keys []elemKey, now time.Time) []elemKey {
	if len(m.revoked) == 0 {
		return nil
	}
	var out []elemKey
	for _, k := range keys {
		if until, ok := m.revoked[k]; ok {
			delete(m.revoked, k)
			if until.After(now) {
				out = append(out, k)
			}
		}
	}
	return out
}

// Reconfigure replaces the rules for a changed policy (its cidr entries
// and the ports the proxy inspects) in one transaction, keeping the sets
// and their elements, and returns the cidr entries it replaced. When it
// fails, the rules in force stay as they were.
func (m *Manager) Reconfigure(prefixes []*policy.Entry, tlsPorts, httpPorts []uint16) (old []*policy.Entry, err error) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	prev := m.cfg
	m.cfg.Prefixes, m.cfg.TLSPorts, m.cfg.HTTPPorts = prefixes, tlsPorts, httpPorts
	m.addChains(true)
	if err := m.conn.Flush(); err != nil {
		m.cfg = prev
		return nil, fmt.Errorf("firewall: replace the rules of table inet %s: %w", m.cfg.Table, err)
	}
	return prev.Prefixes, nil
}

// ForgetPrefixFlows deletes the agent's tracked TCP flows to what the cidr
// entries old allowed and now do not. Such a flow's next packet makes a
// new entry, which meets the rules for new flows and is refused (a
// revoked set element has a refusing rule too, since it may still be in
// the sets' way otherwise; a cidr entry has no element to keep). In
// report mode it deletes nothing: a policy change cuts no flow there.
func (m *Manager) ForgetPrefixFlows(old, now []*policy.Entry) error {
	if m.cfg.Report || slices.EqualFunc(old, now, func(a, b *policy.Entry) bool { return a.Prefix == b.Prefix && slices.Equal(a.Ports, b.Ports) }) {
		return nil
	}
	_, err := m.forget(func(f flow) bool {
		return f.proto == unix.IPPROTO_TCP && allowedBy(old, f.dst, f.dport) && !allowedBy(now, f.dst, f.dport)
	})
	return err
}

// forget deletes the tracked flows from the agent's addresses that match.
func (m *Manager) forget(match func(flow) bool) (int, error) {
	var agent []netip.Prefix
	src4, src6 := m.sources()
	for _, p := range []netip.Prefix{src4, src6} {
		if p.IsValid() {
			agent = append(agent, p)
		}
	}
	return m.forgetFn(m.cfg.NetNSFd, func(f flow) bool { return policy.InPrefixes(agent, f.src) && match(f) })
}

// ForgetFlows deletes the tracked flows started from an address in nets
// (see the package's ForgetFlows), in a walk shared with other gateways
// when the Manager has a FlowSweeper (Config.Flows).
func (m *Manager) ForgetFlows(nets []netip.Prefix) (int, error) {
	return m.forgetFn(m.cfg.NetNSFd, func(f flow) bool { return policy.InPrefixes(nets, f.src) })
}

// allowedBy says whether a cidr entry among es allows addr on port.
func allowedBy(es []*policy.Entry, addr netip.Addr, port uint16) bool {
	return slices.ContainsFunc(es, func(e *policy.Entry) bool { return e.Prefix.Contains(addr) && slices.Contains(e.Ports, port) })
}
