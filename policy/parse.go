package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/publicsuffix"
	"gopkg.in/yaml.v3"
)

// Error is one problem in a policy, located by file:line and YAML path.
type Error struct {
	Source string // "agent.yaml:7", "--allow"
	Path   string // "allow[2].ports[0]"; empty when the whole file is meant
	Msg    string
}

func (e Error) Error() string {
	if e.Path == "" {
		return e.Source + ": " + e.Msg
	}
	return e.Source + ": " + e.Path + ": " + e.Msg
}

// Errors is every problem found in one pass. Validation never stops at the
// first one, so a person fixes a file in one round.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// ParseFile parses and validates a policy file. name is used only in
// messages. Unknown keys, wrong types and bad values are all reported, each
// with its line, in one Errors value.
func ParseFile(name string, data []byte) ([]Entry, error) {
	entries, err := ParsePartial(name, data)
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// ParsePartial is ParseFile that also returns, beside the errors, the
// entries that had none, so that a checker can still warn about them.
func ParsePartial(name string, data []byte) ([]Entry, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{Source: name + ":1", Msg: "the file is empty; it needs at least 'version: 1'"}}
		}
		return nil, Errors{yamlError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{Source: fmt.Sprintf("%s:%d", name, extra.Line), Msg: "only one YAML document is allowed"}}
	}
	p := parser{file: name}
	entries := p.document(&doc)
	if len(p.errs) > 0 {
		return entries, p.errs
	}
	return entries, nil
}

// yamlLine finds the line in a yaml.v3 syntax error ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// leadingSpace is the indentation of a line (including a list's "- ").
func leadingSpace(line string) string {
	return line[:len(line)-len(strings.TrimLeft(line, " \t-"))]
}

// yamlError turns a YAML syntax error into one located by file:line, in
// words that say what to write instead where the cause is a common one.
func yamlError(name string, data []byte, err error) Error {
	msg := err.Error()
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return Error{Source: name, Msg: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(data), "\n")
	// yaml.v3 reports some errors on the line after the culprit; a tab
	// anywhere near is almost always the cause.
	for _, n := range []int{line, line - 1, line + 1} {
		if n >= 1 && n <= len(lines) && strings.Contains(leadingSpace(lines[n-1]), "\t") {
			return Error{Source: fmt.Sprintf("%s:%d", name, n),
				Msg: "a tab character: YAML indents with spaces only; replace the tab with spaces"}
		}
	}
	return Error{Source: fmt.Sprintf("%s:%d", name, line), Msg: "not valid YAML: " + m[2]}
}

type parser struct {
	file string
	errs Errors
}

func (p *parser) fail(n *yaml.Node, path, format string, args ...any) {
	p.errs = append(p.errs, Error{Source: p.at(n), Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) at(n *yaml.Node) string { return fmt.Sprintf("%s:%d", p.file, n.Line) }

func (p *parser) document(doc *yaml.Node) []Entry {
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		p.fail(root, "", "the policy must be a mapping with 'version' and 'allow' (or 'include')")
		return nil
	}
	var entries []Entry
	sawVersion := false
	p.mapping(root, "", func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			sawVersion = true
			if v.Kind != yaml.ScalarNode || v.Value != "1" {
				p.fail(v, "version", "unsupported version %q; this sluice reads version 1", v.Value)
			}
		case "allow":
			entries = append(entries, p.allowList(v)...)
		case "include":
			entries = append(entries, p.include(v)...)
		default:
			p.fail(k, key, "unknown key; the policy has 'version', 'include' and 'allow'")
		}
	})
	if !sawVersion {
		p.fail(root, "", "missing 'version: 1'")
	}
	return entries
}

