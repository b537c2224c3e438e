package importer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// squidDirective are the squid.conf lines a Squid file may hold besides
// its values; a plain list has none.
var squidDirective = map[string]bool{"acl": true, "http_access": true}

// squidACL is one acl of a squid.conf: its name as first written, its
// type and values, in order.
type squidACL struct {
	name, kind string
	values     []source
}

// aclSet holds a squid.conf's acls by name, which Squid compares without
// regard to case.
type aclSet map[string]*squidACL

func (s aclSet) get(name string) *squidACL { return s[strings.ToLower(name)] }

// readLines reads a plain list (one token a line) or a Squid file: values
// one a line, or a squid.conf, read as far as its access rules can be
// said exactly in a policy (readAccess).
func (im *importer) readLines(data []byte) error {
	acls := aclSet{}
	var access []source
	lines := joinContinued(string(data))
	conf := false // a squid.conf: its one-word lines are not hosts
	for _, l := range lines {
		if f := strings.Fields(listLine(l.text)); len(f) > 0 && squidDirective[f[0]] {
			conf = true
		}
	}
	for _, l := range lines {
		line := listLine(l.text)
		at := source{line: l.line, text: line}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if im.format == List {
			if len(fields) != 1 {
				im.failAt(at, "one host, host:port, address or CIDR a line (for a Squid file, give --from squid)")
				continue
			}
			im.add(fields[0], at, "")
			continue
		}
		switch fields[0] {
		case "acl":
			if len(fields) < 4 {
				im.failAt(at, "an acl line wants a name, a type and values")
				continue
			}
			// Squid's acl names are not case-sensitive.
			key := strings.ToLower(fields[1])
			a := acls[key]
			if a == nil {
				a = &squidACL{name: fields[1], kind: fields[2]}
				acls[key] = a
			} else if a.kind != fields[2] {
				im.failAt(at, "acl %s is of type %s here and %s before", fields[1], fields[2], a.kind)
				continue
			}
			for _, v := range fields[3:] {
				a.values = append(a.values, source{line: l.line, text: v})
			}
		case "http_access":
			access = append(access, at)
		default:
			if fields[0] == "include" || fields[0] == "ssl_bump" || strings.HasSuffix(fields[0], "_access") {
				// What it refuses (or brings in, to refuse) the import
				// cannot see: leaving it out would allow more than Squid.
				im.failAt(at, "%s may refuse what the http_access lines allow, and a policy cannot say it: import the http_access rules alone", fields[0])
				continue
			}
			if len(fields) != 1 {
				im.warnAt(at, "%s is not an acl or http_access line: left out", fields[0])
				continue
			}
			if conf {
				im.failAt(at, "%q alone on a line of a squid.conf is no directive Squid knows (a continuation gone wrong?); a list of hosts goes in a file of its own", fields[0])
				continue
			}
			im.add(fields[0], at, "")
		}
	}
	if len(access) > 0 {
		im.readAccess(acls, access)
	} else {
		// Without http_access lines Squid refuses everything, and an acl
		// may name what is to be refused as well as what is allowed.
		byLine := func(a, b *squidACL) int { return a.values[0].line - b.values[0].line }
		for _, a := range slices.SortedFunc(maps.Values(acls), byLine) {
			im.failAt(a.values[0], "acl %s: no http_access line says whether it allows or refuses (Squid refuses everything without one): give the http_access lines, or list its hosts alone", a.name)
		}
	}
	if len(im.wants) == 0 && len(im.errs) == 0 {
		return errors.New("no host, address or CIDR is allowed by it")
	}
	return nil
}

// joinContinued splits text into lines, joining those a backslash
// continues as Squid does (parseOneConfigFile): the next line is appended
// as it is, with nothing between, and comment and blank lines in between
// are skipped without ending the continuation. Each joined line has the
// number of its first line.
func joinContinued(text string) []source {
	var out []source
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			if cur.Len() == 0 {
				out = append(out, source{line: i + 1, text: line})
			}
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(rest)
			continue
		}
		cur.WriteString(line)
		out = append(out, source{line: start, text: cur.String()})
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, source{line: start, text: cur.String()})
	}
	return out
}

