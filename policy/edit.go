package policy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// EntryYAML is e as it would be written in a policy file's allow list,
// for a person to read in a proposed change.
func EntryYAML(e *Entry) string {
	var b bytes.Buffer
	if e.Host != "" {
		fmt.Fprintf(&b, "  - host: %s\n", e.Host)
	} else {
		fmt.Fprintf(&b, "  - cidr: %s\n", e.Prefix)
	}
	b.WriteString("    ports: " + portList(e.Ports) + "\n")
	if e.Private {
		b.WriteString("    private: true\n")
	}
	return b.String()
}

func portList(ports []uint16) string {
	s := "["
	for i, p := range ports {
		if i > 0 {
			s += ", "
		}
		s += strconv.Itoa(int(p))
	}
	return s + "]"
}

// AddEntry returns the policy file data with e's host (or cidr) allowed
// on e's ports too: the ports are added to the entry already there for
// it, or a new entry is appended to the allow list. Comments and the
// order of the rest are kept. The result is checked as ParseFile checks
// a file; name names the file in its errors.
func AddEntry(name string, data []byte, e *Entry) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a policy (a mapping with 'version' and 'allow')", name)
	}
	root := doc.Content[0]
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "allow" {
			list = root.Content[i+1]
		}
	}
	if list == nil {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "allow"}, &yaml.Node{Kind: yaml.SequenceNode})
		list = root.Content[len(root.Content)-1]
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: 'allow' is not a list", name)
	}
	key, target := "host", e.Host
	if e.Host == "" {
		key, target = "cidr", e.Prefix.String()
	}
	if !mergePorts(list, key, target, e.Ports) {
		item := &yaml.Node{Kind: yaml.MappingNode}
		item.Content = append(item.Content, scalarNode(key), scalarNode(target), scalarNode("ports"), portsNode(e.Ports))
		if e.Private {
			item.Content = append(item.Content, scalarNode("private"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
		}
		list.Content = append(list.Content, item)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if _, err := ParseFile(name, out.Bytes()); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// mergePorts adds ports to the entry of list whose key is target, and
// reports whether there was one.
func mergePorts(list *yaml.Node, key, target string, ports []uint16) bool {
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			continue
		}
		var portsAt = -1
		match := false
		for i := 0; i+1 < len(item.Content); i += 2 {
			switch item.Content[i].Value {
			case key:
				match = item.Content[i+1].Value == target
			case "ports":
				portsAt = i + 1
			}
		}
		if !match {
			continue
		}
		if portsAt < 0 {
			// No ports: the defaults, which stay, with the new ones.
			item.Content = append(item.Content, scalarNode("ports"), portsNode(slices.Concat(DefaultPorts, ports)))
			return true
		}
		have := item.Content[portsAt]
		var all []uint16
		for _, n := range have.Content {
			if p, err := strconv.ParseUint(n.Value, 10, 16); err == nil {
				all = append(all, uint16(p))
			}
		}
		item.Content[portsAt] = portsNode(append(all, ports...))
		return true
	}
	return false
}

func scalarNode(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func portsNode(ports []uint16) *yaml.Node {
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, p := range ports {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(int(p))})
	}
	return n
}

// ErrNoPolicyFile is returned when a change is to be written and the
// policy has no file.
var ErrNoPolicyFile = errors.New("the policy has no file to write to (start sluice with --policy FILE)")
