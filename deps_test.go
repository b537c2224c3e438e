package sluice_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sluicegw/sluice"

// imports is DESIGN.md's package table, default-deny: every package of
// the module is listed with the module packages and the outside modules
// it may import directly (a trailing "/" allows a path's subpackages).
// A package missing here fails the test, so a new package is a decision
// made on purpose. The standard library is allowed, except where
// forbiddenStd says otherwise.
var imports = map[string][]string{
	"":        {},
	"policy":  {"gopkg.in/yaml.v3", "golang.org/x/net/idna", "golang.org/x/net/publicsuffix"},
	"journal": {"modernc.org/sqlite"},
	// Allow-lists of other tools read into policies: pure, as policy is.
	"policy/importer": {"policy", "gopkg.in/yaml.v3", "github.com/BurntSushi/toml"},
	// Raw recvmmsg/sendmmsg (mmsg_linux.go).
	"dnsfilter": {"policy", "journal",
		"github.com/miekg/dns", "golang.org/x/sys/unix"},
	"firewall": {"policy", "journal",
		"github.com/google/nftables", "github.com/florianl/go-nflog/", "github.com/mdlayher/netlink",
		"github.com/ti-mo/conntrack", "golang.org/x/sys/"},
	"tlsinspect": {"policy", "journal", "golang.org/x/sys/", "golang.org/x/crypto/cryptobyte", "tlsinspect/mitm"},
	// Git's smart-HTTP protocol read as a firewall must: pure.
	"tlsinspect/gitsmart": {},
	// TLS interception for hosts with rules, and its constrained CA.
	"tlsinspect/mitm": {"tlsinspect/gitsmart", "policy", "journal", "github.com/elazarl/goproxy"},
	"sandbox": {"policy", "journal",
		"github.com/vishvananda/", "golang.org/x/sys/"},
	// The engine; with sluice serve's config file (YAML, as policies).
	"gateway": {"policy", "policy/importer", "journal", "dnsfilter", "firewall", "tlsinspect", "sandbox", "metrics",
		"github.com/vishvananda/", "golang.org/x/sys/", "gopkg.in/yaml.v3"},
	// What sluice serve tells Prometheus, counted from journal events.
	"metrics": {"journal", "github.com/prometheus/client_golang/"},
	// The review UI reads the journal and steers the policy through
	// interfaces that gateway satisfies.
	"webui": {"journal", "policy"},
	// The binary: flags into a validated config, then the engine. No
	// netlink, no system calls of its own.
	"cmd/sluice": {"policy", "journal", "dnsfilter", "tlsinspect", "sandbox", "gateway", "webui", "policy/importer"},
	// Tests' tools and load generators may use anything but cmd.
	"testing/nstest":         {"*"},
	"testing/srcscan":        {},
	"testing/fakenet":        {"*"},
	"testing/e2e":            {"*"},
	"bench/dnsload":          {"*"},
	"bench/dnsproto":         {"*"},
	"bench/snibench":         {"*"},
	"bench/internal/latency": {"*"},
}

// forbiddenStd are standard packages a package may not import, with why.
var forbiddenStd = map[string]map[string]string{
	"policy": {
		"os": "policy is pure: no I/O", "net": "policy is pure: no I/O", "os/exec": "policy is pure: no I/O",
		"syscall": "policy is pure: no I/O", "unsafe": "policy is pure", "log/slog": "policy is pure: it returns warnings",
	},
}

// onlyIn are outside modules that exactly one place may import, with why.
// They are checked for every package, direct imports only.
var onlyIn = map[string]struct{ pkg, why string }{
	"github.com/elazarl/goproxy":                                {"tlsinspect/mitm", "TLS interception is one small package, audited as one"},
	"modernc.org/sqlite":                                        {"journal", "the journal owns storage; nothing else writes records"},
	"github.com/prometheus/client_golang/prometheus":            {"metrics", "one package owns the series and their labels, so no host name becomes one"},
	"github.com/prometheus/client_golang/prometheus/promhttp":   {"metrics", "one package owns the series and their labels, so no host name becomes one"},
	"github.com/prometheus/client_golang/prometheus/collectors": {"metrics", "one package owns the series and their labels, so no host name becomes one"},
}

// neverReaches are edges that must not exist even through other packages
// (transitively), with why.
var neverReaches = map[string]map[string]string{
	"webui": {
		"firewall": "the UI reviews and steers through small interfaces that gateway satisfies; it never programs the kernel",
		"sandbox":  "the UI never touches agents' namespaces or processes",
		"gateway":  "the UI is attached to the engine, not the other way round",
	},
	"policy":     {"journal": "policy imports none of the others"},
	"journal":    {"policy": "journal imports none of the others"},
	"dnsfilter":  {"firewall": "the resolver is handed an Allower; it does not program sets itself"},
	"tlsinspect": {"dnsfilter": "the proxy is handed a pin table interface"},
}

type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages; the test checks nothing", len(pkgs))
	}
	return pkgs
}

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func isStd(path string) bool { return !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") }

func allowedBy(rules []string, imp string) bool {
	for _, r := range rules {
		if r == "*" || r == imp || (strings.HasSuffix(r, "/") && strings.HasPrefix(imp, r)) || strings.HasPrefix(imp, r+"/") {
			return true
		}
	}
	return false
}

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		name, _ := rel(p.ImportPath)
		rules, listed := imports[name]
		if !listed {
			t.Errorf("%s is not in deps_test.go's table: add it with what it may import (DESIGN.md)", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd", name, imp)
				continue
			}
			if why, bad := forbiddenStd[name][imp]; bad {
				t.Errorf("%s may not import %s: %s", name, imp, why)
			}
			if o, ok := onlyIn[imp]; ok && o.pkg != name {
				t.Errorf("%s may not import %s: only %s may (%s)", name, imp, o.pkg, o.why)
			}
			if isStd(imp) {
				continue
			}
			target, internal := rel(imp)
			if internal && !allowedBy(rules, target) || !internal && !allowedBy(rules, imp) {
				t.Errorf("%s may not import %s (DESIGN.md package table; deps_test.go)", name, imp)
			}
		}
		for target, why := range neverReaches[name] {
			if slices.Contains(p.Deps, module+"/"+target) {
				t.Errorf("%s reaches %s, through its imports: %s", name, target, why)
			}
		}
	}
}

// TestImportRulesCatch: the rules above fail a package that breaks them.
func TestImportRulesCatch(t *testing.T) {
	for _, tc := range []struct {
		rules []string
		imp   string
		want  bool
	}{
		{[]string{"policy"}, "policy", true},
		{[]string{"policy"}, "policyx", false},
		{[]string{"github.com/vishvananda/"}, "github.com/vishvananda/netlink", true},
		{[]string{"github.com/google/nftables"}, "github.com/google/nftables/expr", true},
		{[]string{"golang.org/x/net/"}, "golang.org/x/sys/unix", false},
		{[]string{}, "github.com/miekg/dns", false},
	} {
		if got := allowedBy(tc.rules, tc.imp); got != tc.want {
			t.Errorf("allowedBy(%v, %s) = %v, want %v", tc.rules, tc.imp, got, tc.want)
		}
	}
}
