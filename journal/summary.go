package journal

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Summary counts the refusals that pass through it, grouped by what was
// refused and why, for the line a person reads when a run ends: what to
// allow, at a glance. It is a Writer that never fails; put it first in a
// Tee so that a failing store does not hide what it counts.
type Summary struct {
	mu     sync.Mutex
	total  int64
	groups map[summaryKey]int64
}

type summaryKey struct {
	what   string // "dns other.test", "tcp 192.0.2.10:22"
	reason Reason
}

// maxSummaryGroups bounds the groups kept: an agent that tries a new
// name each time would otherwise grow the map without end. Refusals
// beyond it are counted in the total only.
const maxSummaryGroups = 1000

// WriteEvents counts the refusals among evs.
func (s *Summary) WriteEvents(evs []Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		if ev.Kind != Refused {
			continue
		}
		n := max(ev.Count, 1)
		s.total += n
		k := summaryKey{what: summaryTarget(ev), reason: ev.Reason}
		if s.groups == nil {
			s.groups = map[summaryKey]int64{}
		}
		if _, ok := s.groups[k]; ok || len(s.groups) < maxSummaryGroups {
			s.groups[k] += n
		}
	}
	return nil
}

// summaryTarget names what was refused as a person would allow it: the
// name at the DNS, TLS and HTTP layers, the protocol and address at the
// firewall.
func summaryTarget(ev Event) string {
	layer := string(ev.Layer)
	if ev.Layer == LayerFirewall && ev.Proto != "" {
		layer = ev.Proto
	}
	switch {
	case ev.Name != "" && ev.Dst.IsValid() && ev.Layer != LayerDNS:
		return fmt.Sprintf("%s %s:%d", layer, bound(strings.TrimSuffix(ev.Name, ".")), ev.Dst.Port())
	case ev.Name != "":
		return layer + " " + bound(strings.TrimSuffix(ev.Name, "."))
	case ev.Dst.IsValid():
		return layer + " " + ev.Dst.String()
	}
	return layer
}

// Line is the summary in one line, the groups most refused first, at most
// top of them; "" when nothing was refused.
//
//	5 refused — dns other.test ×2 (name_not_allowed), tcp 192.0.2.10:22 ×3 (no_set_entry)
func (s *Summary) Line(top int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total == 0 {
		return ""
	}
	type group struct {
		summaryKey
		n int64
	}
	var gs []group
	for k, n := range s.groups {
		gs = append(gs, group{k, n})
	}
	slices.SortFunc(gs, func(a, b group) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.what, b.what), cmp.Compare(a.reason, b.reason))
	})
	var parts []string
	var shown int64
	for i, g := range gs {
		if i == top {
			break
		}
		part := printable(g.what)
		if g.n > 1 {
			part += fmt.Sprintf(" ×%d", g.n)
		}
		parts = append(parts, part+" ("+string(g.reason)+")")
		shown += g.n
	}
	if shown < s.total {
		parts = append(parts, fmt.Sprintf("%d more", s.total-shown))
	}
	return fmt.Sprintf("%d refused — %s", s.total, strings.Join(parts, ", "))
}

// printable quotes s when it holds a rune that is not printable (a
// control, a bidirectional override): the summary goes to a person's
// terminal, and the names in it are the agent's.
func printable(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) && r != ' ' {
			return strconv.Quote(s)
		}
	}
	return s
}
