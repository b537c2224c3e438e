package firewall

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
)

type elemKey struct {
	addr netip.Addr
	port uint16
}

// elemBytes encodes addr . port the way the kernel stores a concatenation:
// each field padded to a multiple of 4 bytes.
func elemBytes(k elemKey) []byte {
	b := k.addr.AsSlice()
	b = binary.BigEndian.AppendUint16(b, k.port)
	return append(b, 0, 0)
}

// expirySlack is how much earlier than the kernel we consider an element
// gone, so that an answer never relies on an element about to lapse.
const expirySlack = 2 * time.Second

// Allow admits TCP connections to every addr on every port for at least
// need. Elements already known to outlive need cost no netlink call; the
// others are added (or refreshed) in as few batches as possible. It returns
// after the kernel has acknowledged them.
func (m *Manager) Allow(ctx context.Context, addrs []netip.Addr, ports []uint16, need time.Duration) error {
	need = max(need, time.Second)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	deadline := now.Add(need)
	var fresh, known []elemKey
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() && !m.cfg.AgentAddr6.IsValid() {
			continue // the agent has no IPv6 route; nothing to open
		}
		for _, p := range ports {
			k := elemKey{a, p}
			exp, ok := m.expiry[k]
			switch {
			case ok && exp.Add(-expirySlack).After(deadline):
				// outlives the answer: nothing to do
			case ok && exp.After(now):
				known = append(known, k)
			default:
				fresh = append(fresh, k)
			}
		}
	}
	if len(fresh)+len(known) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	all := append(fresh, known...)
	for len(all) > 0 {
		n := min(len(all), maxBatch)
		chunk := all[:n]
		all = all[n:]
		m.queue(chunk, len(fresh), need)
		if err := m.flush(chunk, deadline); err != nil {
			return err
		}
		fresh = fresh[min(len(fresh), n):]
	}
	if len(m.expiry) > 4*int(m.cfg.SetSize) {
		m.sweep(now)
	}
	return nil
}

// queue adds one batch for keys, of which the first nFresh are new to the
// kernel. Each set gets one message per step, not one per element: the
// kernel acknowledges every message, and thousands of acknowledgements
// overflow the socket's receive buffer.
//
// To refresh the timeout of an element the kernel already has, kernels
// before 6.12 need it deleted and added again; adding it first makes the
// delete safe even if it lapsed in the meantime, and the three steps are one
// transaction, so no packet ever sees the element missing.
func (m *Manager) queue(keys []elemKey, nFresh int, timeout time.Duration) {
	nFresh = min(nFresh, len(keys))
	emit := func(keys []elemKey, add bool) {
		var v4, v6 []nftables.SetElement
		for _, k := range keys {
			el := nftables.SetElement{Key: elemBytes(k)}
			if add {
				el.Timeout = timeout
			}
			if k.addr.Is6() {
				v6 = append(v6, el)
			} else {
				v4 = append(v4, el)
			}
		}
		for set, els := range map[string][]nftables.SetElement{set4: v4, set6: v6} {
			if len(els) == 0 {
				continue
			}
			if add {
				_ = m.conn.SetAddElements(m.sets[set], els) // errors only for anonymous sets
			} else {
				_ = m.conn.SetDeleteElements(m.sets[set], els)
			}
		}
	}
	emit(keys, true)
	if m.refresh && nFresh < len(keys) {
		emit(keys[nFresh:], false)
		emit(keys[nFresh:], true)
	}
}

func (m *Manager) flush(pending []elemKey, deadline time.Time) error {
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: add %d elements to the agent's sets: %w", len(pending), err)
	}
	for _, k := range pending {
		m.expiry[k] = deadline
	}
	return nil
}

func (m *Manager) sweep(now time.Time) {
	for k, exp := range m.expiry {
		if !exp.After(now) {
			delete(m.expiry, k)
		}
	}
}

func (m *Manager) aliveElem() nftables.SetElement {
	return nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, aliveKey), Timeout: m.cfg.Heartbeat}
}

// Heartbeat proves sluice alive for another Config.Heartbeat. Call it well
// within that period: once it lapses, the agent's new flows are refused.
func (m *Manager) Heartbeat() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.sets[setAlive]
	el := []nftables.SetElement{m.aliveElem()}
	_ = m.conn.SetAddElements(set, el)
	_ = m.conn.SetDeleteElements(set, []nftables.SetElement{{Key: el[0].Key}})
	_ = m.conn.SetAddElements(set, el)
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: heartbeat: %w", err)
	}
	return nil
}
