package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Modes of an agent in a serve config.
const (
	// ModeEnforce refuses what the policy does not allow (the default).
	ModeEnforce = "enforce"
	// ModeReport lets through what the policy would refuse and journals
	// it as would_refuse, with the reason (Config.Report).
	ModeReport = "report"
)

// NamespacePrefix starts the name of a served agent's network namespace,
// /run/netns/sluice-NAME.
const NamespacePrefix = "sluice-"

// ServeConfig is sluice serve's config file: what its agents share, and
// the agents.
type ServeConfig struct {
	// File is the config's path as given; the paths in it are relative
	// to its directory.
	File string
	// Upstreams are the resolvers allowed names go to; empty: the
	// nameservers of the gateway's /etc/resolv.conf, read at start.
	Upstreams []netip.AddrPort
	// Global are documentation or benchmarking ranges answers may point
	// into as if globally reachable (labs, tests; Config.Global).
	Global []netip.Prefix
	// Journal is the journal's path, journal.DefaultPath when the file
	// names none.
	Journal string
	// UI is the address the web UI and /metrics are served on; "" for
	// none.
	UI string
	// Agents are the agents the file names with a valid name, in its
	// order, each once. An agent whose entry or policy has errors is here
	// too, with Err: serve keeps it as it is.
	Agents []ServeAgent
	// Unnamed counts the agents' entries without a valid name. Such an
	// entry may be a running agent's, misspelt: while there is one, a
	// reload removes no agent.
	Unnamed int
}

// ServeAgent is one agent of a serve config.
type ServeAgent struct {
	Name string
	// Source is the entry's file:line.
	Source string
	// PolicyFile is the policy's path (relative paths taken from the
	// config's directory).
	PolicyFile string
	// Policy is the policy in the file, and Warnings what policy.Lint
	// says of it; Policy is nil when Err is set.
	Policy   *policy.Policy
	Warnings []policy.Warning
	// Interface names an existing interface of the gateway whose
	// clients are the agent (router mode, Config.Interface); "" for a
	// namespace agent.
	Interface string
	// Mode is ModeEnforce or ModeReport.
	Mode string
	// AgentNet and AgentNet6 choose the link's networks (Config.AgentNet);
	// invalid: from the pools.
	AgentNet, AgentNet6 netip.Prefix
	// Err is every problem of the agent's entry and of its policy. An
	// agent with one does not start; a running one keeps what is in
	// force.
	Err error
}

// Namespace is the agent's network namespace: /run/netns/ and this; ""
// for an agent in router mode, which has none.
func (a *ServeAgent) Namespace() string {
	if a.Interface != "" {
		return ""
	}
	return NamespaceFor(a.Name)
}

// IsServeConfig reports whether data is a serve config rather than a
// policy: a mapping with an 'agents' key.
func IsServeConfig(data []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "agents" {
			return true
		}
	}
	return false
}

// LoadServeConfig reads the serve config in file and every policy it
// names. Every problem is reported at once, as policy.Errors, each with
// file:line (the config's, or the policy's own): unknown keys, bad
// values, names or interfaces given twice, agent networks that overlap,
// a policy that does not load. Beside the errors it returns what it
// could read, so that a reload keeps only the agents the errors concern.
// It returns a nil config when the file says nothing trustworthy about
// its agents: unreadable, not YAML, or without a list of agents.
func LoadServeConfig(file string) (*ServeConfig, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, policy.Errors{{Source: file + ":1", Msg: "the file is empty; a serve config needs 'agents'"}}
		}
		return nil, policy.Errors{syntaxError(file, err)}
	}
	var extra yaml.Node
	if dec.Decode(&extra) == nil {
		return nil, policy.Errors{{Source: fmt.Sprintf("%s:%d", file, extra.Line), Msg: "only one YAML document is allowed"}}
	}
	p := serveParser{file: file, dir: filepath.Dir(file)}
	c := p.document(&doc)
	if len(p.errs) > 0 {
		return c, p.errs
	}
	return c, nil
}

