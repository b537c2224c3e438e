package policy

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Seen is one thing an agent was seen to reach, or to try to reach: a
// host name (a DNS question, a TLS server name, an HTTP Host) or, for a
// flow without a name, its destination address, with the port when there
// was one. Suggest reads them in the order they happened.
type Seen struct {
	// Name is the host name as the agent sent it; "" for a flow without one.
	Name string
	// Addr is the destination address of a flow without a name.
	Addr netip.Addr
	// Port is the TCP destination port; 0 for a DNS question, which names
	// none.
	Port uint16
	// Proto is the transport of a flow ("tcp", "udp", "icmp"); "" for a
	// DNS question. A policy opens TCP ports only.
	Proto string
	// Answer are the addresses a DNS answer for Name handed out: a flow
	// without a name to one of them is taken as Name's, on its port.
	Answer []netip.Addr
	// Dropped are the addresses removed from an answer for Name, because
	// the entry in force did not allow private ones.
	Dropped []netip.Addr
	// Rule is the policy entry that matched, as a record carries it
	// (Decision.Rule); "" when none did. Its ports count as seen: the
	// flows the firewall lets through on them are not journaled, so they
	// cannot be seen otherwise.
	Rule string
	// Inspected says Name's requests were checked against git or http
	// rules (as a Rule that names such rules says too). Suggest leaves
	// such a name out: an entry without the rules would let through what
	// they refuse.
	Inspected bool
}

// SuggestOptions shape a suggestion.
type SuggestOptions struct {
	// WildcardThreshold: the names under one base become the one entry
	// *.BASE when more than this many distinct names one label under BASE
	// were seen, and a wildcard over BASE is safe (no public suffix, no
	// multi-tenant suffix, no local name, nothing `sluice check` would
	// warn of). 0: no wildcards.
	WildcardThreshold int
	// AllowPrivate gives `private: true` to a name answered with private
	// addresses and lists a private address reached without a name;
	// without it such a name is listed without it, and such an address
	// is only a comment, each saying so. Loopback, link-local, multicast
	// and unspecified addresses are never opened.
	AllowPrivate bool
	// Header are the lines of the comment on top: what the suggestion
	// was made from.
	Header []string
}

// Suggest returns the smallest policy that allows what seen shows, as a
// policy file (version 1, the allow list sorted, comments saying why an
// entry is as it is), and notes for a person: what was left out, and why.
// The same seen and opts always give the same bytes.
func Suggest(seen []Seen, opts SuggestOptions) ([]byte, []string) {
	s := &suggestion{hosts: map[string]*seenHost{}, addrs: map[netip.Addr]*seenAddr{}}
	s.collect(seen)
	s.wildcards(opts.WildcardThreshold)
	return s.write(opts), s.notes
}

// seenHost is what was seen of one name.
type seenHost struct {
	name      string
	ports     map[uint16]bool
	private   map[netip.Addr]bool // private addresses it was answered with
	inspected bool
	under     *wildcard // the wildcard that covers it, if any
}

// seenAddr is what was seen of one address reached without a name.
type seenAddr struct {
	addr  netip.Addr
	ports map[uint16]bool
}

type wildcard struct {
	base  string
	names []string
	ports map[uint16]bool
}

type suggestion struct {
	hosts    map[string]*seenHost
	addrs    map[netip.Addr]*seenAddr
	wilds    []*wildcard
	notes    []string
	answered map[netip.Addr][]answer
	// What a policy cannot allow, for the notes: names that are no host
	// names (quoted) and flows of other protocols ("udp 192.0.2.1:53"),
	// a few of each, and how many more.
	invalid, other         []string
	invalidMore, otherMore int
}

// answer is that the seen at index i handed out an address for name.
type answer struct {
	i    int
	name string
}

func (s *suggestion) host(name string) *seenHost {
	h := s.hosts[name]
	if h == nil {
		h = &seenHost{name: name, ports: map[uint16]bool{}, private: map[netip.Addr]bool{}}
		s.hosts[name] = h
	}
	return h
}

