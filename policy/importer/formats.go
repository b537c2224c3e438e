package importer

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"github.com/sluicegw/sluice/policy"
)

// Detect tells the format of data from its content: JSON with sandbox or
// permissions (Claude); YAML, JSON or TOML with allowed_network_hosts;
// YAML (or a Markdown file's front matter) with network: (gh-aw); else a
// list of hosts, a Squid one when it has a .domain or acl line.
func Detect(data []byte) (Format, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	text := bytes.TrimSpace(data)
	if len(text) == 0 {
		return "", errors.New("the input is empty")
	}
	if front, ok := frontMatter(data); ok {
		root, err := parseYAML(front)
		if err == nil && ghawNetwork(mapKey(root, "network")) {
			return GHAW, nil
		}
		if err == nil && findKey(root, "allowed_network_hosts") != nil {
			return AllowedHosts, nil
		}
		return "", errors.New("a Markdown file whose front matter has no network: block; give --from if it is another format")
	}
	if root, err := parseYAML(data); err == nil && root.Kind == yaml.MappingNode {
		switch {
		case mapKey(root, "version") != nil && (mapKey(root, "allow") != nil || mapKey(root, "include") != nil):
			return "", ErrSluicePolicy
		case path(root, "sandbox", "network") != nil:
			return Claude, nil
		case findKey(root, "allowed_network_hosts") != nil:
			return AllowedHosts, nil
		case ghawNetwork(mapKey(root, "network")):
			return GHAW, nil
		case claudePermissions(mapKey(root, "permissions")):
			return Claude, nil
		}
		if text[0] == '{' {
			return "", errors.New("JSON without sandbox.network (Claude Code settings) or allowed_network_hosts")
		}
	}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err == nil && len(doc) > 0 {
		if findTOML(doc, "allowed_network_hosts") != nil {
			return AllowedHosts, nil
		}
		return "", errors.New("TOML without allowed_network_hosts")
	}
	lines := strings.Split(string(data), "\n")
	for _, line := range lines {
		if fields := strings.Fields(listLine(line)); len(fields) > 0 && squidDirective[fields[0]] {
			return Squid, nil // a squid.conf: its other directives are the reader's to name
		}
	}
	squid := false
	for _, line := range lines {
		line = listLine(line)
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) > 1 {
			return "", fmt.Errorf("cannot tell the format (line %q holds several words); give --from, one of %s", policy.PrintableComment(line), FormatList())
		}
		for _, f := range fields {
			if !listToken.MatchString(f) {
				return "", fmt.Errorf("cannot tell the format (%q is not a host, address or CIDR of a list); give --from, one of %s", policy.PrintableComment(f), FormatList())
			}
			if strings.HasPrefix(f, ".") {
				squid = true
			}
		}
	}
	if squid {
		return Squid, nil
	}
	return List, nil
}

// ghawNetwork reports whether n has the shape of gh-aw's network: (the
// word defaults, or a mapping with allowed or blocked), not, say, a
// netplan file's.
func ghawNetwork(n *yaml.Node) bool {
	switch {
	case n == nil:
		return false
	case n.Kind == yaml.ScalarNode:
		return n.Value == "defaults"
	}
	return mapKey(n, "allowed") != nil || mapKey(n, "blocked") != nil
}

// claudePermissions reports whether n has the shape of Claude Code's
// permissions (allow or deny lists), not a GitHub workflow's.
func claudePermissions(n *yaml.Node) bool {
	for _, k := range []string{"allow", "deny"} {
		if l := mapKey(n, k); l != nil && l.Kind == yaml.SequenceNode {
			return true
		}
	}
	return false
}

// listToken is what a line of a host list may hold: a host or .domain
// with an optional port, an address, a prefix, a bracketed IPv6 address
// with its port, or a URL.
var listToken = regexp.MustCompile(`^(\*\.|\.)?[A-Za-z0-9_.-]+(:[0-9,]+)?$|^[0-9A-Fa-f:.]+(/[0-9]+)?(:[0-9,]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9,]+)?$|^[a-z]+://\S+$|^\*$`)