// readAccess reads a squid.conf's http_access lines, first match wins,
// as far as a policy can say them exactly:
//
//	http_access deny ACL      (any number, before every allow line)
//	http_access deny !ACL     (only ACL may pass: the allow lines after
//	                           it are cut to ACL, or ACL alone for allow all)
//	http_access allow ACL     (one dstdomain or dst acl a line)
//	http_access allow all     (after deny !ACL only)
//	http_access deny all      (last)
//
// A deny line names the dstdomain values that later allow lines lose (an
// allowed name that a denial covers whole is left out; a denied name
// inside an allowed wildcard is warned of). Anything else fails the
// import with its line, rather than allow what the rules would refuse.
func (im *importer) readAccess(acls aclSet, access []source) {
	only := ""    // the ACL of a deny !ACL line
	allowed := "" // a line number of the first allow line, once seen
	var allows []string
	denies := map[string]bool{}
	for i, at := range access {
		fields := strings.Fields(at.text)
		if len(fields) < 3 {
			im.failAt(at, "an http_access line wants allow or deny and an acl")
			return
		}
		verb, names := fields[1], fields[2:]
		if len(names) > 1 {
			im.failAt(at, "http_access with several acls (all must match) cannot be said in a policy; give the hosts it allows as a list instead")
			return
		}
		name := names[0]
		switch {
		case verb == "deny" && name == "all":
			if i != len(access)-1 {
				im.failAt(at, "http_access deny all before other lines: the lines after it never match; remove them or give the hosts as a list")
				return
			}
		case verb == "deny" && strings.HasPrefix(name, "!"):
			if allowed != "" || only != "" {
				im.failAt(at, "http_access deny !ACL after an allow line or another deny !ACL cannot be said in a policy; give the hosts as a list")
				return
			}
			only = name[1:]
			if !im.usableACL(acls, only, at) {
				return
			}
			if k := acls.get(only).kind; k != "dstdomain" && k != "dst" {
				im.failAt(at, "http_access deny !%s: an acl of type %s cannot be said in a policy; give the hosts as a list", only, k)
				return
			}
		case verb == "deny":
			if allowed != "" {
				im.failAt(at, "http_access deny after an allow line (line %s): the names the allow line matched stay allowed there, which a policy cannot say; give the hosts as a list", allowed)
				return
			}
			if !im.usableACL(acls, name, at) {
				return
			}
			a := acls.get(name)
			denies[strings.ToLower(name)] = true
			if a.kind != "dstdomain" {
				im.failAt(at, "a denied acl of type %s cannot be said in a policy: only dstdomain denials are applied", a.kind)
				return
			}
			for _, v := range a.values {
				if base, ok := strings.CutPrefix(v.text, "."); ok {
					im.denied = append(im.denied, want{target: base, at: v}, want{target: "*." + base, at: v})
				} else if !strings.HasPrefix(v.text, "-") {
					im.denied = append(im.denied, want{target: v.text, at: v})
				}
			}
		case verb == "allow" && name == "all":
			if only == "" {
				im.failAt(at, "http_access allow all allows every host: not a policy")
				return
			}
			allows = append(allows, only)
			allowed = fmt.Sprint(at.line)
		case verb == "allow" && !strings.HasPrefix(name, "!"):
			if only != "" && !strings.EqualFold(name, only) {
				im.failAt(at, "http_access allow %s after deny !%s allows what both match, which a policy cannot say; give the hosts as a list", name, only)
				return
			}
			if !im.usableACL(acls, name, at) {
				return
			}
			allows = append(allows, name)
			allowed = fmt.Sprint(at.line)
		default:
			im.failAt(at, "http_access %s %s cannot be said in a policy; give the hosts as a list", verb, name)
			return
		}
	}
	seen := map[string]bool{}
	for _, name := range allows {
		if key := strings.ToLower(name); !seen[key] {
			seen[key] = true
			im.allowACL(acls.get(name).name, acls.get(name))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(acls)) {
		if !seen[key] && key != strings.ToLower(only) && !denies[key] {
			im.warnAt(acls[key].values[0], "acl %s: no http_access allow line names it, so it is not imported", acls[key].name)
		}
	}
}

// usableACL reports whether acl name exists with values a policy can
// take (not read from a file), failing the import where not.
func (im *importer) usableACL(acls aclSet, name string, at source) bool {
	a := acls.get(name)
	if a == nil {
		im.failAt(at, "acl %s is not defined", name)
		return false
	}
	for _, v := range a.values {
		if strings.HasPrefix(v.text, "\"") {
			im.failAt(v, "acl %s reads its values from the file %s: import that file (a list) instead", name, v.text)
			return false
		}
	}
	return true
}

// allowACL imports an allowed acl's values.
func (im *importer) allowACL(name string, a *squidACL) {
	if a.kind != "dstdomain" && a.kind != "dst" {
		im.warnAt(a.values[0], "acl %s of type %s cannot be said in a sluice policy: left out", name, a.kind)
		return
	}
	for _, v := range a.values {
		switch {
		case strings.HasPrefix(v.text, "-"):
			continue // an option, such as -i or -n
		case strings.HasPrefix(v.text, "\""):
			im.warnAt(v, "acl %s reads its values from the file %s: import that file too", name, v.text)
		case a.kind == "dst" && strings.Contains(v.text, "-"):
			im.failAt(v, "%q: an address range; write it as CIDR prefixes", v.text)
		default:
			im.add(v.text, v, "")
		}
	}
}