// yamlErrorLine finds the line in a yaml.v3 syntax error.
var yamlErrorLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(file string, err error) policy.Error {
	if m := yamlErrorLine.FindStringSubmatch(err.Error()); m != nil {
		return policy.Error{Source: file + ":" + m[1], Msg: "not valid YAML: " + m[2]}
	}
	return policy.Error{Source: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

type serveParser struct {
	file, dir string
	errs      policy.Errors
}

func (p *serveParser) at(n *yaml.Node) string { return fmt.Sprintf("%s:%d", p.file, n.Line) }

// fail records a problem at n and returns it.
func (p *serveParser) fail(n *yaml.Node, path, format string, args ...any) policy.Error {
	e := policy.Error{Source: p.at(n), Path: path, Msg: fmt.Sprintf(format, args...)}
	p.errs = append(p.errs, e)
	return e
}

// mapping calls fn for each key of n in order; duplicate and non-scalar
// keys are its own errors.
func (p *serveParser) mapping(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			p.fail(k, path, "keys must be plain words")
		case seen[k.Value]:
			p.fail(k, dotted(path, k.Value), "key given twice")
		default:
			seen[k.Value] = true
			fn(k.Value, k, v)
		}
	}
}

func dotted(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// str is n's value when n is a scalar, ok false (and the error recorded)
// otherwise.
func (p *serveParser) str(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, path, "must be %s", what)
		return "", false
	}
	return n.Value, true
}

func (p *serveParser) document(doc *yaml.Node) *ServeConfig {
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.fail(root, "", "a serve config is a mapping with 'agents' (and upstream, journal, ui, global_ranges)")
		return nil
	}
	c := &ServeConfig{File: p.file, Journal: journal.DefaultPath}
	var agents *yaml.Node
	p.mapping(root, "", func(key string, k, v *yaml.Node) {
		switch key {
		case "upstream":
			c.Upstreams = p.upstreams(v)
		case "global_ranges":
			c.Global = p.globalRanges(v)
		case "journal":
			if s, ok := p.str(v, key, "the journal's file"); ok {
				if s == "" {
					p.fail(v, key, "must name a file (sluice serve always keeps a journal)")
				} else {
					c.Journal = p.path(s)
				}
			}
		case "ui":
			if s, ok := p.str(v, key, "an address and port, such as 127.0.0.1:8099"); ok {
				if _, err := netip.ParseAddrPort(s); err != nil {
					p.fail(v, key, "%q: want an IP address and a port, such as 127.0.0.1:8099 (never an address the agents reach)", s)
				} else {
					c.UI = s
				}
			}
		case "agents":
			agents = v
		default:
			p.fail(k, key, "unknown key; a serve config has upstream, journal, ui, global_ranges and agents")
		}
	})
	if agents == nil {
		p.fail(root, "", "missing 'agents': the list of agents to serve")
		return nil
	}
	if agents.Kind != yaml.SequenceNode || len(agents.Content) == 0 {
		p.fail(agents, "agents", "must be a list of agents, each with a name and a policy")
		return nil
	}
	var nodes []*yaml.Node // each agent's entry
	for i, n := range agents.Content {
		if a, named := p.agent(n, fmt.Sprintf("agents[%d]", i)); named {
			c.Agents = append(c.Agents, a)
			nodes = append(nodes, n)
		} else {
			c.Unnamed++
		}
	}
	p.crossCheck(c, nodes)
	seen := map[string]bool{}
	c.Agents = slices.DeleteFunc(c.Agents, func(a ServeAgent) bool { // a name given twice: the first, with the error
		dup := seen[a.Name]
		seen[a.Name] = true
		return dup
	})
	return c
}

// path makes a path of the config relative to the config's directory.
func (p *serveParser) path(s string) string {
	if filepath.IsAbs(s) {
		return s
	}
	return filepath.Join(p.dir, s)
}