// frontMatter returns a Markdown file's YAML front matter, between a
// first line of --- and the next.
func frontMatter(data []byte) ([]byte, bool) {
	s := string(data)
	if !strings.HasPrefix(s, "---\n") && !strings.HasPrefix(s, "---\r\n") {
		return nil, false
	}
	_, rest, _ := strings.Cut(s, "\n")
	end := strings.Index(rest, "\n---")
	if end < 0 {
		return nil, false
	}
	// Keep the line numbers: the front matter starts on line 2.
	return []byte("\n" + rest[:end+1]), true
}

func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, extra yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("line %d: several YAML documents; import each on its own", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

// mapKey is the value of key in the mapping n, nil if none.
func mapKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// path follows keys down from n.
func path(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		n = mapKey(n, k)
	}
	return n
}

// findKey is the value of the first key named key at any depth, nil if
// none.
func findKey(n *yaml.Node, key string) *yaml.Node {
	all := findKeys(n, key, nil)
	if len(all) == 0 {
		return nil
	}
	return all[0]
}

// findKeys appends the values of every key named key, at any depth.
func findKeys(n *yaml.Node, key string, out []*yaml.Node) []*yaml.Node {
	if n == nil {
		return out
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				out = append(out, n.Content[i+1])
			}
		}
	}
	for _, c := range n.Content {
		out = findKeys(c, key, out)
	}
	return out
}

// scalars reads a sequence of scalars, each with its line; what is not a
// scalar fails.
func (im *importer) scalars(n *yaml.Node, what string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: %s: want a list of strings", n.Line, what)
	}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.Tag != "!!str" {
			return nil, fmt.Errorf("line %d: %s: %q is not a string; want a list of host names", c.Line, what, policy.PrintableComment(c.Value))
		}
	}
	return n.Content, nil
}

// webFetch is a Claude Code permission rule that lets WebFetch reach a
// domain, which its sandbox allows too.
var webFetch = regexp.MustCompile(`^WebFetch\(domain:([^)]+)\)$`)

// webFetchWhole reports whether a permission rule names every WebFetch.
func webFetchWhole(rule string) bool { return rule == "WebFetch" || rule == "WebFetch(*)" }

// readClaude reads Claude Code settings.
func (im *importer) readClaude(data []byte) error {
	root, err := parseYAML(data)
	if err != nil {
		return fmt.Errorf("not JSON: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	found := false
	if n := path(root, "sandbox", "network", "allowedDomains"); n != nil {
		found = true
		items, err := im.scalars(n, "sandbox.network.allowedDomains")
		if err != nil {
			return err
		}
		for _, c := range items {
			im.add(c.Value, source{c.Line, c.Value}, "")
		}
	}
	// A WebFetch denied whole denies every WebFetch(domain:…) allowed.
	var fetchDenied *yaml.Node
	if n := path(root, "permissions", "deny"); n != nil && n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			if m := webFetch.FindStringSubmatch(c.Value); m != nil {
				im.denied = append(im.denied, want{target: m[1], at: source{c.Line, c.Value}})
			} else if webFetchWhole(c.Value) {
				fetchDenied = c
			}
		}
	}
	if n := path(root, "permissions", "allow"); n != nil && n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			if m := webFetch.FindStringSubmatch(c.Value); m != nil && fetchDenied != nil {
				found = true
				im.warnAt(source{c.Line, c.Value}, "%s: not imported, since permissions.deny has %s (line %d)", c.Value, fetchDenied.Value, fetchDenied.Line)
			} else if m != nil {
				found = true
				im.add(m[1], source{c.Line, c.Value}, "from permissions.allow: WebFetch's domains are the sandbox's too")
			} else if webFetchWhole(c.Value) {
				im.warnAt(source{c.Line, c.Value}, "%s lets WebFetch reach every domain: not imported (a policy lists its hosts)", c.Value)
			}
		}
	}
	if n := path(root, "sandbox", "network", "deniedDomains"); n != nil {
		items, err := im.scalars(n, "sandbox.network.deniedDomains")
		if err != nil {
			return err
		}
		for _, c := range items {
			im.denied = append(im.denied, want{target: c.Value, at: source{c.Line, c.Value}})
		}
	}
	if v := path(root, "sandbox", "enabled"); v != nil && v.Value == "false" {
		im.header = append(im.header, fmt.Sprintf("%s:%d: the sandbox is off (sandbox.enabled: false) in this file; its domains are imported all the same", im.name, v.Line))
	}
	for _, k := range []string{"allowUnixSockets", "allowAllUnixSockets", "allowLocalBinding"} {
		if v := path(root, "sandbox", "network", k); v != nil {
			im.warnAt(source{line: v.Line}, "sandbox.network.%s is about the agent's own machine; sluice filters the network only, so it is not imported", k)
		}
	}
	if n := findKey(root, "allowed_network_hosts"); n != nil {
		im.warnAt(source{line: n.Line}, "the file also has allowed_network_hosts, not imported with the Claude settings: import it with --from allowed-hosts")
	}
	if !found {
		return errors.New("no sandbox.network.allowedDomains and no WebFetch(domain:...) rule in permissions.allow")
	}
	return nil
}

