package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// GitRules make sluice terminate TLS for an entry's host and check every
// git request on it: which repositories may be fetched and pushed, and
// which refs a push may write.
type GitRules struct {
	// Fetch and Push are owner/repo patterns ('*' matches within one
	// part), compared in lower case; "*" alone is every repository.
	Fetch, Push []string
	// PushRefs are the refs a push may create or update (patterns such as
	// "refs/heads/agent/*"); none means any.
	PushRefs []string
	// DeleteRefs lets a push delete refs it may write; Force lets it
	// move them to commits that do not descend from the old ones.
	DeleteRefs, Force bool
}

// HTTPRule lets requests with one of Methods to a path matching one of
// Paths through on a host whose requests are checked.
type HTTPRule struct {
	Methods []string
	Paths   []string
}

// Inspected reports whether the entry's requests are checked one by one
// (its host has git or http rules), which means terminating its TLS.
func (e *Entry) Inspected() bool { return e.Git != nil || len(e.HTTP) > 0 }

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// gitRules reads an entry's git: mapping.
func (p *parser) gitRules(n *yaml.Node, path string) *GitRules {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping with fetch, push, push_refs, delete_refs, force")
		return nil
	}
	g := &GitRules{}
	p.mapping(n, path, func(key string, k, v *yaml.Node) {
		switch key {
		case "fetch":
			g.Fetch = p.patterns(v, join(path, key), checkRepoPattern)
		case "push":
			g.Push = p.patterns(v, join(path, key), checkRepoPattern)
		case "push_refs":
			g.PushRefs = p.patterns(v, join(path, key), checkRefPattern)
		case "delete_refs":
			g.DeleteRefs = p.boolean(v, join(path, key))
		case "force":
			g.Force = p.boolean(v, join(path, key))
		default:
			p.fail(k, join(path, key), "unknown key; git rules have fetch, push, push_refs, delete_refs, force")
		}
	})
	return g
}

// httpRules reads an entry's http: list.
func (p *parser) httpRules(n *yaml.Node, path string) []HTTPRule {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, path, "must be a non-empty list of rules, each with methods and paths")
		return nil
	}
	var out []HTTPRule
	for i, item := range n.Content {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		if item.Kind != yaml.MappingNode {
			p.fail(item, ipath, "a rule is a mapping with methods and paths")
			continue
		}
		var r HTTPRule
		p.mapping(item, ipath, func(key string, k, v *yaml.Node) {
			switch key {
			case "methods":
				r.Methods = p.patterns(v, join(ipath, key), checkMethod)
			case "paths":
				r.Paths = p.patterns(v, join(ipath, key), checkPathPattern)
			default:
				p.fail(k, join(ipath, key), "unknown key; an http rule has methods and paths")
			}
		})
		if len(r.Methods) == 0 || len(r.Paths) == 0 {
			p.fail(item, ipath, "an http rule needs methods and paths")
			continue
		}
		out = append(out, r)
	}
	return out
}

// patterns reads a non-empty list of strings, each checked by check.
func (p *parser) patterns(n *yaml.Node, path string, check func(string) (string, error)) []string {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, path, "must be a non-empty list")
		return nil
	}
	var out []string
	for i, item := range n.Content {
		v, err := check(scalar(item))
		if err != nil {
			p.fail(item, fmt.Sprintf("%s[%d]", path, i), "%v", err)
			continue
		}
		out = append(out, v)
	}
	return out
}

func (p *parser) boolean(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode || (n.Value != "true" && n.Value != "false") {
		p.fail(n, path, "must be true or false")
		return false
	}
	return n.Value == "true"
}

// checkRepoPattern accepts "*" or "owner/repo", each part a name or a
// pattern, and returns it in lower case without a ".git" suffix.
func checkRepoPattern(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	s = strings.TrimSuffix(strings.ToLower(s), ".git")
	owner, repo, ok := strings.Cut(s, "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
		return "", fmt.Errorf("%q: want owner/repo, such as acme/tools or acme/*", s)
	}
	for _, part := range []string{owner, repo} {
		if _, err := path.Match(part, ""); err != nil || strings.ContainsAny(part, "[]\\?") {
			return "", fmt.Errorf("%q: only '*' may stand for part of a name", s)
		}
		if strings.Trim(part, "*") != "" && !validPart(strings.ReplaceAll(part, "*", "")) {
			return "", fmt.Errorf("%q: letters, digits, '-', '_' and '.' only", s)
		}
	}
	return s, nil
}

func validPart(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// checkRefPattern accepts a full ref name under refs/, '*' for a part of
// one component.
func checkRefPattern(s string) (string, error) {
	if !strings.HasPrefix(s, "refs/") || strings.Contains(s, "..") || strings.Contains(s, "//") || strings.ContainsAny(s, " ~^:?[\\") {
		return "", fmt.Errorf("%q: want a ref name such as refs/heads/agent/*", s)
	}
	if _, err := path.Match(s, ""); err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	return s, nil
}

func checkMethod(s string) (string, error) {
	if !slices.Contains(httpMethods, s) {
		return "", fmt.Errorf("method %q: want one of %v", s, httpMethods)
	}
	return s, nil
}

// checkPathPattern accepts an absolute path, '*' for a part of one
// segment.
func checkPathPattern(s string) (string, error) {
	if !strings.HasPrefix(s, "/") || strings.Contains(s, "..") || strings.Contains(s, "//") || strings.ContainsAny(s, "?#;\\%[") {
		return "", fmt.Errorf("%q: want an absolute path such as /repos/acme/*", s)
	}
	if _, err := path.Match(s, ""); err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	return s, nil
}

// MatchRepo reports whether owner/repo (lower case) is one of patterns;
// "*" alone is every repository.
func MatchRepo(patterns []string, repo string) bool {
	return slices.Contains(patterns, "*") || matchAny(patterns, repo)
}

// MatchRef reports whether ref is one of patterns; no patterns match all.
func MatchRef(patterns []string, ref string) bool {
	return len(patterns) == 0 || matchAny(patterns, ref)
}

func matchAny(patterns []string, s string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { ok, _ := path.Match(p, s); return ok })
}

// rulesString is the rules of e, for its String and its hash.
func (e *Entry) rulesString() string {
	var b strings.Builder
	if g := e.Git; g != nil {
		fmt.Fprintf(&b, " git fetch %v push %v", g.Fetch, g.Push)
		if len(g.PushRefs) > 0 {
			fmt.Fprintf(&b, " push_refs %v", g.PushRefs)
		}
		if g.DeleteRefs {
			b.WriteString(" delete_refs")
		}
		if g.Force {
			b.WriteString(" force")
		}
	}
	for _, r := range e.HTTP {
		fmt.Fprintf(&b, " http %v %v", r.Methods, r.Paths)
	}
	return b.String()
}