// include reads a list of preset names and returns their entries. A host
// a preset lists may not be listed again, by the file or another preset
// (policy.New refuses it, naming both places): an include is taken whole,
// or its entries are copied from `sluice presets NAME` and changed there.
func (p *parser) include(n *yaml.Node) []Entry {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "include", "want a list of preset names, such as [pypi, npm]; sluice presets lists them")
		return nil
	}
	var entries []Entry
	seen := map[string]bool{}
	for i, item := range n.Content {
		path := fmt.Sprintf("include[%d]", i)
		if item.Kind != yaml.ScalarNode || item.Tag != "!!str" {
			p.fail(item, path, "want a preset name, such as pypi")
			continue
		}
		if seen[item.Value] {
			p.fail(item, path, "preset %s is included twice", item.Value)
			continue
		}
		seen[item.Value] = true
		es, err := presetEntries(item.Value, p.at(item))
		if err != nil {
			p.fail(item, path, "%v", err)
			continue
		}
		entries = append(entries, es...)
	}
	return entries
}

// mapping calls fn for each key of n in order, reporting duplicate keys and
// non-string keys itself.
func (p *parser) mapping(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.fail(k, path, "keys must be plain words")
			continue
		}
		if seen[k.Value] {
			p.fail(k, join(path, k.Value), "key given twice")
			continue
		}
		seen[k.Value] = true
		fn(k.Value, k, v)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *parser) allowList(n *yaml.Node) []Entry {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "allow", "must be a list of entries")
		return nil
	}
	var entries []Entry
	for i, item := range n.Content {
		path := fmt.Sprintf("allow[%d]", i)
		if e, ok := p.entry(item, path); ok {
			entries = append(entries, e)
		}
	}
	return entries
}

func (p *parser) entry(n *yaml.Node, path string) (Entry, bool) {
	e := Entry{Source: p.at(n)}
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "an entry is a mapping with 'host' or 'cidr'")
		return e, false
	}
	before := len(p.errs)
	var hostNode, cidrNode, portsNode, tlsNode, httpNode, budgetNode, gitNode, httpRulesNode, acceptNode *yaml.Node
	p.mapping(n, path, func(key string, k, v *yaml.Node) {
		switch key {
		case "host":
			hostNode = v
		case "cidr":
			cidrNode = v
		case "ports":
			portsNode = v
		case "tls_ports":
			tlsNode = v
		case "http_ports":
			httpNode = v
		case "private":
			if v.Kind != yaml.ScalarNode || (v.Value != "true" && v.Value != "false") {
				p.fail(v, path+".private", "must be true or false")
				return
			}
			e.Private = v.Value == "true"
		case "max_new_names":
			budgetNode = v
		case "git":
			gitNode = v
		case "http":
			httpRulesNode = v
		case "accept":
			acceptNode = v
		default:
			p.fail(k, join(path, key), "unknown key; an entry has host or cidr, ports, tls_ports, http_ports, private, max_new_names, git, http, accept")
		}
	})
	switch {
	case hostNode != nil && cidrNode != nil:
		p.fail(n, path, "give either host or cidr, not both")
	case hostNode != nil:
		if h, err := checkHost(scalar(hostNode), e.Private); err != nil {
			p.fail(hostNode, path+".host", "%v", err)
		} else {
			e.Host = h
		}
	case cidrNode != nil:
		if pfx, err := checkPrefix(scalar(cidrNode), e.Private); err != nil {
			p.fail(cidrNode, path+".cidr", "%v", err)
		} else {
			e.Prefix = pfx
		}
	default:
		p.fail(n, path, "missing host or cidr")
	}
	e.Ports = slices.Clone(DefaultPorts)
	if portsNode != nil {
		e.Ports = p.ports(portsNode, path+".ports")
	} else if cidrNode != nil {
		p.fail(n, path, "a cidr entry must list its ports")
	}
	if tlsNode != nil {
		e.TLSPorts = p.ports(tlsNode, path+".tls_ports")
	}
	if httpNode != nil {
		e.HTTPPorts = p.ports(httpNode, path+".http_ports")
	}
	if (tlsNode != nil || httpNode != nil) && cidrNode != nil {
		p.fail(n, path, "tls_ports and http_ports need a host to check; a cidr entry has none")
	}
	if budgetNode != nil {
		p.nameBudget(&e, budgetNode, path+".max_new_names")
	}
	if acceptNode != nil {
		e.Accept = p.accept(acceptNode, path+".accept")
	}
	p.acceptComments(&e, n, path)
	if gitNode != nil {
		e.Git = p.gitRules(gitNode, path+".git")
	}
	if httpRulesNode != nil {
		e.HTTP = p.httpRules(httpRulesNode, path+".http")
	}
	if e.Inspected() && (e.Host == "" || e.Wildcard()) {
		p.fail(n, path, "git and http rules need one exact host: sluice terminates that host's TLS, and only that host's")
	}
	if e.Inspected() && portsNode != nil {
		for _, port := range e.Ports {
			if port != 80 && port != 443 && !slices.Contains(e.TLSPorts, port) && !slices.Contains(e.HTTPPorts, port) {
				p.fail(portsNode, path+".ports", "port %d: git and http rules are checked on 443, 80 and the entry's tls_ports and http_ports only, so on %d they would pass unchecked; list it in tls_ports (or http_ports)", port, port)
			}
		}
	}
	for _, port := range e.TLSPorts {
		if slices.Contains(e.HTTPPorts, port) {
			p.fail(n, path, "port %d is listed both in tls_ports and in http_ports", port)
		}
	}
	e.Ports = append(e.Ports, e.TLSPorts...)
	e.Ports = append(e.Ports, e.HTTPPorts...)
	slices.Sort(e.Ports)
	e.Ports = slices.Compact(e.Ports)
	return e, len(p.errs) == before
}

