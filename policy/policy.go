// Package policy holds sluice's policy: which names, addresses and ports an
// agent may reach. It parses and validates the policy file, matches names
// and ports against it, and names every version by a canonical hash.
//
// The package is pure: no I/O, no goroutines, no global state.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultPorts are the ports of an entry that names none.
var DefaultPorts = []uint16{80, 443}

// Entry is one validated line of the allow list: a host pattern or an
// address prefix, and the TCP ports it opens.
type Entry struct {
	// Host is the canonical name ("api.github.com") or wildcard
	// ("*.example.com", any subdomain but not the apex). Empty for a CIDR entry.
	Host string
	// Prefix is the destination prefix of an entry without DNS; zero for a host entry.
	Prefix netip.Prefix
	// Ports are the TCP destination ports, sorted, without duplicates.
	Ports []uint16
	// TLSPorts and HTTPPorts are ports, besides 443 and 80, on which
	// connections are checked by the TLS (SNI) or HTTP (Host) proxy. They
	// are part of Ports.
	TLSPorts, HTTPPorts []uint16
	// Private allows the name to resolve to private and internal addresses.
	Private bool
	// MaxNewNames bounds, for a wildcard entry, how many distinct names
	// under it that it has not seen lately one agent may have resolved in
	// a minute: the query names themselves can carry data out. Zero means
	// DefaultMaxNewNames; NoNameBudget (written max_new_names: 0) means no
	// bound. An exact entry has one name and no budget. See NameBudget.
	MaxNewNames int
	// Git and HTTP make sluice terminate the host's TLS and check each
	// request against them (see Inspected); nil and none for an entry
	// that is spliced by its SNI.
	Git  *GitRules
	HTTP []HTTPRule
	// Accept are the warnings (Risks) a person acknowledged for this
	// entry: Lint does not repeat them.
	Accept []string
	// Source says where the entry came from: "agent.yaml:7" or "--allow".
	Source string

	rule string // Source and String, made once by New for Decision.Rule
}

// Wildcard reports whether the entry matches subdomains rather than one name.
func (e *Entry) Wildcard() bool { return strings.HasPrefix(e.Host, "*.") }

// Name budget of a wildcard entry.
const (
	// DefaultMaxNewNames is a wildcard entry's budget when it names none:
	// more distinct new names a minute than a package manager or a
	// browser asks of one domain, and few enough that the names cannot
	// carry much.
	DefaultMaxNewNames = 100
	// MaxMaxNewNames is the largest budget a policy may give.
	MaxMaxNewNames = 10000
	// NoNameBudget in MaxNewNames turns the budget off.
	NoNameBudget = -1
)

// NameBudget is how many distinct new names under the entry one agent may
// resolve a minute; 0 means no bound (an exact entry, or a wildcard whose
// budget is turned off).
func (e *Entry) NameBudget() int {
	switch {
	case !e.Wildcard() || e.MaxNewNames < 0:
		return 0
	case e.MaxNewNames == 0:
		return DefaultMaxNewNames
	}
	return e.MaxNewNames
}

// String is the entry in the form a person would write it.
func (e *Entry) String() string {
	target := e.Host
	if e.Host == "" {
		target = e.Prefix.String()
	}
	ports := make([]string, len(e.Ports))
	for i, p := range e.Ports {
		ports[i] = strconv.Itoa(int(p))
	}
	s := target + " ports " + strings.Join(ports, ",")
	if e.Private {
		s += " private"
	}
	if e.Wildcard() && e.MaxNewNames != 0 {
		s += " max_new_names " + strconv.Itoa(max(e.NameBudget(), 0))
	}
	return s + e.rulesString()
}

// Policy is a validated, immutable allow list. The zero value and nil allow
// nothing.
type Policy struct {
	exact     map[string]*Entry
	wildcards []*Entry // sorted by suffix length, longest first
	prefixes  []*Entry
	hash      string
	// tlsPorts and httpPorts are the ports the proxy inspects.
	tlsPorts, httpPorts []uint16
}