// readAllowedHosts reads every allowed_network_hosts list, in YAML, JSON
// or TOML.
func (im *importer) readAllowedHosts(data []byte) error {
	src := data
	if front, ok := frontMatter(data); ok {
		src = front
	}
	if root, err := parseYAML(src); err == nil {
		lists := findKeys(root, "allowed_network_hosts", nil)
		if n := path(root, "sandbox", "network"); n != nil && len(lists) > 0 {
			im.warnAt(source{line: n.Line}, "the file also has Claude Code's sandbox.network, not imported with allowed_network_hosts: import it with --from claude")
		}
		if len(lists) > 0 {
			for _, n := range lists {
				items, err := im.scalars(n, "allowed_network_hosts")
				if err != nil {
					return err
				}
				for _, c := range items {
					im.add(c.Value, source{c.Line, c.Value}, "")
				}
			}
			return nil
		}
	}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		return fmt.Errorf("neither YAML nor TOML with allowed_network_hosts: %v", err)
	}
	lists := findTOMLAll(doc, "allowed_network_hosts", nil)
	if len(lists) == 0 {
		return errors.New("no allowed_network_hosts")
	}
	lines := quotedLines(string(data))
	for _, l := range lists {
		items, ok := l.([]any)
		if !ok {
			return errors.New("allowed_network_hosts: want a list of strings")
		}
		for _, it := range items {
			s, ok := it.(string)
			if !ok {
				return fmt.Errorf("allowed_network_hosts: %v is not a string", it)
			}
			line := 0
			if ls := lines[s]; len(ls) > 0 {
				line, lines[s] = ls[0], ls[1:]
			}
			im.add(s, source{line, s}, "")
		}
	}
	return nil
}