func (p *serveParser) upstreams(n *yaml.Node) []netip.AddrPort {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, "upstream", "must be a list of resolvers, such as [\"192.0.2.53:53\"] (leave it out for /etc/resolv.conf's)")
		return nil
	}
	var out []netip.AddrPort
	for i, v := range n.Content {
		path := fmt.Sprintf("upstream[%d]", i)
		s, ok := p.str(v, path, "an address, optionally with a port")
		if !ok {
			continue
		}
		ap, err := ParseUpstream(s)
		if err == nil && ap.Port() == 0 {
			err = errors.New("port 0")
		}
		if err != nil {
			p.fail(v, path, "%q: want an IP address, optionally with a port, such as 192.0.2.53:53", s)
			continue
		}
		out = append(out, ap)
	}
	return out
}

func (p *serveParser) globalRanges(n *yaml.Node) []netip.Prefix {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "global_ranges", "must be a list of documentation or benchmarking prefixes, such as [198.18.0.0/15]")
		return nil
	}
	var out []netip.Prefix
	for i, v := range n.Content {
		path := fmt.Sprintf("global_ranges[%d]", i)
		s, ok := p.str(v, path, "a prefix")
		if !ok {
			continue
		}
		pfx, err := netip.ParsePrefix(s)
		if err == nil {
			err = policy.CheckGlobalRange(pfx)
		}
		if err != nil {
			p.fail(v, path, "%v", err)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// agent reads one entry of agents; named says whether it had a valid
// name (only then is it an agent of the config). Every error recorded
// while reading it, its policy's included, is the agent's Err.
func (p *serveParser) agent(n *yaml.Node, path string) (a ServeAgent, named bool) {
	a = ServeAgent{Source: p.at(n), Mode: ModeEnforce}
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "an agent is a mapping with a name and a policy")
		return a, false
	}
	before := len(p.errs)
	var nameNode, policyNode *yaml.Node
	p.mapping(n, path, func(key string, k, v *yaml.Node) {
		kpath := path + "." + key
		switch key {
		case "name":
			nameNode = v
		case "policy":
			policyNode = v
		case "interface":
			if s, ok := p.str(v, kpath, "the name of an interface of the gateway"); ok {
				if !validIfname(s) {
					p.fail(v, kpath, "%q is not an interface name (1 to 15 letters, digits, '.', '_' or '-')", s)
				}
				a.Interface = s
			}
		case "mode":
			if s, ok := p.str(v, kpath, "enforce or report"); ok {
				if s != ModeEnforce && s != ModeReport {
					p.fail(v, kpath, "%q: want enforce or report", s)
				}
				a.Mode = s
			}
		case "agent_net":
			a.AgentNet = p.agentNet(v, kpath, false)
		case "agent_net6":
			a.AgentNet6 = p.agentNet(v, kpath, true)
		default:
			p.fail(k, kpath, "unknown key; an agent has name, policy, interface, mode, agent_net and agent_net6")
		}
	})
	if nameNode == nil {
		p.fail(n, path, "missing name")
	} else if s, ok := p.str(nameNode, path+".name", "a name"); ok {
		if ValidName(s) && s != "." && s != ".." { // it names a namespace too
			a.Name, named = s, true
		} else {
			p.fail(nameNode, path+".name", "%q: want 1 to 32 letters, digits, '.', '_' or '-'", s)
		}
	}
	if a.Interface != "" && (a.AgentNet.IsValid() || a.AgentNet6.IsValid()) {
		p.fail(n, path, "agent_net and agent_net6 are for a namespace agent; a router-mode agent (interface) uses the interface's own addresses")
	}
	if policyNode == nil {
		p.fail(n, path, "missing policy: the agent's policy file")
	} else if s, ok := p.str(policyNode, path+".policy", "the agent's policy file"); ok {
		p.loadPolicy(&a, s, policyNode, path+".policy")
	}
	if len(p.errs) > before {
		a.Err, a.Policy, a.Warnings = slices.Clone(p.errs[before:]), nil, nil
	}
	return a, named
}