// nameBudget reads max_new_names: a whole number from 0 (no budget) to
// MaxMaxNewNames, on a wildcard entry only.
func (p *parser) nameBudget(e *Entry, n *yaml.Node, path string) {
	v, err := strconv.Atoi(scalar(n))
	if err != nil || v < 0 || v > MaxMaxNewNames {
		p.fail(n, path, "must be a whole number of names a minute from 0 (no budget) to %d", MaxMaxNewNames)
		return
	}
	if e.Host != "" && !e.Wildcard() {
		p.fail(n, path, "only a wildcard host has a budget of new names; %s is one name", e.Host)
		return
	}
	if e.Host == "" && e.Prefix.IsValid() {
		p.fail(n, path, "only a wildcard host has a budget of new names; a cidr entry has no names")
		return
	}
	e.MaxNewNames = v
	if v == 0 {
		e.MaxNewNames = NoNameBudget
	}
}

// accept reads an entry's list of acknowledged warnings.
func (p *parser) accept(n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, path, "must be a non-empty list of warnings to accept, such as [%s]", RiskGitPush)
		return nil
	}
	var out []string
	for i, v := range n.Content {
		risk := scalar(v)
		if !slices.Contains(Risks, risk) {
			p.fail(v, fmt.Sprintf("%s[%d]", path, i), "unknown warning %q; one of %s", risk, strings.Join(Risks, ", "))
			continue
		}
		out = append(out, risk)
	}
	return out
}

// acceptComment is the comment form of accept: "# sluice: accept RISK[, RISK]"
// before the entry or at the end of one of its lines.
var acceptComment = regexp.MustCompile(`(?m)^#\s*sluice:\s*accept\s+([a-z0-9, -]+)$`)

// acceptComments adds the warnings that comments on the entry accept.
func (p *parser) acceptComments(e *Entry, n *yaml.Node, path string) {
	nodes := append([]*yaml.Node{n}, n.Content...)
	for _, c := range nodes {
		for _, text := range []string{c.HeadComment, c.LineComment} {
			for _, m := range acceptComment.FindAllStringSubmatch(text, -1) {
				for _, risk := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' }) {
					if !slices.Contains(Risks, risk) {
						p.fail(c, path, "comment accepts unknown warning %q; one of %s", risk, strings.Join(Risks, ", "))
						continue
					}
					if !slices.Contains(e.Accept, risk) {
						e.Accept = append(e.Accept, risk)
					}
				}
			}
		}
	}
}

func scalar(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return "\x00not a scalar"
	}
	return n.Value
}

