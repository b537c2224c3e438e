package gateway

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/policy"
)

// bigPolicy has hosts exact entries and a wildcard over synth.test.
func bigPolicy(tb testing.TB, hosts int) *policy.Policy {
	var sb strings.Builder
	sb.WriteString("version: 1\nallow:\n  - host: \"*.synth.test\"\n    ports: [81]\n    max_new_names: 0\n")
	for i := range hosts {
		fmt.Fprintf(&sb, "  - host: h%d.allowed.test\n    ports: [443]\n", i)
	}
	entries, err := policy.ParseFile("p.yaml", []byte(sb.String()))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := policy.New(entries)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkJustified: what stays open after a change, computed from the
// pins of 10,000 names under a 500-host policy (the CPU part of a reload;
// BenchmarkReload in testing/e2e measures the whole).
func BenchmarkJustified(b *testing.B) {
	pins := dnsfilter.NewPins(dnsfilter.DefaultMaxPins)
	until := time.Now().Add(time.Hour)
	a := netip.MustParseAddr("198.18.128.0")
	for i := range 10000 {
		a = a.Next()
		pins.Pin(fmt.Sprintf("n%07d.synth.test", i), []netip.Addr{a}, until)
	}
	p := bigPolicy(b, 500)
	b.ResetTimer()
	for range b.N {
		if n := len(justified(p, pins, func(netip.Addr, bool) bool { return true }, false)); n != 10000 {
			b.Fatalf("%d justified, want 10000", n)
		}
	}
}

// TestJustifiedDropsWhatTheEntryNoLongerAllows: a pin survives a change
// only if its name is still allowed and its address is one the entry may
// resolve to now (private: true taken away drops a private address).
func TestJustifiedDropsWhatTheEntryNoLongerAllows(t *testing.T) {
	pins := dnsfilter.NewPins(100)
	until := time.Now().Add(time.Hour)
	public, private := netip.MustParseAddr("198.18.2.10"), netip.MustParseAddr("10.1.2.3")
	pins.Pin("kept.test", []netip.Addr{public, private}, until)
	pins.Pin("gone.test", []netip.Addr{public}, until)
	e, err := policy.ParseAllowFlag("kept.test:443")
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New([]policy.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	permits := func(a netip.Addr, private bool) bool { return private || !a.IsPrivate() }
	// Report mode: the same elements stay in the sets, and every pin
	// stays.
	got := justified(p, pins, permits, true)
	if len(got) != 1 || !got[addrPort{public, 443}] {
		t.Errorf("report mode: justified = %v, want only 198.18.2.10:443", got)
	}
	if !pins.Pinned("kept.test", private) || !pins.Pinned("gone.test", public) || !pins.Pinned("kept.test", public) {
		t.Error("report mode dropped a pin")
	}
	got = justified(p, pins, permits, false)
	if len(got) != 1 || !got[addrPort{public, 443}] {
		t.Errorf("justified = %v, want only 198.18.2.10:443", got)
	}
	if pins.Pinned("kept.test", private) || pins.Pinned("gone.test", public) || !pins.Pinned("kept.test", public) {
		t.Error("the pins that are no longer allowed were kept, or an allowed one was dropped")
	}
}