// loadPolicy loads the agent's policy file into a, recording its errors:
// the policy's own (file:line in it), or why it could not be read (at
// the config's line).
func (p *serveParser) loadPolicy(a *ServeAgent, file string, n *yaml.Node, path string) {
	if file == "" || file == "-" {
		p.fail(n, path, "must name a policy file")
		return
	}
	a.PolicyFile = p.path(file)
	pol, warnings, err := PolicySource{File: a.PolicyFile}.Load()
	var pe policy.Errors
	switch {
	case err == nil:
		a.Policy, a.Warnings = pol, warnings
	case errors.As(err, &pe):
		p.errs = append(p.errs, pe...)
	case errors.Is(err, os.ErrNotExist):
		p.fail(n, path, "%s: no such file", a.PolicyFile)
	default:
		p.fail(n, path, "%v", err)
	}
}

// agentNet reads agent_net (IPv4) or agent_net6, as Config.Validate
// wants them, in their canonical form.
func (p *serveParser) agentNet(n *yaml.Node, path string, v6 bool) netip.Prefix {
	want := "an IPv4 prefix of /30 or wider, such as 198.19.0.0/30"
	if v6 {
		want = "an IPv6 prefix of /126 or wider, such as fd5c:1ce0:5c1c:1::/64"
	}
	s, ok := p.str(n, path, want)
	if !ok {
		return netip.Prefix{}
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		p.fail(n, path, "%q: want %s", s, want)
	case !v6 && (!pfx.Addr().Is4() || pfx.Bits() > 30), v6 && (!pfx.Addr().Is6() || pfx.Addr().Is4In6() || pfx.Bits() > 126):
		p.fail(n, path, "%s: want %s", s, want)
	case pfx.Masked() != pfx:
		p.fail(n, path, "%s has host bits set; did you mean %s?", s, pfx.Masked())
	default:
		return pfx
	}
	return netip.Prefix{}
}

// crossCheck finds what no entry shows alone: a name or an interface
// given twice, agent networks that overlap. Both agents concerned get
// the error; it is reported once, at the later entry.
func (p *serveParser) crossCheck(c *ServeConfig, nodes []*yaml.Node) {
	mark := func(a *ServeAgent, e policy.Error) {
		errs, _ := a.Err.(policy.Errors)
		a.Err, a.Policy, a.Warnings = append(errs, e), nil, nil
	}
	for j := range c.Agents {
		b := &c.Agents[j]
		for i := range c.Agents[:j] {
			a := &c.Agents[i]
			var e policy.Error
			switch {
			case a.Name == b.Name:
				e = p.fail(nodes[j], "", "agent %s is named twice; first at %s", b.Name, a.Source)
			case a.Interface != "" && a.Interface == b.Interface:
				e = p.fail(nodes[j], "", "agents %s and %s both take interface %s", a.Name, b.Name, b.Interface)
			case a.AgentNet.IsValid() && b.AgentNet.IsValid() && a.AgentNet.Overlaps(b.AgentNet):
				e = p.fail(nodes[j], "", "agent %s's agent_net %s overlaps agent %s's %s (%s)", b.Name, b.AgentNet, a.Name, a.AgentNet, a.Source)
			case a.AgentNet6.IsValid() && b.AgentNet6.IsValid() && a.AgentNet6.Overlaps(b.AgentNet6):
				e = p.fail(nodes[j], "", "agent %s's agent_net6 %s overlaps agent %s's %s (%s)", b.Name, b.AgentNet6, a.Name, a.AgentNet6, a.Source)
			default:
				continue
			}
			mark(a, e)
			mark(b, e)
		}
	}
}

// validIfname reports whether s can name a Linux network interface.
func validIfname(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// String is the config's line for a person: "alpha (serve.yaml:7)".
func (a *ServeAgent) String() string { return a.Name + " (" + a.Source + ")" }
