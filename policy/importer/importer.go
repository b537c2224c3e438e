// Package importer reads an allow-list written for another tool and writes
// the sluice policy that allows the same, saying on each entry what it had
// to make explicit or change, and warning of what it could not express or
// chose to narrow. It reads:
//
//   - Claude Code settings (JSON): sandbox.network.allowedDomains and
//     the WebFetch(domain:...) rules of permissions.allow, with
//     deniedDomains and permissions.deny as denials;
//   - an agent's allowed_network_hosts, a list of host[:port] at any
//     depth of a YAML, JSON or TOML file;
//   - GitHub Agentic Workflows' network: (a workflow's front matter, or
//     the YAML alone): domains, and ecosystem names mapped to presets,
//     with blocked as denials;
//   - Squid dstdomain lists, where .example.com means the apex and every
//     name under it, and squid.conf files as far as a policy can say
//     their access rules exactly (squid.go);
//   - plain lists: one host, host:port, address or CIDR per line.
//
// A denial wins over what it covers whole, as in the tools read; a denied
// name inside an allowed wildcard cannot be kept out, and is warned of.
//
// The package does no I/O: it turns bytes into bytes and messages.
package importer

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicegw/sluice/policy"
)

// Format is a kind of foreign allow-list.
type Format string

// The formats Import reads.
const (
	Claude       Format = "claude"        // Claude Code settings JSON
	AllowedHosts Format = "allowed-hosts" // allowed_network_hosts: [host[:port], ...], YAML or TOML
	GHAW         Format = "gh-aw"         // GitHub Agentic Workflows' network:
	Squid        Format = "squid"         // Squid dstdomain list, or acl lines
	List         Format = "list"          // one host, host:port, address or CIDR per line
)

// Formats lists the formats, as --from names them.
var Formats = []Format{Claude, AllowedHosts, GHAW, Squid, List}

// describe names a format for a person.
var describe = map[Format]string{
	Claude:       "Claude Code settings",
	AllowedHosts: "an allowed_network_hosts list",
	GHAW:         "a GitHub Agentic Workflows network: block",
	Squid:        "a Squid dstdomain list or squid.conf",
	List:         "a list of hosts",
}

// Describe names f for a person ("Claude Code settings").
func Describe(f Format) string { return describe[f] }

// ErrSluicePolicy is Detect's error for a file that is already a sluice
// policy.
var ErrSluicePolicy = errors.New("this is already a sluice policy (it has 'version' and 'allow'); check it with sluice check")

// Options shape an import.
type Options struct {
	// From is the input's format; "" detects it (Detect).
	From Format
	// Name names the input in messages and in the policy's header
	// ("settings.json"); "" is "<stdin>".
	Name string
	// AllowPrivate gives 'private: true' to entries that point into a
	// private network (an RFC 1918 or other private range, a name under
	// .internal, .lan, .home.arpa and the like); without it such an entry
	// is left out (a range, a wildcard) or kept without it (an exact name,
	// whose private answers sluice then refuses), with a warning.
	AllowPrivate bool
}

// Result is an import's outcome.
type Result struct {
	// Format is the input's format, as given or detected.
	Format Format
	// Policy is the sluice policy file, warnings on top as comments.
	Policy []byte
	// Warnings say what could not be expressed or was narrowed or
	// widened, each located in the input ("settings.json:7: ...").
	Warnings []string
}

// Error is an import that refused its input: every entry sluice refuses,
// each located in the input, or why the input could not be read.
type Error struct {
	Msgs []string
}

func (e *Error) Error() string { return strings.Join(e.Msgs, "\n") }

