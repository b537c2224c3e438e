package journal

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestLogSinkOneLinePerRefusal(t *testing.T) {
	var buf bytes.Buffer
	s := LogSink{Log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.Record(Event{Agent: "a", Layer: LayerDNS, Allow: true, Reason: "allowed"})
	if buf.Len() != 0 {
		t.Fatalf("allowed event logged without Allowed: %q", buf.String())
	}
	s.Record(Event{
		Agent: "a", Layer: LayerFirewall, Reason: "no_set_entry",
		Name: "evil\n\x1b[2Jtest" + strings.Repeat("x", 400), Dst: netip.MustParseAddrPort("192.0.2.66:4444"),
		Proto: "tcp", PolicyHash: "sha256:1",
	})
	out := buf.String()
	if strings.Count(out, "\n") != 1 {
		t.Errorf("want one line, got %q", out)
	}
	for _, want := range []string{"level=WARN", "reason=no_set_entry", "dst=192.0.2.66:4444", "policy=sha256:1", "evil??[2Jtest"} {
		if !strings.Contains(out, want) {
			t.Errorf("line %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "\x1b") || len(out) > 700 {
		t.Errorf("attacker name not bounded and escaped: %q", out)
	}
}