func (p *parser) ports(n *yaml.Node, path string) []uint16 {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, path, "must be a non-empty list of port numbers, such as [443]")
		return nil
	}
	var ports []uint16
	for i, v := range n.Content {
		port, err := checkPort(scalar(v))
		if err != nil {
			p.fail(v, fmt.Sprintf("%s[%d]", path, i), "%v", err)
			continue
		}
		ports = append(ports, port)
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

func checkPort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// checkHost validates a host pattern written by a person and returns its
// canonical form. A wildcard over a public suffix is refused: anyone could
// register a name under it. A wildcard over a special-use or private-use
// name (*.home.arpa, *.lan, *.internal, *.local) is what a homelab allows,
// and is accepted with private, since such names point into a private
// network; without it the error says so.
func checkHost(s string, private bool) (string, error) {
	if s == "*" || s == "*." {
		return "", errors.New("a bare '*' would allow every name; list the hosts")
	}
	if strings.Contains(s, "://") {
		return "", fmt.Errorf("%q is a URL; write only its host, as in %s", s, urlHost(s))
	}
	if strings.Contains(s, "*") && !strings.HasPrefix(s, "*.") || strings.Count(s, "*") > 1 {
		return "", fmt.Errorf("%q: a wildcard is only allowed as the whole first label, as in *.example.com", s)
	}
	base, wild := strings.CutPrefix(s, "*.")
	canon, err := policyName(base)
	if err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	if !wild {
		return canon, nil
	}
	if LocalName(canon) {
		if !private {
			return "", fmt.Errorf("%q: %s is a special-use name for local networks; add 'private: true' to allow names under it", s, canon)
		}
		return "*." + canon, nil
	}
	if suffix, _ := publicsuffix.PublicSuffix(canon); suffix == canon {
		return "", fmt.Errorf("%q: %s is a public suffix, so this would allow names anyone can register", s, canon)
	}
	return "*." + canon, nil
}

// localSuffixes are special-use and private-use names (RFC 6761, RFC 6762
// appendix G, RFC 8375, ICANN's .internal) that resolve only inside a
// network of one's own.
var localSuffixes = []string{
	"home.arpa", "local", "lan", "internal", "home", "corp", "intranet", "private", "localdomain",
}

// LocalName reports whether name is one of the special-use or private-use
// names of local networks, or under one.
func LocalName(name string) bool {
	for _, s := range localSuffixes {
		if name == s || strings.HasSuffix(name, "."+s) {
			return true
		}
	}
	return false
}

// urlHost is the host of a URL a person gave where a host was wanted, for
// the error's suggestion.
func urlHost(s string) string {
	_, rest, _ := strings.Cut(s, "://")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if rest == "" {
		return "example.com"
	}
	return rest
}

// checkPrefix validates the destination prefix of an entry without DNS.
func checkPrefix(s string, private bool) (netip.Prefix, error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		addr, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix such as 198.51.100.0/24", s)
		}
		pfx = netip.PrefixFrom(addr, addr.BitLen())
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 prefixes in IPv4 form", s)
	}
	if pfx.Masked() != pfx {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, pfx.Masked())
	}
	if pfx.Bits() < 8 {
		return netip.Prefix{}, fmt.Errorf("%q is wider than /8; that is not an allow list", s)
	}
	// A documentation or benchmarking range (labRanges) is special-purpose
	// but points into no one's network: a cidr entry may name it as it is.
	if Forbidden(pfx.Addr()) && !private && CheckGlobalRange(pfx) != nil {
		return netip.Prefix{}, fmt.Errorf("%q is a private or special-purpose range; add 'private: true' if the agent must reach it", s)
	}
	return pfx, nil
}

// ParseAllowFlag parses one --allow value: HOST, HOST:PORTS, CIDR:PORTS or
// [CIDR]:PORTS, where PORTS is one port or several separated by commas. A
// host without ports gets DefaultPorts.
func ParseAllowFlag(s string) (Entry, error) { return ParseAllow(s, false) }