// Import reads data as opts.From (or the format Detect finds) and returns
// the equivalent policy. An entry sluice refuses (a wildcard over a public
// suffix, a bare '*') fails the import: *Error lists each with its line.
func Import(data []byte, opts Options) (Result, error) {
	if opts.Name == "" {
		opts.Name = "<stdin>"
	}
	opts.Name = policy.PrintableComment(opts.Name)
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	f := opts.From
	if f == "" {
		var err error
		if f, err = Detect(data); err != nil {
			return Result{}, &Error{Msgs: []string{opts.Name + ": " + err.Error()}}
		}
	} else if !slices.Contains(Formats, f) {
		return Result{}, fmt.Errorf("unknown format %q; one of %s", f, FormatList())
	}
	im := &importer{name: opts.Name, opts: opts, format: f}
	var err error
	switch f {
	case Claude:
		err = im.readClaude(data)
	case AllowedHosts:
		err = im.readAllowedHosts(data)
	case GHAW:
		err = im.readGHAW(data)
	case Squid, List:
		err = im.readLines(data)
	}
	if err != nil {
		return Result{Format: f}, &Error{Msgs: []string{opts.Name + ": " + err.Error()}}
	}
	im.build()
	if len(im.errs) > 0 {
		return Result{Format: f}, &Error{Msgs: im.errs}
	}
	out, lines := im.write()
	lint, err := check(out)
	if err != nil {
		// A bug of the importer's own: it must write what sluice reads.
		return Result{Format: f}, fmt.Errorf("importer: the policy written does not load: %w", err)
	}
	for _, w := range lint {
		im.warnAt(lines[w.line], "sluice check will warn: %s", w.msg)
	}
	return Result{Format: f, Policy: im.withHeader(out), Warnings: im.warnings}, nil
}

// FormatList is the names of Formats, for messages: "claude, …, list".
func FormatList() string {
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}

// source is where in the input something was written: its line (0 when
// unknown) and its text.
type source struct {
	line int
	text string
}

// want is one thing the input allows: a host pattern, a Squid .domain, an
// address or a prefix, and the port it names ("" for none).
type want struct {
	target, port string
	at           source
	note         string // what the input called it, when not the obvious
}

// importer is one import's state.
type importer struct {
	name   string
	opts   Options
	format Format
	wants  []want
	// presets are the presets the input asked for by name, with where.
	presets []presetUse
	// denied are names the input refuses: Claude's deniedDomains and
	// WebFetch deny rules, gh-aw's blocked, Squid's denied acls.
	denied   []want
	entries  []*entry
	byKey    map[string]*entry
	warnings []string
	errs     []string
	header   []string // lines for the policy's top comment
}

type presetUse struct {
	name string
	at   source
}

// entry is one entry of the policy written.
type entry struct {
	host    string
	prefix  netip.Prefix
	ports   []uint16
	private bool
	skip    string   // why the entry is written as a comment only
	notes   []string // the entry's comment lines
	at      source   // where the input first names it
}

func (im *importer) where(at source) string {
	if at.line > 0 {
		return fmt.Sprintf("%s:%d", im.name, at.line)
	}
	return im.name
}

// warnAt and failAt record a warning or a refusal at at; what they say
// is made printable, since it quotes the input and goes to a terminal.
func (im *importer) warnAt(at source, format string, args ...any) {
	im.warnings = append(im.warnings, im.where(at)+": "+policy.PrintableComment(fmt.Sprintf(format, args...)))
}

func (im *importer) failAt(at source, format string, args ...any) {
	im.errs = append(im.errs, im.where(at)+": "+policy.PrintableComment(fmt.Sprintf(format, args...)))
}

// add records what the input allows at at: s is host[:port], [v6]:port,
// an address or a prefix.
func (im *importer) add(s string, at source, note string) {
	at.text = redact(at.text)
	target, port, err := splitPort(s)
	if err != nil {
		im.failAt(at, "%q: %v", s, err)
		return
	}
	im.wants = append(im.wants, want{target: target, port: port, at: at, note: note})
}

// splitPort splits host:port, [addr]:port and a bare host, address or
// prefix. A URL keeps its scheme for build to narrow.
func splitPort(s string) (target, port string, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", "", errors.New("empty")
	case strings.Contains(s, "://"):
		return s, "", nil
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return "", "", errors.New("missing ']'")
		}
		rest := s[end+1:]
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return "", "", errors.New("want [ADDRESS]:PORT")
		}
		return s[1:end], strings.TrimPrefix(rest, ":"), nil
	case strings.Count(s, ":") == 1:
		t, p, _ := strings.Cut(s, ":")
		if p == "" {
			return "", "", errors.New("no port after ':'")
		}
		return t, p, nil
	}
	return s, "", nil
}

