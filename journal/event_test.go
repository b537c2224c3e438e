package journal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestLogSinkOneLinePerRefusal(t *testing.T) {
	var buf bytes.Buffer
	s := LogSink{Log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.Record(Event{Agent: "a", Layer: LayerDNS, Kind: Allowed, Reason: ReasonAllowed})
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

// failingHandler is a log handler whose writes fail.
type failingHandler struct{ slog.Handler }

func (failingHandler) Handle(context.Context, slog.Record) error {
	return errors.New("write /dev/stderr: broken pipe")
}

func TestLogSinkTickets(t *testing.T) {
	var buf bytes.Buffer
	s := LogSink{Log: slog.New(slog.NewTextHandler(&buf, nil))}
	refused := s.Record(Event{Layer: LayerTLS, Reason: "no_sni"})
	if refused == 0 || s.Wait(cancelled(), refused) != nil || !strings.Contains(buf.String(), "reason=no_sni") {
		t.Errorf("a logged refusal: ticket %d, Wait %v, log %q; want stored", refused, s.Wait(cancelled(), refused), buf.String())
	}
	if tk := s.Record(Event{Layer: LayerTLS, Kind: Allowed, Reason: ReasonAllowed}); tk != 0 || !errors.Is(s.Wait(context.Background(), tk), ErrNotRecorded) {
		t.Errorf("an allowed event LogSink does not log: ticket %d, want none", tk)
	}
	broken := LogSink{Log: slog.New(failingHandler{slog.NewTextHandler(io.Discard, nil)})}
	if tk := broken.Record(Event{Layer: LayerTLS, Reason: "no_sni"}); tk != 0 {
		t.Errorf("a refusal the log failed to write: ticket %d, want none", tk)
	}
	if err := broken.WriteEvents([]Event{{Reason: "no_sni"}}); err == nil {
		t.Errorf("WriteEvents hid the log's error")
	}
}

// TestLogSinkKinds checks each kind's one line: a refusal and a dropped
// notice always, at WARN, each with its own message; a pass at INFO only
// when asked for.
func TestLogSinkKinds(t *testing.T) {
	dropped := Event{Agent: "a", Layer: LayerDNS, Kind: Dropped, Reason: ReasonAddrsDropped, Name: "meta.test.",
		Proto: "A", PolicyHash: "sha256:1", Addrs: []netip.Addr{netip.MustParseAddr("169.254.169.254")}}
	tests := []struct {
		ev      Event
		allowed bool
		want    string // "" when nothing is logged
	}{
		{Event{Agent: "a", Layer: LayerDNS, Reason: ReasonNameNotAllowed, Name: "x.test.", PolicyHash: "sha256:1"}, false,
			"level=WARN msg=refused agent=a layer=dns reason=name_not_allowed name=x.test. policy=sha256:1\n"},
		{dropped, false, "level=WARN msg=dropped agent=a layer=dns reason=addresses_dropped name=meta.test. proto=A policy=sha256:1 addrs=169.254.169.254\n"},
		{Event{Agent: "a", Layer: LayerDNS, Kind: WouldRefuse, Reason: ReasonNameNotAllowed, Name: "x.test.", PolicyHash: "sha256:1"}, false,
			"level=WARN msg=would_refuse agent=a layer=dns reason=name_not_allowed name=x.test. policy=sha256:1\n"},
		{Event{Agent: "a", Layer: LayerDNS, Kind: Allowed, Reason: ReasonAllowed, PolicyHash: "sha256:1"}, false, ""},
		{Event{Agent: "a", Layer: LayerDNS, Kind: Allowed, Reason: ReasonAllowed, PolicyHash: "sha256:1"}, true,
			"level=INFO msg=allowed agent=a layer=dns reason=allowed policy=sha256:1\n"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		h := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})
		tk := LogSink{Log: slog.New(h), Allowed: tt.allowed}.Record(tt.ev)
		if got := buf.String(); got != tt.want {
			t.Errorf("%v (Allowed %v): logged %q, want %q", tt.ev.Kind, tt.allowed, got, tt.want)
		}
		if (tk != 0) != (tt.want != "") {
			t.Errorf("%v (Allowed %v): ticket %d, want one exactly when logged", tt.ev.Kind, tt.allowed, tk)
		}
	}
}

// TestVerdicts: every Kind has its own word, Verdicts lists each once,
// and a would-be refusal is a decision (coalesced like one) that is no
// refusal.
func TestVerdicts(t *testing.T) {
	var words []string
	for k := Kind(0); !strings.HasPrefix(k.String(), "kind"); k++ {
		words = append(words, k.String())
		if !coalescable(k) && (k == Refused || k == Allowed || k == Dropped || k == WouldRefuse) {
			t.Errorf("%s is a decision but is not coalesced", k)
		}
	}
	if got := Verdicts(); !slices.Equal(got, words) {
		t.Errorf("Verdicts() = %q, want every kind's word %q", got, words)
	}
	if WouldRefuse.String() != "would_refuse" || WouldRefuse == Refused {
		t.Errorf("WouldRefuse is %q", WouldRefuse)
	}
	var s Summary
	_ = s.WriteEvents([]Event{{Kind: WouldRefuse, Layer: LayerDNS, Reason: ReasonNameNotAllowed, Name: "x.test."}})
	if line := s.Line(5); line != "" {
		t.Errorf("a would-be refusal counted as a refusal: %q", line)
	}
}

// TestLogSinkCount: an event that stands for repeats (the resolver's fast
// path folds them) says how many; one that stands for itself does not.
func TestLogSinkCount(t *testing.T) {
	var buf bytes.Buffer
	s := LogSink{Log: slog.New(slog.NewTextHandler(&buf, nil)), Allowed: true}
	s.Record(Event{Layer: LayerDNS, Kind: Allowed, Reason: ReasonAllowed, Name: "one.example"})
	s.Record(Event{Layer: LayerDNS, Kind: Allowed, Reason: ReasonAllowed, Name: "many.example", Count: 7})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "count=") || !strings.Contains(lines[1], "count=7") {
		t.Errorf("log %q: want count=7 on the second line alone", buf.String())
	}
}
