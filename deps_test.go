package sluice_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The import rules of DESIGN.md: arrows point down the package table only.
// Each package lists the module paths it may import besides the standard
// library; anything else is a design change to make on purpose.
var allowedImports = map[string][]string{
	"policy":    {"gopkg.in/yaml.v3", "golang.org/x/net/"},
	"journal":   {},
	"dnsfilter": {"policy", "journal", "github.com/miekg/dns", "golang.org/x/net/"},
	"firewall": {"policy", "journal", "github.com/google/nftables", "github.com/vishvananda/",
		"github.com/florianl/go-nflog/", "github.com/ti-mo/conntrack", "github.com/mdlayher/netlink",
		"golang.org/x/sys/"},
	"tlsinspect": {"policy", "journal", "golang.org/x/sys/"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/sluicegw/sluice/"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		rel := strings.TrimPrefix(pkg, mod)
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, mod+"cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd", rel, imp)
			}
		}
		rules, ok := allowedImports[rel]
		if !ok {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue // standard library
			}
			allowed := false
			for _, r := range rules {
				if strings.HasPrefix(strings.TrimPrefix(imp, mod), r) && (strings.Contains(r, ".") || strings.HasPrefix(imp, mod)) {
					allowed = true
				}
			}
			if !allowed {
				t.Errorf("%s may not import %s (DESIGN.md package table)", rel, imp)
			}
		}
	}
}