// build turns the wants into entries, merging what names one host, and
// the presets into the include list.
func (im *importer) build() {
	im.byKey = map[string]*entry{}
	presetHosts := map[string]presetEntry{}
	for _, p := range im.presets {
		for h, ports := range presetHostsOf(p.name) {
			presetHosts[h] = presetEntry{preset: p.name, ports: ports}
		}
	}
	for _, w := range im.wants {
		im.buildOne(w, presetHosts)
	}
	im.checkDenied(presetHosts)
}

func (im *importer) buildOne(w want, presetHosts map[string]presetEntry) {
	var notes []string
	target := w.target
	if strings.Contains(target, "://") {
		scheme, rest, _ := strings.Cut(target, "://")
		hostport, path := urlHost(rest)
		shown := redact(target)
		if h, p, err := splitPort(hostport); err == nil {
			target = h
			if w.port == "" {
				w.port = p
			}
		}
		if w.port == "" {
			port, ok := schemePorts[strings.ToLower(scheme)]
			if !ok {
				im.failAt(w.at, "%q: the scheme %s names no port sluice knows; write HOST:PORT", shown, scheme)
				return
			}
			w.port = port
			notes = append(notes, fmt.Sprintf("%s: port %s, as the scheme says", shown, w.port))
		}
		if path != "" && path != "/" {
			notes = append(notes, fmt.Sprintf("%q names a path: sluice allows the host, %s, for every path (an http rule can narrow it)", shown, target))
			im.warnAt(w.at, "%q names a path; the entry allows its host, %s, for every path", shown, target)
		}
	}
	if strings.Contains(target, "%") {
		im.failAt(w.at, "%q: an address with a zone cannot be allowed; give the address without it", target)
		return
	}
	var ports []uint16
	if w.port == "" {
		ports = slices.Clone(policy.DefaultPorts)
	} else {
		for _, ps := range strings.Split(w.port, ",") {
			n, err := policy.CheckPort(strings.TrimSpace(ps))
			if err != nil {
				im.failAt(w.at, "%q: %v", w.at.text, err)
				return
			}
			ports = append(ports, n)
		}
		slices.Sort(ports)
		ports = slices.Compact(ports)
	}
	if a, err := netip.ParseAddr(target); err == nil && a.Is6() && w.port == "" {
		im.warnAt(w.at, "%s is read as an IPv6 address on the default ports; an address with a port is written in brackets, as in [2001:db8::1]:443", target)
	}
	// A Squid .domain is the domain and every name under it; elsewhere a
	// leading dot has no agreed meaning.
	if base, ok := strings.CutPrefix(target, "."); ok {
		if im.format != Squid && im.format != List {
			im.failAt(w.at, "%q: a leading dot; write %s for the name, and *.%s for the names under it", target, base, base)
			return
		}
		if base != "" && !strings.HasPrefix(base, ".") {
			notes = append(notes, fmt.Sprintf("%q means %s and every name under it: two entries, %s and *.%s", "."+base, base, base, base))
			im.buildTarget(w, base, ports, notes, presetHosts)
			im.buildTarget(w, "*."+base, ports, notes, presetHosts)
			return
		}
	}
	im.buildTarget(w, target, ports, notes, presetHosts)
}

// schemePorts are the ports of the URL schemes an allow-list may use.
var schemePorts = map[string]string{
	"https": "443", "http": "80", "wss": "443", "ws": "80",
	"ssh": "22", "sftp": "22", "git": "9418", "ftp": "21",
}