// InspectedPorts returns the TCP ports whose connections go through the
// TLS proxy (443 and every entry's tls_ports) and the HTTP proxy (80 and
// every entry's http_ports).
func (p *Policy) InspectedPorts() (tls, http []uint16) {
	if p == nil {
		return []uint16{443}, []uint16{80}
	}
	return p.tlsPorts, p.httpPorts
}

// Hash is the policy's version id: the same allow list always has the same
// hash, however it is ordered, spelled or split between file and flags.
func (p *Policy) Hash() string {
	if p == nil {
		return "none"
	}
	return p.hash
}

// Entries returns every entry, host entries first, in a stable order.
func (p *Policy) Entries() []*Entry {
	if p == nil {
		return nil
	}
	var out []*Entry
	for _, e := range p.exact {
		out = append(out, e)
	}
	out = append(out, p.wildcards...)
	slices.SortFunc(out, func(a, b *Entry) int { return strings.Compare(a.Host, b.Host) })
	return append(out, p.prefixes...)
}

// Prefixes returns the entries for destinations without DNS.
func (p *Policy) Prefixes() []*Entry {
	if p == nil {
		return nil
	}
	return p.prefixes
}

// New builds a policy from entries that have already been validated, one
// by one, by ParseFile or ParseAllowFlag. It refuses a host listed twice.
func New(entries []Entry) (*Policy, error) {
	p := &Policy{exact: map[string]*Entry{}}
	seen := map[string]*Entry{}
	var errs Errors
	for i := range entries {
		e := &entries[i]
		key := e.Host
		if key == "" {
			key = e.Prefix.String()
		}
		if prev, ok := seen[key]; ok {
			errs = append(errs, Error{Source: e.Source, Msg: fmt.Sprintf(
				"%s is already listed at %s; put all its ports in one entry", key, prev.Source)})
			continue
		}
		seen[key] = e
		e.rule = e.Source + " " + e.String()
		switch {
		case e.Host == "":
			p.prefixes = append(p.prefixes, e)
		case e.Wildcard():
			p.wildcards = append(p.wildcards, e)
		default:
			p.exact[e.Host] = e
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	p.tlsPorts, p.httpPorts = []uint16{443}, []uint16{80}
	for i := range entries {
		p.tlsPorts = append(p.tlsPorts, entries[i].TLSPorts...)
		p.httpPorts = append(p.httpPorts, entries[i].HTTPPorts...)
	}
	slices.Sort(p.tlsPorts)
	slices.Sort(p.httpPorts)
	p.tlsPorts, p.httpPorts = slices.Compact(p.tlsPorts), slices.Compact(p.httpPorts)
	for _, port := range p.tlsPorts {
		if slices.Contains(p.httpPorts, port) {
			return nil, Errors{{Source: "policy", Msg: fmt.Sprintf("port %d is listed both as a TLS and as an HTTP port", port)}}
		}
	}
	slices.SortStableFunc(p.wildcards, func(a, b *Entry) int { return len(b.Host) - len(a.Host) })
	slices.SortFunc(p.prefixes, func(a, b *Entry) int { return strings.Compare(a.Prefix.String(), b.Prefix.String()) })
	p.hash = p.computeHash()
	return p, nil
}

func (p *Policy) computeHash() string {
	h := sha256.New()
	for _, e := range p.Entries() {
		// Source is left out on purpose: moving a line does not change what is allowed.
		fmt.Fprintf(h, "%s|%s|%v|%v|%v|%v", e.Host, prefixString(e.Prefix), e.Ports, e.Private, e.TLSPorts, e.HTTPPorts)
		if e.Wildcard() {
			fmt.Fprintf(h, "|%d", e.NameBudget())
		}
		if e.Inspected() {
			fmt.Fprintf(h, "|%s", e.rulesString())
		}
		fmt.Fprintln(h)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
