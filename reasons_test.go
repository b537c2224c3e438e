package sluice_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// TestPolicyReasons guards the layers' cast of a policy.Reason to a
// journal.Reason: every word of the policy is a declared journal reason.
func TestPolicyReasons(t *testing.T) {
	for _, r := range policy.Reasons() {
		if !journal.Reason(r).Known() {
			t.Errorf("policy reason %s is no declared journal.Reason", r)
		}
	}
}

// TestReasonsTyped: the resolver and the proxy journal typed reasons only.
// The one conversion to a journal.Reason they may make is of a policy
// decision's reason; an error's text, or any other string, is never a
// reason.
func TestReasonsTyped(t *testing.T) {
	conv := regexp.MustCompile(`journal\.Reason\(([^()]*(\([^()]*\))?[^()]*)\)`)
	policyReason := regexp.MustCompile(`^\w+\.Reason$`)
	for _, dir := range []string{"dnsfilter", "tlsinspect"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range conv.FindAllStringSubmatch(string(b), -1) {
				seen++
				if !policyReason.MatchString(m[1]) {
					t.Errorf("%s: %s makes a reason of something other than a policy decision's", f, m[0])
				}
			}
		}
		if seen == 0 {
			t.Errorf("%s: no conversion of a policy reason found: the scan is wrong", dir)
		}
	}
}