// redact removes a URL's user and password from text shown back.
func redact(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		rest = "…@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

// buildTarget makes or extends the entry for one host pattern, address or
// prefix.
func (im *importer) buildTarget(w want, target string, ports []uint16, notes []string, presetHosts map[string]presetEntry) {
	target = strings.TrimSuffix(strings.ToLower(target), ".")
	if w.port == "" {
		what := "a name"
		if isPrefix(target) {
			what = "an address"
		}
		notes = append(notes, fmt.Sprintf("%s with no port: sluice's default ports, %s", what, strings.ReplaceAll(portList(policy.DefaultPorts), ", ", " and ")))
	}
	e := &entry{ports: ports}
	// privateOnly: what sluice takes only with private: true, which
	// --allow-private gives; without it the entry is left out.
	privateOnly := func(what, shown string) {
		if im.opts.AllowPrivate {
			e.private = true
			notes = append(notes, what+": private: true (--allow-private)")
			return
		}
		e.skip = what + "; import with --allow-private to allow it"
		im.warnAt(w.at, "%s is %s: left out; import with --allow-private to allow it", shown, what)
	}
	if isPrefix(target) {
		pfx, err := policy.CheckPrefix(target, false)
		if err != nil {
			if pfx, err = policy.CheckPrefix(target, true); err != nil {
				im.failAt(w.at, "%v", err)
				return
			}
			privateOnly("a private range", pfx.String())
		}
		e.prefix = pfx
	} else {
		host, err := policy.CheckHost(target, false)
		if err != nil {
			if host, err = policy.CheckHost(target, true); err != nil {
				im.failAt(w.at, "%v", err)
				return
			}
			privateOnly("a wildcard over local names", host)
		} else if policy.LocalName(strings.TrimPrefix(host, "*.")) {
			if im.opts.AllowPrivate {
				e.private = true
				notes = append(notes, "a local name: private: true (--allow-private)")
			} else {
				notes = append(notes, "a local name without private: true: its private addresses are refused (--allow-private allows them)")
				im.warnAt(w.at, "%s is a local name: kept without private: true, so answers with private addresses are refused; import with --allow-private to allow them", host)
			}
		}
		if host != target && !strings.HasPrefix(target, "xn--") && !strings.Contains(target, ".xn--") {
			notes = append(notes, fmt.Sprintf("written %q", target))
		}
		e.host = host
		if p, ok := presetHosts[host]; ok {
			var lost []uint16
			for _, port := range ports {
				if !slices.Contains(p.ports, port) {
					lost = append(lost, port)
				}
			}
			if len(lost) > 0 {
				im.warnAt(w.at, "%s is in the preset %s, which the input includes, on ports %s: a host is listed once, so its port %s is not imported", host, p.preset, portList(p.ports), portList(lost))
			} else {
				im.warnAt(w.at, "%s is in the preset %s, which the input includes: listed once, by the preset", host, p.preset)
			}
			return
		}
	}
	if strings.HasPrefix(e.host, "*.") && e.skip == "" {
		notes = append(notes, fmt.Sprintf("a wildcard: at most %d names under it that the agent has not asked lately, a minute (max_new_names), since names themselves can carry data out", policy.DefaultMaxNewNames))
	}
	for _, port := range ports {
		if port != 80 && port != 443 && e.host != "" {
			notes = append(notes, fmt.Sprintf("port %d is opened by address: if it carries TLS, list it in tls_ports too, to have its server name checked", port))
		}
	}
	if w.note != "" {
		notes = append([]string{w.note}, notes...)
	}
	e.notes = append([]string{fmt.Sprintf("%s: %s", im.where(w.at), inputText(w.at.text))}, notes...)
	e.at = w.at
	key := e.host + "|" + e.prefix.String()
	if old, ok := im.byKey[key]; ok {
		old.ports = union(old.ports, e.ports)
		old.private = old.private || e.private
		if old.skip != "" && e.skip == "" {
			old.skip = ""
		}
		old.notes = append(old.notes, e.notes...)
		return
	}
	im.byKey[key] = e
	im.entries = append(im.entries, e)
}

// checkDenied applies the names the input denies, where the input's tool
// lets a denial win over an allowance: an allowed name that a denial
// covers whole is left out; a denied name inside an allowed wildcard
// cannot be kept out (sluice has no deny entries), so the wildcard stays
// and a warning says so.
func (im *importer) checkDenied(presetHosts map[string]presetEntry) {
	// under maps a name to the live host entries at it or under it;
	// exact and wild the live entries by name and by wildcard base.
	under := map[string][]*entry{}
	exact, wild := map[string]*entry{}, map[string]*entry{}
	for _, e := range im.entries {
		if e.host == "" || e.skip != "" {
			continue
		}
		base, isWild := strings.CutPrefix(e.host, "*.")
		if isWild {
			wild[base] = e
		} else {
			exact[base] = e
		}
		for s := base; ; {
			under[s] = append(under[s], e)
			_, rest, ok := strings.Cut(s, ".")
			if !ok {
				break
			}
			s = rest
		}
	}
	// wildcardAbove lists the live wildcard entries *.A with name
	// strictly under A.
	wildcardAbove := func(name string) []*entry {
		var out []*entry
		for s := name; ; {
			_, rest, ok := strings.Cut(s, ".")
			if !ok {
				return out
			}
			s = rest
			if e := wild[s]; e != nil && e.skip == "" {
				out = append(out, e)
			}
		}
	}
	// Two passes: first what denials cover whole (left out), then the
	// denied names inside wildcards that are still in the policy.
	type denial struct {
		d        want
		name     string
		affected bool
	}
	var ds []*denial
	for _, d := range im.denied {
		if name, ok := im.deniedName(d); ok {
			ds = append(ds, &denial{d: d, name: name})
		}
	}
	for _, x := range ds {
		name := x.name
		base, wild := strings.CutPrefix(name, "*.")
		for _, h := range slices.Sorted(maps.Keys(presetHosts)) {
			p := presetHosts[h]
			hBase, hWild := strings.CutPrefix(h, "*.")
			inside := h == name || wild && (hBase != base || hWild) && (hBase == base || strings.HasSuffix(hBase, "."+base))
			above := hWild && (base == hBase && wild || strings.HasSuffix(base, "."+hBase))
			if inside || above {
				x.affected = true
				im.warnAt(x.d.at, "%s is denied, but the preset %s allows %s, and sluice cannot take a host out of a preset: list the preset's other hosts instead of including it", name, p.preset, h)
			}
		}
		covered := under[base]
		if !wild {
			covered = nil
			if e := exact[name]; e != nil {
				covered = []*entry{e}
			}
		}
		for _, e := range covered {
			if e.skip != "" {
				continue
			}
			eBase, eWild := strings.CutPrefix(e.host, "*.")
			// A denial covers e whole: the same name, or, for a denied
			// wildcard, a name or wildcard strictly under its base (or
			// the same wildcard).
			whole := e.host == name || wild && (eBase != base || eWild)
			if !whole {
				continue
			}
			x.affected = true
			e.skip = "denied by the input too: " + policy.PrintableComment(name) + " (the denial wins)"
			im.warnAt(x.d.at, "%s is allowed and denied by %s: the denial wins, so the entry is left out", e.host, policy.PrintableComment(name))
		}
	}
	for _, x := range ds {
		name := x.name
		for _, e := range wildcardAbove(strings.TrimPrefix(name, "*.")) {
			x.affected = true
			im.warnAt(x.d.at, "denied %s is inside %s, which the policy allows whole: sluice has no deny entries; list the names the agent needs instead of %s", name, e.host, e.host)
			e.notes = append(e.notes, fmt.Sprintf("the input denied %s inside it; sluice cannot (see the warnings)", policy.PrintableComment(name)))
		}
		if !x.affected {
			im.header = append(im.header, fmt.Sprintf("%s: denied %s: nothing allows it, so it stays refused", im.where(x.d.at), policy.PrintableComment(name)))
		}
	}
}

// deniedName reads a denial as an allowed name is read (a URL's or a
// host:port's host, canonical, IDN as punycode); one it cannot read fails
// the import, since what it denied might otherwise be allowed.
func (im *importer) deniedName(d want) (string, bool) {
	target, _, err := splitPort(d.target)
	if err == nil && strings.Contains(target, "://") {
		_, rest, _ := strings.Cut(target, "://")
		target, _ = urlHost(rest)
		target, _, err = splitPort(target)
	}
	if err == nil {
		target = strings.TrimSuffix(strings.ToLower(target), ".")
		switch {
		case isPrefix(target):
			err = errors.New("an address: only names can be denied here")
		default:
			var canon string
			if canon, err = policy.CheckHost(target, true); err == nil {
				target = canon
			} else if base, wild := strings.CutPrefix(target, "*."); wild {
				// A denial wider than any allowance may be (*.com) still
				// denies what is under it.
				if canon, err = policy.CanonicalName(base); err == nil {
					target = "*." + canon
				}
			}
		}
	}
	if err != nil {
		im.failAt(d.at, "the denial %q cannot be applied (%v), so what it denies might be allowed: make it a name or *.NAME", d.target, err)
		return "", false
	}
	return target, true
}

// write renders the policy without its header, and says which input line
// each entry's first line comes from.
func (im *importer) write() ([]byte, map[int]source) {
	var b bytes.Buffer
	lines := map[int]source{}
	n := 0 // lines written
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format+"\n", args...)
		n++
	}
	line("version: 1")
	if len(im.presets) > 0 {
		var names, from []string
		for _, p := range im.presets {
			if !slices.Contains(names, p.name) {
				names = append(names, p.name)
			}
			from = append(from, fmt.Sprintf("%s (%s)", policy.PrintableComment(p.at.text), im.where(p.at)))
		}
		line("# presets for %s", strings.Join(from, ", "))
		line("include: [%s]", strings.Join(names, ", "))
	}
	live := 0
	for _, e := range im.entries {
		if e.skip == "" {
			live++
		}
	}
	if live == 0 {
		line("allow: []")
	} else {
		line("allow:")
	}
	for _, e := range im.entries {
		for _, note := range e.notes {
			line("  # %s", policy.PrintableComment(note))
		}
		prefix := "  "
		if e.skip != "" {
			line("  # left out, %s:", e.skip)
			prefix = "  # "
		}
		lines[n+1] = e.at
		if e.host != "" {
			line("%s- host: %s", prefix, policy.YAMLName(e.host))
		} else {
			line("%s- cidr: %s", prefix, e.prefix)
		}
		line("%s  ports: [%s]", prefix, portList(e.ports))
		if e.private {
			line("%s  private: true", prefix)
		}
	}
	return b.Bytes(), lines
}

