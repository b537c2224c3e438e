package policy

import (
	"slices"
	"testing"

	"github.com/sluicegw/sluice/testing/srcscan"
)

// TestReasonsComplete checks that Reasons holds every Reason constant of
// the package, so that the layers' test that each is a journal reason
// sees them all.
func TestReasonsComplete(t *testing.T) {
	words, err := srcscan.StringConsts(".", "Reason")
	if err != nil {
		t.Fatal(err)
	}
	var declared []Reason
	for _, w := range words {
		declared = append(declared, Reason(w))
	}
	if len(declared) == 0 {
		t.Fatal("found no Reason constants; the parse is wrong")
	}
	all := Reasons()
	for _, r := range declared {
		if !slices.Contains(all, r) {
			t.Errorf("%s is declared but missing from Reasons", r)
		}
	}
	if len(all) != len(declared) {
		t.Errorf("Reasons has %d reasons, the package declares %d", len(all), len(declared))
	}
}