// ParseAllow is ParseAllowFlag, and with private the entry may reach
// private and internal addresses (--allow-private).
func ParseAllow(s string, private bool) (Entry, error) {
	flagName := "--allow"
	if private {
		flagName = "--allow-private"
	}
	e := Entry{Source: flagName + " " + s, Private: private}
	fail := func(format string, args ...any) (Entry, error) {
		return e, Error{Source: e.Source, Msg: fmt.Sprintf(format, args...)}
	}
	if strings.Contains(s, "://") {
		return fail("a URL; give the host (and ports), as in %s %s", flagName, urlHost(s))
	}
	target, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return fail("missing ']'")
		}
		target, portStr = s[1:end], strings.TrimPrefix(s[end+1:], ":")
	} else if i := strings.LastIndex(s, ":"); i >= 0 && strings.Count(s, ":") == 1 {
		target, portStr = s[:i], s[i+1:]
	} else if strings.Count(s, ":") > 1 && !isAddr(s) && !strings.Contains(s, "/") {
		return fail("too many ':'; write HOST:PORT or HOST:PORT,PORT, and an IPv6 address in brackets, as in [2001:db8::1]:443")
	}
	if strings.Contains(target, ",") {
		return fail("one host per value; repeat %s for each host", flagName)
	}
	if strings.HasSuffix(s, ":") && portStr == "" {
		return fail("no port after ':'; write %s or %s:443", strings.TrimSuffix(s, ":"), strings.TrimSuffix(s, ":"))
	}
	if i := strings.Index(portStr, "/"); i >= 0 {
		return fail("%q is a path: sluice allows hosts and ports, not paths; give %s %s:%s (a path rule is an http rule in a policy file)", portStr[i:], flagName, target, portStr[:i])
	}
	if host, path, ok := strings.Cut(target, "/"); ok && !isAddr(host) {
		return fail("%q is a path: sluice allows hosts and ports, not paths; give %s %s (a path rule is an http rule in a policy file)", "/"+path, flagName, host)
	}
	e.Ports = slices.Clone(DefaultPorts)
	if portStr != "" {
		e.Ports = nil
		for _, ps := range strings.Split(portStr, ",") {
			port, err := checkPort(strings.TrimSpace(ps))
			if err != nil {
				if strings.Contains(portStr, ",") {
					return fail("%v; several ports go in one value, as in %s:80,443", err, target)
				}
				return fail("%v", err)
			}
			e.Ports = append(e.Ports, port)
		}
		slices.Sort(e.Ports)
		e.Ports = slices.Compact(e.Ports)
	}
	if strings.Contains(target, "/") || isAddr(target) {
		pfx, err := checkPrefix(target, private)
		if err != nil {
			msg := err.Error()
			if !private {
				msg = strings.Replace(msg, "add 'private: true'", "use --allow-private", 1)
			}
			return fail("%s", msg)
		}
		if portStr == "" {
			if pfx.Addr().Is6() {
				return fail("an address needs a port; an IPv6 address goes in brackets, as in [%s]:443", target)
			}
			return fail("an address needs a port, as in 198.51.100.7:22")
		}
		e.Prefix = pfx
		return e, nil
	}
	host, err := checkHost(target, private)
	if err != nil {
		return fail("%s", strings.Replace(err.Error(), "add 'private: true'", "use --allow-private", 1))
	}
	e.Host = host
	return e, nil
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// CheckHost validates a host pattern ("api.github.com", "*.example.com")
// as a policy entry's host, and returns its canonical form; private is the
// entry's private: true. It refuses what the policy file refuses, in the
// same words.
func CheckHost(s string, private bool) (string, error) { return checkHost(s, private) }

// CheckPrefix validates an address or prefix as a cidr entry's, as the
// policy file does.
func CheckPrefix(s string, private bool) (netip.Prefix, error) { return checkPrefix(s, private) }

// CheckPort reads a port number, 1 to 65535, as a policy file has it.
func CheckPort(s string) (uint16, error) { return checkPort(s) }