// withHeader puts the header comment, with the warnings, above out.
func (im *importer) withHeader(out []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Imported by sluice policy import from %s (%s).\n", policy.PrintableComment(im.name), describe[im.format])
	b.WriteString("# Review it, then check it with sluice check.\n")
	if len(im.warnings) > 0 {
		b.WriteString("#\n# Warnings:\n")
		for _, w := range im.warnings {
			fmt.Fprintf(&b, "#   %s\n", policy.PrintableComment(w))
		}
	}
	if len(im.header) > 0 {
		b.WriteString("#\n")
		for _, h := range im.header {
			fmt.Fprintf(&b, "# %s\n", policy.PrintableComment(h))
		}
	}
	b.Write(out)
	return b.Bytes()
}

// check loads out as sluice check does, and returns what sluice check
// would warn of it, each with its line in out.
func check(out []byte) ([]lintWarning, error) {
	entries, err := policy.ParseFile("import", out)
	if err != nil {
		return nil, err
	}
	p, err := policy.New(entries)
	if err != nil {
		return nil, err
	}
	var ws []lintWarning
	for _, w := range policy.Lint(p) {
		_, line, _ := strings.Cut(w.Source, ":")
		n, _ := strconv.Atoi(line)
		ws = append(ws, lintWarning{n, w.Msg})
	}
	return ws, nil
}

