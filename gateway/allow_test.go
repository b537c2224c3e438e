package gateway

import (
	"slices"
	"testing"

	"github.com/sluicegw/sluice/policy"
)

// TestEffective: an allowance for a host the policy has adds its ports to
// that entry; one for a new host is an entry of its own; the base policy
// is unchanged.
func TestEffective(t *testing.T) {
	entry := func(s string) policy.Entry {
		e, err := policy.ParseAllowFlag(s)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	base, err := policy.New([]policy.Entry{entry("api.github.com:443"), entry("198.51.100.7:22")})
	if err != nil {
		t.Fatal(err)
	}
	a := func(s string) allowance { return allowance{entry: entry(s)} }
	p, err := effective(base, []allowance{a("api.github.com:8443"), a("pypi.org"), a("198.51.100.7:2222")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range p.Entries() {
		got = append(got, e.String())
	}
	slices.Sort(got)
	want := []string{"198.51.100.7/32 ports 22,2222", "api.github.com ports 443,8443", "pypi.org ports 80,443"}
	if !slices.Equal(got, want) {
		t.Errorf("effective = %v, want %v", got, want)
	}
	if d := base.MatchNamePort("api.github.com", 8443); d.Allow {
		t.Error("the base policy changed")
	}
}
