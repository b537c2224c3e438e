package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluicegw/sluice/journal"

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

// TestFileControl: without a gateway, only "always" is possible; it
// writes the file (the old one kept) and journals the change.
func TestFileControl(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: a.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := &journal.Memory{}
	c := &FileControl{File: file, Journal: mem}
	before := c.PolicyView().Hash
	if _, err := c.Propose("b.test:443", "1h"); err != ErrOnlyAlways {
		t.Errorf("a temporary allowance without a gateway: %v", err)
	}
	if _, err := c.Propose("a.test:443", DurationAlways); err == nil {
		t.Error("what the file allows already was proposed")
	}
	pr, err := c.Propose("b.test:443", DurationAlways)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := c.Confirm(pr.ID, "tester")
	if err != nil || hash == before {
		t.Fatalf("confirm: %s, %v", hash, err)
	}
	if _, err := c.Confirm(pr.ID, "tester"); err != ErrNoProposal {
		t.Errorf("confirmed twice: %v", err)
	}
	if v := c.PolicyView(); v.Hash != hash || !slices.Contains(v.Entries, "b.test ports 443") {
		t.Errorf("after: %+v", v)
	}
	if old, _ := os.ReadFile(file + ".bak"); strings.Contains(string(old), "b.test") {
		t.Errorf("the backup: %s", old)
	}
	evs := mem.Events()
	if len(evs) != 1 || evs[0].Kind != journal.Changed || evs[0].OldPolicy != before || evs[0].PolicyHash != hash {
		t.Errorf("journaled: %+v", evs)
	}
}

// TestConcurrentAlways: confirmations at once lose no entry.
func TestConcurrentAlways(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: a.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &FileControl{File: file}
	var ids []string
	for i := range 20 {
		pr, err := c.Propose(fmt.Sprintf("h%d.test:443", i), DurationAlways)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, pr.ID)
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if _, err := c.Confirm(id, "tester"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v := c.PolicyView(); len(v.Entries) != 21 {
		t.Errorf("%d entries after 20 confirmations, want 21: %v", len(v.Entries), v.Entries)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the rewritten file's mode: %v, %v", fi.Mode(), err)
	}
}