// collect groups what was seen by name and by address. A flow without a
// name goes to the name whose answer last handed its address out before
// it (else the first after it: records of different layers may be stored
// a little out of order), as the gateway's pin table would have it.
func (s *suggestion) collect(seen []Seen) {
	s.answered = map[netip.Addr][]answer{}
	names := make([]string, len(seen))
	for i, x := range seen {
		if x.Name == "" {
			continue
		}
		name, err := CanonicalName(x.Name)
		if err != nil {
			s.invalid, s.invalidMore = example(s.invalid, s.invalidMore, strconv.Quote(x.Name))
			continue
		}
		names[i] = name
		for _, a := range x.Answer {
			a = BareAddr(a)
			s.answered[a] = append(s.answered[a], answer{i, name})
		}
	}
	for i, x := range seen {
		switch {
		case names[i] != "":
			s.addName(names[i], x)
		case x.Name == "" && x.Addr.IsValid():
			s.addFlow(i, x)
		}
	}
	if len(s.invalid) > 0 {
		s.notes = append(s.notes, "left out, not host names: "+examples(s.invalid, s.invalidMore))
	}
	if len(s.other) > 0 {
		s.notes = append(s.notes, "left out, flows a policy cannot open (it opens TCP ports only): "+examples(s.other, s.otherMore))
	}
}

// maxExamples bounds the examples a note gives of one kind.
const maxExamples = 5

// example adds x to the examples, or counts it when there are enough.
func example(xs []string, more int, x string) ([]string, int) {
	switch {
	case slices.Contains(xs, x):
	case len(xs) < maxExamples:
		xs = append(xs, x)
	default:
		more++
	}
	return xs, more
}

