package journal

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestSummaryLine(t *testing.T) {
	var s Summary
	if got := s.Line(5); got != "" {
		t.Errorf("empty summary = %q", got)
	}
	dst := netip.MustParseAddrPort("192.0.2.10:22")
	_ = s.WriteEvents([]Event{
		{Kind: Refused, Layer: LayerDNS, Name: "other.test.", Proto: "A", Reason: "name_not_allowed"},
		{Kind: Allowed, Layer: LayerDNS, Name: "ok.test", Reason: "allowed"},
		{Kind: Refused, Layer: LayerFirewall, Proto: "tcp", Dst: dst, Reason: "no_set_entry", Count: 3},
		{Kind: Refused, Layer: LayerDNS, Name: "other.test", Proto: "AAAA", Reason: "name_not_allowed"},
		{Kind: Refused, Layer: LayerTLS, Name: "evil.test", Dst: netip.MustParseAddrPort("192.0.2.11:443"), Reason: "sni_not_allowed"},
	})
	want := "6 refused — tcp 192.0.2.10:22 ×3 (no_set_entry), dns other.test ×2 (name_not_allowed), tls evil.test:443 (sni_not_allowed)"
	if got := s.Line(5); got != want {
		t.Errorf("Line(5) =\n%q\nwant\n%q", got, want)
	}
	want = "6 refused — tcp 192.0.2.10:22 ×3 (no_set_entry), 3 more"
	if got := s.Line(1); got != want {
		t.Errorf("Line(1) =\n%q\nwant\n%q", got, want)
	}
}

// TestSummaryBounded: an agent that tries a new name each time does not
// grow the summary without end, and nothing is lost from its total.
func TestSummaryBounded(t *testing.T) {
	var s Summary
	for i := range maxSummaryGroups + 50 {
		_ = s.WriteEvents([]Event{{Kind: Refused, Layer: LayerDNS, Name: fmt.Sprintf("n%d.test", i), Reason: "name_not_allowed"}})
	}
	if len(s.groups) != maxSummaryGroups || s.total != maxSummaryGroups+50 {
		t.Errorf("%d groups, total %d", len(s.groups), s.total)
	}
	if got := s.Line(2); !strings.HasSuffix(got, ", 1048 more") {
		t.Errorf("Line(2) = %q, want the rest counted", got)
	}
}

// TestSummaryEscapes: a name that would drive the terminal (a C1 control,
// a right-to-left override) reaches the summary escaped.
func TestSummaryEscapes(t *testing.T) {
	var s Summary
	_ = s.WriteEvents([]Event{{Kind: Refused, Layer: LayerHTTP, Name: "a\u009b2Jb\u202eevil", Reason: "host_not_allowed"}})
	got := s.Line(5)
	if strings.ContainsAny(got, "\u009b\u202e") || !strings.Contains(got, `\u202e`) {
		t.Errorf("Line = %q, want the controls escaped", got)
	}
}
