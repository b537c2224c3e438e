package importer

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
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
		if err == nil && mapKey(root, "network") != nil {
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
		case findKey(root, "allowed_network_hosts") != nil:
			return AllowedHosts, nil
		case mapKey(root, "sandbox") != nil || mapKey(root, "permissions") != nil:
			return Claude, nil
		case mapKey(root, "network") != nil:
			return GHAW, nil
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
	squid := false
	for _, line := range strings.Split(string(data), "\n") {
		line = stripComment(line)
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if fields[0] == "acl" {
			squid = true
			continue
		}
		for _, f := range fields {
			if !listToken.MatchString(f) {
				return "", fmt.Errorf("cannot tell the format (%q is not a host, address or CIDR of a list); give --from, one of %s", printable(f), formatList())
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
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
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
		if c.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: %s: want a list of strings", c.Line, what)
		}
	}
	return n.Content, nil
}

// webFetch is a Claude Code permission rule that lets WebFetch reach a
// domain, which its sandbox allows too.
var webFetch = regexp.MustCompile(`^WebFetch\(domain:([^)]+)\)$`)

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
	if n := path(root, "permissions", "allow"); n != nil && n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			if m := webFetch.FindStringSubmatch(c.Value); m != nil {
				found = true
				im.add(m[1], source{c.Line, c.Value}, "from permissions.allow: WebFetch's domains are the sandbox's too")
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
	lines := strings.Split(string(data), "\n")
	from := 0
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
			for i := from; i < len(lines); i++ {
				if strings.Contains(lines[i], s) {
					line, from = i+1, i
					break
				}
			}
			im.add(s, source{line, s}, "")
		}
	}
	return nil
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
		for k, x := range v {
			if k != key {
				out = findTOMLAll(x, key, out)
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
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.ScalarNode:
		items = []*yaml.Node{n}
	case n.Kind == yaml.MappingNode:
		if a := mapKey(n, "allowed"); a != nil {
			if items, err = im.scalars(a, "network.allowed"); err != nil {
				return err
			}
		}
		if b := mapKey(n, "blocked"); b != nil {
			im.warnAt(source{line: b.Line}, "network.blocked: sluice has no deny entries; what nothing allows stays refused, and a blocked name inside an allowed wildcard is allowed with it")
		}
	default:
		return fmt.Errorf("line %d: network: want defaults or a mapping with an allowed list", n.Line)
	}
	for _, c := range items {
		v := strings.TrimSpace(c.Value)
		at := source{c.Line, v}
		switch {
		case v == "defaults":
			im.warnAt(at, "defaults (gh-aw's basic infrastructure: certificate status, package mirrors of its runner and the like) has no sluice preset: list the hosts the agent needs")
			im.header = append(im.header, fmt.Sprintf("%s:%d: defaults not imported (no sluice preset)", im.name, c.Line))
		case !strings.ContainsAny(v, ".:/") && v != "":
			if p, ok := ecosystems[v]; ok {
				im.presets = append(im.presets, presetUse{name: p, at: at})
			} else {
				im.warnAt(at, "ecosystem %s has no sluice preset (sluice presets lists them): list its hosts", v)
				im.header = append(im.header, fmt.Sprintf("%s:%d: ecosystem %s not imported (no sluice preset)", im.name, c.Line, printable(v)))
			}
		default:
			im.add(v, at, "")
		}
	}
	return nil
}

// readLines reads a Squid list or a plain one: one or more tokens a line,
// # comments, and Squid's acl NAME dstdomain|dst VALUES... lines.
func (im *importer) readLines(data []byte) error {
	for i, raw := range strings.Split(string(data), "\n") {
		line := stripComment(raw)
		if line == "" {
			continue
		}
		at := source{line: i + 1}
		fields := strings.Fields(line)
		if fields[0] == "acl" {
			if len(fields) < 4 {
				im.warnAt(at, "an acl line with no values, left out")
				continue
			}
			switch fields[2] {
			case "dstdomain", "dst":
				fields = fields[3:]
			default:
				im.warnAt(at, "acl type %s is not an allow-list of hosts or addresses: left out", printable(fields[2]))
				continue
			}
		}
		for _, f := range fields {
			at.text = f
			im.add(f, at, "")
		}
	}
	if len(im.wants) == 0 && len(im.errs) == 0 {
		return errors.New("no host, address or CIDR in the list")
	}
	return nil
}

// stripComment removes a # comment and surrounding space.
func stripComment(line string) string {
	if i := strings.Index(line, "#"); i >= 0 {
		line = line[:i]
	}
	return strings.TrimSpace(line)
}