// lintWarning is a warning of sluice check, with its line in out.
type lintWarning struct {
	line int
	msg  string
}

// presetEntry is a host of an included preset: which, and its ports.
type presetEntry struct {
	preset string
	ports  []uint16
}

// presetHostsOf maps the hosts of preset name to their ports.
// The importer names only presets sluice has (TestEcosystemPresets):
// one missing or broken is a fault of the build, not of the input, and
// would leave a blocked ecosystem's hosts allowed.
func presetHostsOf(name string) map[string][]uint16 {
	p, ok := policy.LookupPreset(name)
	if !ok {
		panic("importer: no preset " + name)
	}
	entries, err := policy.ParseFile(name+".yaml", p.Data)
	if err != nil {
		panic("importer: preset " + name + ": " + err.Error())
	}
	hosts := map[string][]uint16{}
	for _, e := range entries {
		if e.Host != "" {
			hosts[e.Host] = e.Ports
		}
	}
	return hosts
}

func isPrefix(s string) bool {
	if strings.Contains(s, "/") {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// urlHost splits what follows a URL's scheme into its host (and port),
// without user information, and the rest (path, query, fragment).
func urlHost(rest string) (host, path string) {
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest, path = rest[:i], rest[i:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	return rest, path
}

func union(a, b []uint16) []uint16 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

// inputText is a text of the input for a comment: printable, and cut
// when long.
func inputText(s string) string {
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return policy.PrintableComment(s)
}
