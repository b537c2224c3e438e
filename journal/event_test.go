package journal

import (
	"bytes"
	"context"
	"errors"
	"io"
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
	if tk := s.Record(Event{Layer: LayerTLS, Allow: true, Reason: "allowed"}); tk != 0 || !errors.Is(s.Wait(context.Background(), tk), ErrNotRecorded) {
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