// quotedLines maps each string written in quotes without escapes in a
// TOML file to the lines it is on, in order: where an imported host was
// written.
func quotedLines(text string) map[string][]int {
	out := map[string][]int{}
	for i, line := range strings.Split(text, "\n") {
		// Strings in order, up to a comment outside them.
		for rest := line; ; {
			start := strings.IndexAny(rest, "\"'#")
			if start < 0 || rest[start] == '#' {
				break
			}
			q := rest[start]
			end := strings.IndexByte(rest[start+1:], q)
			if end < 0 {
				break
			}
			v := rest[start+1 : start+1+end]
			if !strings.Contains(v, `\`) {
				out[v] = append(out[v], i+1)
			}
			rest = rest[start+end+2:]
		}
	}
	return out
}

// findTOML is the value of the first key named key at any depth.
func findTOML(doc map[string]any, key string) any {
	all := findTOMLAll(doc, key, nil)
	if len(all) == 0 {
		return nil
	}
	return all[0]
}

func findTOMLAll(v any, key string, out []any) []any {
	switch v := v.(type) {
	case map[string]any:
		if x, ok := v[key]; ok {
			out = append(out, x)
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if k != key {
				out = findTOMLAll(v[k], key, out)
			}
		}
	case []map[string]any:
		for _, x := range v {
			out = findTOMLAll(x, key, out)
		}
	case []any:
		for _, x := range v {
			out = findTOMLAll(x, key, out)
		}
	}
	return out
}

// ecosystems maps GitHub Agentic Workflows' ecosystem names to sluice's
// presets; a name not here has none.
var ecosystems = map[string]string{
	"python":        "pypi",
	"node":          "npm",
	"go":            "go-modules",
	"github":        "github-read",
	"linux-distros": "debian-apt",
}

// readGHAW reads a workflow's network: block.
func (im *importer) readGHAW(data []byte) error {
	src := data
	if front, ok := frontMatter(data); ok {
		src = front
	}
	root, err := parseYAML(src)
	if err != nil {
		return fmt.Errorf("not YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	n := mapKey(root, "network")
	if n == nil {
		return errors.New("no network: block")
	}
	var items, blocked []*yaml.Node
	switch {
	case n.Kind == yaml.ScalarNode:
		items = []*yaml.Node{n}
	case n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "allowed":
				if items, err = im.scalars(v, "network.allowed"); err != nil {
					return err
				}
			case "blocked":
				if blocked, err = im.scalars(v, "network.blocked"); err != nil {
					return err
				}
			default:
				im.warnAt(source{line: k.Line}, "network.%s is not imported: only allowed and blocked say what is reached", policy.PrintableComment(k.Value))
			}
		}
	default:
		return fmt.Errorf("line %d: network: want defaults or a mapping with an allowed list", n.Line)
	}
	// A blocked entry wins over an allowed one and takes its subdomains
	// with it; a blocked ecosystem denies its preset's hosts.
	isBlocked := map[string]bool{}
	for _, c := range blocked {
		v := strings.TrimSpace(c.Value)
		at := source{c.Line, v}
		isBlocked[v] = true
		switch p, eco := ecosystems[v]; {
		case strings.ContainsAny(v, ".:/"):
			base := strings.TrimPrefix(hostOf(v), "*.")
			im.denied = append(im.denied, want{target: base, at: at}, want{target: "*." + base, at: at})
		case eco:
			for _, h := range slices.Sorted(maps.Keys(presetHostsOf(p))) {
				im.denied = append(im.denied, want{target: h, at: at})
			}
		default:
			// What it blocks is not known here, and the allowed list may
			// hold some of it: leaving it out would allow what it blocked.
			im.failAt(at, "blocked %s: neither a domain nor an ecosystem with a sluice preset (%s), so what it blocks cannot be kept out", v, strings.Join(slices.Sorted(maps.Keys(ecosystems)), ", "))
		}
	}
	domains := false
	for _, c := range items {
		v := strings.TrimSpace(c.Value)
		at := source{c.Line, v}
		switch {
		case isBlocked[v] && !strings.ContainsAny(v, ".:/"):
			im.warnAt(at, "%s is allowed and blocked: blocked wins, so it is not imported", v)
		case v == "defaults":
			im.warnAt(at, "defaults (gh-aw's basic infrastructure: certificate status, package mirrors of its runner and the like) is not imported: sluice has no preset for it; list the hosts the agent needs")
		case !strings.ContainsAny(v, ".:/") && v != "":
			if p, ok := ecosystems[v]; ok {
				im.presets = append(im.presets, presetUse{name: p, at: at})
				im.warnAt(at, "ecosystem %s is imported as sluice's preset %s (sluice presets %s lists its hosts), which may list fewer hosts than gh-aw's %s", v, p, p, v)
			} else {
				im.warnAt(at, "%s is not imported: not an ecosystem with a sluice preset (sluice presets lists them), nor a domain; list its hosts", v)
			}
		default:
			domains = true
			im.add(v, at, "")
		}
	}
	if domains {
		im.header = append(im.header, "gh-aw may also match the subdomains of a listed domain; sluice's host entries are exact names: add *.NAME entries where the agent needs subdomains")
	}
	return nil
}

// hostOf is the host of a URL or of host:port, or s.
func hostOf(s string) string {
	if _, rest, ok := strings.Cut(s, "://"); ok {
		s, _ = urlHost(rest)
	}
	if t, _, err := splitPort(s); err == nil {
		return t
	}
	return s
}

// listLine is a line of a list without its comment, space, a YAML list
// item's "- ", and quotes.
func listLine(line string) string {
	line = stripComment(line)
	if rest, ok := strings.CutPrefix(line, "- "); ok {
		line = strings.TrimSpace(rest)
	}
	if len(line) >= 2 && (line[0] == '"' || line[0] == '\'') && line[len(line)-1] == line[0] {
		line = line[1 : len(line)-1]
	}
	return line
}

// stripComment removes a # comment and surrounding space.
func stripComment(line string) string {
	if i := strings.Index(line, "#"); i >= 0 {
		line = line[:i]
	}
	return strings.TrimSpace(line)
}
