package policy

import (
	"net/netip"
	"slices"
	"strings"
)

// Reason says why a decision went the way it did. Reasons are stable
// strings: they are stored in the journal and matched by tools.
type Reason string

// Reasons of decisions made against the policy.
const (
	ReasonAllowed        Reason = "allowed"
	ReasonNoPolicy       Reason = "no_policy"
	ReasonInvalidName    Reason = "invalid_name"
	ReasonNameNotAllowed Reason = "name_not_allowed"
	ReasonPortNotAllowed Reason = "port_not_allowed"
	ReasonAddrNotAllowed Reason = "address_not_allowed"
)

// Reasons returns every reason a decision of the policy may carry. The
// layers journal them as journal.Reason, whose vocabulary holds each word.
func Reasons() []Reason {
	return []Reason{ReasonAllowed, ReasonNoPolicy, ReasonInvalidName, ReasonNameNotAllowed,
		ReasonPortNotAllowed, ReasonAddrNotAllowed}
}

// Decision is the outcome of matching one name, address or port. A refusal
// is a Decision with Allow false, never an error.
type Decision struct {
	Allow  bool
	Reason Reason
	// Name is the canonical name that was matched, when there was one.
	Name string
	// Entry is the rule that matched; nil when none did.
	Entry *Entry
	// PolicyHash is the version of the policy that decided.
	PolicyHash string
}

// Rule describes the matching entry for logs: "agent.yaml:7 api.github.com ports 80,443".
func (d Decision) Rule() string {
	switch {
	case d.Entry == nil:
		return ""
	case d.Entry.rule != "":
		return d.Entry.rule // every connection and answer records it
	}
	return d.Entry.Source + " " + d.Entry.String()
}

// MatchName decides whether name may be resolved at all, on any port. The
// best match wins: an exact entry, else the wildcard with the longest suffix.
func (p *Policy) MatchName(name string) Decision {
	if p == nil {
		return Decision{Reason: ReasonNoPolicy, PolicyHash: p.Hash()}
	}
	canon, err := CanonicalName(name)
	if err != nil {
		return Decision{Reason: ReasonInvalidName, PolicyHash: p.hash}
	}
	d := Decision{Name: canon, PolicyHash: p.hash}
	if e, ok := p.exact[canon]; ok {
		d.Allow, d.Reason, d.Entry = true, ReasonAllowed, e
		return d
	}
	for _, e := range p.wildcards {
		// e.Host is "*.suffix": the name must end in ".suffix" and be longer,
		// so the apex and names that only end in the same letters do not match.
		if strings.HasSuffix(canon, e.Host[1:]) {
			d.Allow, d.Reason, d.Entry = true, ReasonAllowed, e
			return d
		}
	}
	d.Reason = ReasonNameNotAllowed
	return d
}

// MatchNamePort decides whether a connection to name on TCP port may pass.
func (p *Policy) MatchNamePort(name string, port uint16) Decision {
	d := p.MatchName(name)
	if d.Allow && !slices.Contains(d.Entry.Ports, port) {
		d.Allow, d.Reason = false, ReasonPortNotAllowed
	}
	return d
}

// MatchAddr decides whether a connection to addr on TCP port is allowed by
// an address entry (one without DNS).
func (p *Policy) MatchAddr(addr netip.Addr, port uint16) Decision {
	if p == nil {
		return Decision{Reason: ReasonNoPolicy, PolicyHash: p.Hash()}
	}
	addr = addr.Unmap()
	d := Decision{Reason: ReasonAddrNotAllowed, PolicyHash: p.hash}
	for _, e := range p.prefixes {
		if e.Prefix.Contains(addr) {
			d.Entry = e
			if slices.Contains(e.Ports, port) {
				d.Allow, d.Reason = true, ReasonAllowed
				return d
			}
			d.Reason = ReasonPortNotAllowed
		}
	}
	return d
}