func examples(xs []string, more int) string {
	xs = slices.Sorted(slices.Values(xs))
	if more > 0 {
		xs = append(xs, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(xs, ", ")
}

func (s *suggestion) addName(name string, x Seen) {
	h := s.host(name)
	if x.Port != 0 && (x.Proto == "" || x.Proto == "tcp") {
		h.ports[x.Port] = true
	}
	ports, inspected := ruleOf(x.Rule)
	for _, p := range ports {
		h.ports[p] = true
	}
	for _, a := range slices.Concat(x.Answer, x.Dropped) {
		if a = a.WithZone(""); privateAddr(a) {
			h.private[a] = true
		}
	}
	h.inspected = h.inspected || x.Inspected || inspected
}

func (s *suggestion) addFlow(i int, x Seen) {
	a := BareAddr(x.Addr)
	if x.Proto != "tcp" && x.Proto != "" || x.Port == 0 {
		s.other, s.otherMore = example(s.other, s.otherMore, strings.TrimSpace(x.Proto+" "+netip.AddrPortFrom(a, x.Port).String()))
		return
	}
	if name := pinnedName(s.answered[a], i); name != "" {
		s.host(name).ports[x.Port] = true
		return
	}
	sa := s.addrs[a]
	if sa == nil {
		sa = &seenAddr{addr: a, ports: map[uint16]bool{}}
		s.addrs[a] = sa
	}
	sa.ports[x.Port] = true
	ports, _ := ruleOf(x.Rule)
	for _, p := range ports {
		sa.ports[p] = true
	}
}

// pinnedName is the name of the last answer before index i, else of the
// first after it; "" when there is none.
func pinnedName(as []answer, i int) string {
	name := ""
	for _, a := range as {
		if a.i > i {
			if name == "" {
				return a.name
			}
			break
		}
		name = a.name
	}
	return name
}

// rulePorts finds the ports of an entry in the text of Decision.Rule,
// "SOURCE HOST ports 80,443[ private][ max_new_names N][ RULES]".
var rulePortsText = regexp.MustCompile(` ports ([0-9]+(?:,[0-9]+)*)(?: |$)`)

// ruleOf reads the text of Decision.Rule: the entry's ports (none when
// the text names no entry), and whether it has git or http rules.
func ruleOf(rule string) (ports []uint16, inspected bool) {
	m := rulePortsText.FindStringSubmatchIndex(rule)
	if m == nil {
		return nil, false
	}
	for _, f := range strings.Split(rule[m[2]:m[3]], ",") {
		if p, err := checkPort(f); err == nil {
			ports = append(ports, p)
		}
	}
	rest := strings.TrimPrefix(rule[m[3]:], " private")
	return ports, strings.HasPrefix(rest, " git fetch ") || strings.HasPrefix(rest, " http [")
}

// BareAddr is a without an IPv4-mapped prefix or a zone, the form an
// entry names it in and a prefix can contain (netip: no prefix contains
// a zoned address); a zone would also hide "::%eth0" from IsUnspecified
// and its kin.
func BareAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// privateAddr reports whether an entry opens a to a name only with
// private: true: a private, internal or special-purpose address, but not
// a documentation or benchmarking one, which a lab may treat as global
// and a cidr entry may name as it is.
func privateAddr(a netip.Addr) bool {
	return Forbidden(a) && CheckGlobalRange(netip.PrefixFrom(a, a.BitLen())) != nil
}

// neverOpened are addresses no suggestion opens, --allow-private or not:
// the machine itself, its link (a cloud's metadata service), multicast.
func neverOpened(a netip.Addr) bool {
	if v4, ok := EmbeddedIPv4(a); ok {
		a = v4
	}
	return a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.Is4() && a.As4()[0] == 0
}

// parent is name without its first label; "" for a name of one label.
func parent(name string) string {
	_, p, _ := strings.Cut(name, ".")
	return p
}

// plain reports whether a name may be folded into a wildcard: nothing
// about it needs an entry of its own.
func (h *seenHost) plain() bool { return !h.inspected && len(h.private) == 0 }

// wildcards picks the bases with more than threshold plain names one
// label under them, outer bases first, and folds the names under each
// into its wildcard, unless a wildcard there would be unsafe.
func (s *suggestion) wildcards(threshold int) {
	if threshold <= 0 {
		return
	}
	siblings := map[string]int{}
	for _, h := range s.hosts {
		if p := parent(h.name); p != "" && h.plain() {
			siblings[p]++
		}
	}
	hosts := s.sortedHosts()
	bases := slices.Collect(maps.Keys(siblings))
	slices.SortFunc(bases, func(a, b string) int {
		return cmp.Or(cmp.Compare(strings.Count(a, "."), strings.Count(b, ".")), strings.Compare(a, b))
	})
	for _, base := range bases {
		n := siblings[base]
		if n <= threshold || slices.ContainsFunc(s.wilds, func(w *wildcard) bool { return under(base, w.base) }) {
			continue
		}
		if why := unsafeWildcard(base, hosts); why != "" {
			s.notes = append(s.notes, fmt.Sprintf("no wildcard over %s (%d names seen under it): %s; its names are listed one by one", base, n, why))
			continue
		}
		w := &wildcard{base: base, ports: map[uint16]bool{}}
		for _, h := range hosts {
			if h.plain() && under(h.name, base) && h.under == nil {
				h.under = w
				w.names = append(w.names, h.name)
				maps.Copy(w.ports, h.effectivePorts())
			}
		}
		s.wilds = append(s.wilds, w)
	}
}

// under reports whether name is a subdomain of base (not base itself).
func under(name, base string) bool { return strings.HasSuffix(name, "."+base) }

// unsafeWildcard says why *.base, over the names of hosts under it, must
// not be suggested; "" when it may.
func unsafeWildcard(base string, hosts []*seenHost) string {
	if _, err := checkHost("*."+base, false); err != nil {
		if LocalName(base) {
			return base + " is a local name, and a wildcard over it needs private: true"
		}
		return strings.TrimPrefix(err.Error(), strconv.Quote("*."+base)+": ")
	}
	ports := map[uint16]bool{}
	for _, h := range hosts {
		switch {
		case !under(h.name, base):
		case h.inspected:
			return h.name + " under it has git or http rules, which a wildcard would let it skip"
		case h.plain():
			maps.Copy(ports, h.effectivePorts())
		}
	}
	e := Entry{Host: "*." + base, Ports: sortedPorts(ports), Source: "suggestion"}
	p, err := New([]Entry{e})
	if err != nil {
		return err.Error()
	}
	if ws := Lint(p); len(ws) > 0 {
		msg, _, _ := strings.Cut(ws[0].Msg, ";")
		return "sluice check would warn (" + ws[0].Risk + "): " + msg
	}
	return ""
}

// effectivePorts are the ports seen for the name, or the default ports
// when only its DNS question was.
func (h *seenHost) effectivePorts() map[uint16]bool {
	if len(h.ports) > 0 {
		return h.ports
	}
	m := map[uint16]bool{}
	for _, p := range DefaultPorts {
		m[p] = true
	}
	return m
}

func (s *suggestion) sortedHosts() []*seenHost {
	hs := slices.Collect(maps.Values(s.hosts))
	slices.SortFunc(hs, func(a, b *seenHost) int { return strings.Compare(a.name, b.name) })
	return hs
}

// item is one entry of the allow list as written, with its comments.
type item struct {
	key      string // sorts the list
	comments []string
	lines    []string // the entry; commented out when it cannot load as it is
}

func (s *suggestion) write(opts SuggestOptions) []byte {
	var items []item
	for _, w := range s.wilds {
		items = append(items, w.item())
	}
	for _, h := range s.sortedHosts() {
		if h.under == nil {
			items = append(items, s.hostItem(h, opts.AllowPrivate))
		}
	}
	addrs := slices.Collect(maps.Values(s.addrs))
	slices.SortFunc(addrs, func(a, b *seenAddr) int { return a.addr.Compare(b.addr) })
	for _, a := range addrs {
		items = append(items, s.addrItem(a, opts.AllowPrivate))
	}
	slices.SortStableFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })

	var b bytes.Buffer
	for _, l := range opts.Header {
		b.WriteString(strings.TrimRight("# "+PrintableComment(l), " ") + "\n")
	}
	b.WriteString("# It allows what was seen and no more, but that a wildcard allows every name\n")
	b.WriteString("# under it. Review it, then check it: sluice check FILE.\n")
	b.WriteString("version: 1\n")
	live := 0
	for _, it := range items {
		if len(it.lines) > 0 && !strings.HasPrefix(it.lines[0], "#") {
			live++
		}
	}
	if live == 0 {
		b.WriteString("allow: []\n")
	} else {
		b.WriteString("allow:\n")
	}
	for _, it := range items {
		for _, c := range it.comments {
			b.WriteString("  # " + c + "\n")
		}
		for _, l := range it.lines {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.Bytes()
}

func (w *wildcard) item() item {
	it := item{key: w.base + " *", lines: []string{fmt.Sprintf("- host: \"*.%s\"", w.base), "  ports: " + portList(sortedPorts(w.ports))}}
	shown := w.names[:min(len(w.names), 5)]
	c := fmt.Sprintf("covers the %d names seen under %s: %s", len(w.names), w.base, strings.Join(shown, ", "))
	if more := len(w.names) - len(shown); more > 0 {
		c += fmt.Sprintf(" and %d more", more)
	}
	it.comments = append(it.comments, c)
	// max_new_names is a budget a minute; the names were counted over
	// the whole window, so they say nothing of one minute: the default
	// budget stays, and a wider one is the reviewer's to give.
	if len(w.names) > DefaultMaxNewNames {
		it.comments = append(it.comments, fmt.Sprintf("%d names over the window, more than the default budget of %d new names a minute: raise max_new_names only if a minute needs it", len(w.names), DefaultMaxNewNames))
	}
	return it
}

func (s *suggestion) hostItem(h *seenHost, allowPrivate bool) item {
	it := item{key: h.name}
	if h.inspected {
		it.comments = append(it.comments, h.name+": left out; the policy in force checks its requests with git or http")
		it.comments = append(it.comments, "rules, which this suggestion cannot write: copy its entry, rules and all, from there")
		s.notes = append(s.notes, h.name+": left out, its requests were checked by git or http rules; copy its entry from the policy in force")
		return it
	}
	it.lines = []string{"- host: " + YAMLName(h.name), "  ports: " + portList(sortedPorts(h.effectivePorts()))}
	if len(h.private) == 0 {
		return it
	}
	priv := slices.SortedFunc(maps.Keys(h.private), netip.Addr.Compare)
	list := addrList(priv)
	switch {
	case slices.ContainsFunc(priv, neverOpened):
		it.comments = append(it.comments, fmt.Sprintf("answered with %s, which a suggestion never opens: add 'private: true' yourself if you must", list))
		s.notes = append(s.notes, fmt.Sprintf("%s: answered with %s; listed without private: true", h.name, list))
	case allowPrivate:
		it.comments = append(it.comments, "answered with private addresses: "+list)
		it.lines = append(it.lines, "  private: true")
	default:
		it.comments = append(it.comments, fmt.Sprintf("answered with private addresses (%s), which it reaches only with 'private: true'", list))
		s.notes = append(s.notes, fmt.Sprintf("%s: answered with private addresses (%s); listed without private: true (--allow-private adds it)", h.name, list))
	}
	return it
}

func (s *suggestion) addrItem(a *seenAddr, allowPrivate bool) item {
	pfx := netip.PrefixFrom(a.addr, a.addr.BitLen())
	// After the hosts ('~' sorts after every byte of a name), in the
	// order of the addresses, IPv4 first.
	it := item{key: fmt.Sprintf("~%03d %x", a.addr.BitLen(), a.addr.AsSlice()),
		lines: []string{"- cidr: " + pfx.String(), "  ports: " + portList(sortedPorts(a.ports))}}
	it.comments = []string{"reached without a name"}
	var why string
	switch {
	case neverOpened(a.addr):
		why = a.addr.String() + " is an address a suggestion never opens"
	case privateAddr(a.addr) && allowPrivate:
		it.lines = append(it.lines, "  private: true")
	case privateAddr(a.addr):
		why = a.addr.String() + " is a private address: with 'private: true' if the agent must reach it (--allow-private)"
	}
	if why != "" {
		it.comments = []string{"reached without a name; left out, " + why}
		for i := range it.lines {
			it.lines[i] = "# " + it.lines[i]
		}
		s.notes = append(s.notes, "left out, "+why)
	}
	return it
}

// YAMLName writes a canonical name (or wildcard) as a YAML scalar: plain
// when it begins with a letter and has a dot (so that YAML reads no
// number, boolean, null or list item in it), else quoted.
func YAMLName(name string) string {
	if c := name[0]; 'a' <= c && c <= 'z' && strings.Contains(name, ".") {
		return name
	}
	return strconv.Quote(name)
}

func sortedPorts(m map[uint16]bool) []uint16 { return slices.Sorted(maps.Keys(m)) }

func addrList(as []netip.Addr) string {
	s := make([]string, 0, 3)
	for _, a := range as[:min(len(as), 3)] {
		s = append(s, a.String())
	}
	if len(as) > 3 {
		s = append(s, fmt.Sprintf("and %d more", len(as)-3))
	}
	return strings.Join(s, ", ")
}

// PrintableComment keeps s on one comment line, in text YAML reads:
// control, unprintable and invalid UTF-8 become '?'.
func PrintableComment(s string) string {
	return strings.Map(func(r rune) rune {
		if !strconv.IsPrint(r) && r != ' ' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
