package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/nstest"
)

// TestHumanLog: on a terminal a refusal is one short line, without the
// agent and policy hash that every line of a run shares.
func TestHumanLog(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(newHandler(&b, "human", slog.LevelInfo, false))
	sink := journal.LogSink{Log: log}
	_ = sink.WriteEvents([]journal.Event{{Agent: "curl", Layer: journal.LayerDNS, Kind: journal.Refused, Reason: "name_not_allowed",
		Name: "other.test.", Proto: "A", PolicyHash: "sha256:71d57ffae49d62d7"}})
	log.Debug("not shown")
	log.With("agent", "curl").Error("cleanup incomplete", "err", "link sl1: busy")
	got := b.String()
	// The time is the only part that changes.
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	for i, l := range lines {
		if len(l) > 15 && l[:7] == "sluice " {
			if _, err := time.Parse("15:04:05", l[7:15]); err == nil {
				lines[i] = "sluice HH:MM:SS" + l[15:]
			}
		}
	}
	want := []string{
		"sluice HH:MM:SS WARN refused dns reason=name_not_allowed name=other.test. proto=A",
		`sluice HH:MM:SS ERROR cleanup incomplete err="link sl1: busy"`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("human log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// serve's lines are of many agents: each names its own.
	b.Reset()
	slog.New(newHandler(&b, "human", slog.LevelInfo, true)).Warn("refused", "agent", "alpha", "policy", "sha256:x")
	if !strings.Contains(b.String(), "refused agent=alpha") || strings.Contains(b.String(), "sha256") {
		t.Errorf("serve's human line %q: want the agent and no policy hash", b.String())
	}
}

func TestLogFormat(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := logFormat(f, false); got != "text" {
		t.Errorf("a file: %s, want text", got)
	}
	if got := logFormat(f, true); got != "json" {
		t.Errorf("a file with --log-json: %s, want json", got)
	}
	if got := logFormat(&bytes.Buffer{}, false); got != "text" {
		t.Errorf("a buffer: %s, want text", got)
	}
}

// TestOpenLogFileRefusesSymlink: root's writes cannot be aimed at another
// file through a link at the --log-file path.
func TestOpenLogFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "target"), filepath.Join(dir, "log")
	writeFile(t, target, "keep\n")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(link); err == nil {
		f.Close()
		t.Fatal("a symbolic link was opened")
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v, want refused (and no hang)", err)
		if f != nil {
			f.Close()
		}
	}
	hard := filepath.Join(dir, "hard")
	if err := os.Link(target, hard); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(hard); err == nil || !strings.Contains(err.Error(), "hard links") {
		t.Errorf("a file with two names: %v, want refused", err)
		if f != nil {
			f.Close()
		}
	}
	t.Run("owner", func(t *testing.T) {
		nstest.RequireRoot(t) // making a file another user's needs root
		checkLogFileOwner(t, dir)
	})
	f, err := openLogFile(filepath.Join(dir, "new.log"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(filepath.Join(dir, "new.log")); fi.Mode().Perm() != 0o644 {
		t.Errorf("a new log file has mode %v, want 0644", fi.Mode().Perm())
	}
}

// checkLogFileOwner: an existing file the command's user owns is refused,
// the same file once root's is taken.
func checkLogFileOwner(t *testing.T, dir string) {
	theirs := filepath.Join(dir, "theirs.log")
	writeFile(t, theirs, "")
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(theirs); err == nil || !strings.Contains(err.Error(), "which the command could rewrite") {
		t.Errorf("a file another user owns: %v, want refused", err)
		if f != nil {
			f.Close()
		}
	}
	if err := os.Chown(theirs, 0, 0); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(theirs); err != nil { // positive control: root's, 0644
		t.Errorf("root's 0644 file: %v", err)
	} else {
		f.Close()
	}
}

// TestExitSummaryGolden: the line a person reads when the run ends.
func TestExitSummaryGolden(t *testing.T) {
	var s journal.Summary
	_ = s.WriteEvents([]journal.Event{
		{Kind: journal.Refused, Layer: journal.LayerDNS, Name: "other.test.", Reason: "name_not_allowed", Count: 2},
		{Kind: journal.Refused, Layer: journal.LayerFirewall, Proto: "tcp", Dst: netip.MustParseAddrPort("192.0.2.10:22"), Reason: "no_set_entry", Count: 3},
	})
	var b bytes.Buffer
	stderr = &b
	defer func() { stderr = os.Stderr }()
	printSummary(&journal.Summary{}, "/var/lib/sluice/journal.db")
	printSummary(&s, "/var/lib/sluice/journal.db")
	printSummary(&s, "")
	golden(t, "exit-summary", b.String())
}

func TestHumanLogEscapes(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(newHandler(&b, "human", slog.LevelInfo, false))
	log.Warn("refused", "name", "a\u009b2Jb\u202eevil", "detail", `back\slash`, "plain", "ok.test")
	got := b.String()
	if strings.ContainsAny(got, "\u009b\u202e") || !strings.Contains(got, `name="a\u009b2Jb\u202eevil"`) || !strings.Contains(got, "plain=ok.test") {
		t.Errorf("human log %q: want the controls escaped and plain values bare", got)
	}
}
