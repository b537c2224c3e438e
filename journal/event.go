// Package journal is sluice's decision record: the event every layer
// records, the one vocabulary of reasons, and the sinks that take events.
// For now the sinks write one canonical line per decision; the durable
// store comes later behind the same Sink contract (see Async).
package journal

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Layer is the part of the gateway that decided.
type Layer string

// Layers of the gateway.
const (
	LayerDNS      Layer = "dns"
	LayerFirewall Layer = "firewall"
	LayerTLS      Layer = "tls"
	LayerHTTP     Layer = "http"
	// LayerGit is the git guard's: requests on a host with git rules.
	LayerGit Layer = "git"
	// LayerPolicy records changes of the policy in force.
	LayerPolicy Layer = "policy"
	// LayerJournal records what happened to the journal itself: records
	// lost under overload, records deleted by retention.
	LayerJournal Layer = "journal"
)

// Kind says what an event records.
type Kind uint8

// Kinds of events. Refused is the zero Kind, so that an event that does
// not say is counted as a refusal, never as a pass.
const (
	// Refused: the agent's attempt was refused.
	Refused Kind = iota
	// Allowed: the attempt passed.
	Allowed
	// Dropped: a DNS answer was released to the agent with some of its
	// addresses removed (Addrs); a notice, not a refusal.
	Dropped
	// Changed: the policy in force changed (PolicyHash the new one,
	// OldPolicy the one before, Detail the change).
	Changed
	// Lost: Count records were dropped under overload, never stored.
	Lost
	// Pruned: retention deleted the oldest records (Detail says which,
	// and what the chain's first record now links to).
	Pruned
	// WouldRefuse: the attempt passed, because the agent's policy is in
	// report mode, and would have been refused for Reason otherwise. It
	// is not a refusal: nothing was stopped.
	WouldRefuse
)

// String is the kind's word in logs and records: "refused", "allowed",
// "dropped", "changed", "lost", "pruned" or "would_refuse".
func (k Kind) String() string {
	switch k {
	case Refused:
		return "refused"
	case Allowed:
		return "allowed"
	case Dropped:
		return "dropped"
	case Changed:
		return "changed"
	case Lost:
		return "lost"
	case Pruned:
		return "pruned"
	case WouldRefuse:
		return "would_refuse"
	}
	return "kind" + strconv.Itoa(int(k))
}

// kinds is every Kind, in the order above.
var kinds = []Kind{Refused, Allowed, Dropped, Changed, Lost, Pruned, WouldRefuse}

// Verdicts returns the word of every Kind: the verdicts a record may
// carry, which Filter.Verdict selects by.
func Verdicts() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.String()
	}
	return out
}

// Event is one decision about one agent's attempt to reach something.
type Event struct {
	Time  time.Time
	Agent string
	Layer Layer
	Kind  Kind
	// Reason says why, in the words of Reasons.
	Reason Reason
	// Name is the DNS name, SNI or Host the agent asked for, as it sent it
	// (attacker data: bounded here, escaped by whoever renders it).
	Name string
	// Dst is the destination address and port, when there was one.
	Dst netip.AddrPort
	// Proto is "udp", "tcp", "icmp", ... for firewall events; the query type for DNS.
	Proto string
	// Rule is the policy entry that matched, "" when none did.
	Rule string
	// PolicyHash is the policy version that made the decision.
	PolicyHash string
	// Addrs are the addresses of a DNS answer: the ones handed out when
	// Allowed, the ones removed from it when Dropped.
	Addrs []netip.Addr
	// Detail is free text for a person, such as the upstream's error.
	Detail string
	// Count is how many identical decisions the event stands for; 0 is 1.
	Count int64
	// OldPolicy is the policy hash before a Changed event.
	OldPolicy string
}

// maxField bounds every attacker-controlled string that reaches a record.
const maxField = 300

// bound cuts s to maxField bytes and replaces control characters, so a
// hostile name cannot forge log lines or drive a terminal.
func bound(s string) string {
	if len(s) > maxField {
		s = s[:maxField] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
