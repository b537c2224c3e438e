package journal

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// t0 is an hour ahead of the clock: events at t0 are not due for the
// coalescer (which takes the clock's time) until a test says so.
var t0 = time.Now().UTC().Truncate(time.Second).Add(time.Hour)

func openTestStore(t testing.TB, cfg StoreConfig) *Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "j", "journal.db")
	}
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func refusal(i int, name string) Event {
	return Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Agent: "a", Layer: LayerDNS, Kind: Refused,
		Reason: ReasonNameNotAllowed, Name: name, Proto: "A", PolicyHash: "sha256:p1"}
}

// tamper runs statements on the database behind the journal's back.
func tamper(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
}

func TestStoreModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lib")
	s := openTestStore(t, StoreConfig{Path: filepath.Join(dir, "journal.db")})
	for path, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, s.cfg.Path: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, want)
		}
	}
}

// TestVerify: a chain as written verifies; an edited record, a record
// deleted from the middle and records deleted from the start are each
// named.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, stmt, want string
	}{
		{"untouched", "", ""},
		{"edited", "UPDATE records SET name = 'other.test.' WHERE id = 3", "record 3: its content does not match"},
		{"deleted", "DELETE FROM records WHERE id = 3", "record 4: its link does not match the hash of record 2"},
		{"head deleted", "DELETE FROM records WHERE id <= 2", "record 3, the oldest"},
		{"count edited", "UPDATE records SET count = 1000 WHERE id = 5", "record 5: its content"},
	} {
		s := openTestStore(t, StoreConfig{Coalesce: -1})
		var evs []Event
		for i := range 5 {
			evs = append(evs, refusal(i, fmt.Sprintf("n%d.test.", i)))
		}
		if err := s.WriteEvents(evs); err != nil {
			t.Fatal(err)
		}
		if tc.stmt != "" {
			tamper(t, s.cfg.Path, tc.stmt)
		}
		n, _, err := s.Verify(ctx)
		switch {
		case tc.want == "" && (err != nil || n != 5):
			t.Errorf("%s: verified %d, %v; want 5, nil", tc.name, n, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: verified %d, %v; want an error with %q", tc.name, n, err, tc.want)
		}
	}
}

// TestChainAcrossOpens: a journal reopened goes on with the same chain.
func TestChainAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	for i := range 3 {
		s, err := OpenStore(StoreConfig{Path: path, Coalesce: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteEvents([]Event{refusal(i, "x.test.")}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, last, err := r.Verify(context.Background()); n != 3 || last.ID != 3 || err != nil {
		t.Errorf("verified %d (last %d), %v; want 3", n, last.ID, err)
	}
}

// TestCoalesce: a flood of one refusal is its first record and one record
// of the repeats per interval; other decisions stay their own; the
// journal's own records are never folded.
func TestCoalesce(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, StoreConfig{})
	var evs []Event
	for i := range 1000 {
		evs = append(evs, refusal(i/2, "flood.test.")) // 500 ms
	}
	evs = append(evs, refusal(1, "other.test."))
	if err := s.WriteEvents(evs); err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.List(ctx, Filter{})
	if err != nil || len(recs) != 2 {
		t.Fatalf("after the flood: %d records, %v; want the first of each name", len(recs), err)
	}
	// The interval ends: the repeats are stored, as one record.
	if err := s.Tick(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	recs, _, err = s.List(ctx, Filter{Host: "flood.test"})
	if err != nil || len(recs) != 2 || recs[0].Count != 999 || recs[1].Count != 1 {
		t.Fatalf("flood.test: %+v, %v; want a record of 999 repeats after the first", recs, err)
	}
	// The next interval opens with a record of its own.
	if err := s.WriteEvents([]Event{refusal(2000, "flood.test.")}); err != nil {
		t.Fatal(err)
	}
	if recs, _, _ = s.List(ctx, Filter{Host: "flood.test"}); len(recs) != 3 || recs[0].Count != 1 {
		t.Errorf("a refusal after the interval: %+v", recs)
	}
	lost := Event{Time: t0, Layer: LayerJournal, Kind: Lost, Reason: ReasonRecordsLost, Count: 7}
	if err := s.WriteEvents([]Event{lost, lost}); err != nil {
		t.Fatal(err)
	}
	if recs, _, _ = s.List(ctx, Filter{Verdict: "lost"}); len(recs) != 2 || recs[0].Count != 7 {
		t.Errorf("the journal's own records: %+v", recs)
	}
	if n, _, err := s.Verify(ctx); err != nil {
		t.Errorf("verify after coalescing: %d, %v", n, err)
	}
}

func TestListFilters(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, StoreConfig{Coalesce: -1})
	evs := []Event{
		refusal(0, "github.com."),
		refusal(1, "api.github.com."),
		refusal(2, "notgithub.com."),
		{Time: t0.Add(3 * time.Second), Agent: "b", Layer: LayerTLS, Kind: Allowed, Reason: ReasonAllowed, Name: "API.GitHub.com",
			Dst: netip.MustParseAddrPort("192.0.2.1:443"), Proto: "tcp", Rule: "api.github.com ports 443"},
		{Time: t0.Add(4 * time.Second), Agent: "b", Layer: LayerFirewall, Kind: Refused, Reason: ReasonNoSetEntry,
			Dst: netip.MustParseAddrPort("192.0.2.66:22"), Proto: "tcp"},
	}
	if err := s.WriteEvents(evs); err != nil {
		t.Fatal(err)
	}
	ids := func(f Filter) string {
		recs, next, err := s.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, fmt.Sprint(r.ID))
		}
		return strings.Join(out, ",") + fmt.Sprintf(" next=%d", next)
	}
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "5,4,3,2,1 next=0"},
		{Filter{Host: "github.com"}, "4,2,1 next=0"},
		{Filter{Host: "GITHUB.COM."}, "4,2,1 next=0"},
		{Filter{Host: "api.github.com"}, "4,2 next=0"},
		{Filter{Verdict: "refused"}, "5,3,2,1 next=0"},
		{Filter{Agent: "b", Layer: "firewall"}, "5 next=0"},
		{Filter{Reason: "allowed"}, "4 next=0"},
		{Filter{Since: t0.Add(2 * time.Millisecond)}, "5,4,3 next=0"},
		{Filter{Limit: 2}, "5,4 next=4"},
		{Filter{Limit: 2, Before: 4}, "3,2 next=2"},
		{Filter{Limit: 2, Before: 2}, "1 next=0"},
	} {
		if got := ids(tc.f); got != tc.want {
			t.Errorf("List(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
	r, err := s.Get(ctx, 4)
	if err != nil || r.Dst != "192.0.2.1:443" || r.Rule != "api.github.com ports 443" || r.Verdict != "allowed" {
		t.Errorf("Get(4) = %+v, %v", r, err)
	}
	if _, err := s.Get(ctx, 99); err != ErrNoRecord {
		t.Errorf("Get(99): %v", err)
	}
}

// TestRetention: records past the age or the size are deleted from the
// oldest end; the anchor keeps the chain verifiable, and the newest
// record always stays.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, StoreConfig{Coalesce: -1, MaxAge: time.Hour})
	var evs []Event
	for i := range 10 {
		ev := refusal(i, fmt.Sprintf("n%d.test.", i))
		if i < 6 {
			ev.Time = t0.Add(-2 * time.Hour)
		}
		evs = append(evs, ev)
	}
	if err := s.WriteEvents(evs); err != nil {
		t.Fatal(err)
	}
	if err := s.Tick(t0); err != nil {
		t.Fatal(err)
	}
	recs, _, _ := s.List(ctx, Filter{})
	if len(recs) != 5 || recs[0].Verdict != "pruned" || recs[0].Count != 6 || recs[len(recs)-1].ID != 7 {
		t.Fatalf("after retention: %+v", recs)
	}
	if n, _, err := s.Verify(ctx); n != 5 || err != nil {
		t.Errorf("verify after retention: %d, %v", n, err)
	}
	// A second round (everything old now) keeps the newest record, and
	// the chain still verifies across both anchors.
	if err := s.Tick(t0.Add(10 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, last, err := s.Verify(ctx); n != 2 || last.Verdict != "pruned" || err != nil {
		t.Errorf("verify after the second retention: %d (last %+v), %v", n, last, err)
	}

	// By size: a journal over its size loses its oldest records.
	s = openTestStore(t, StoreConfig{Coalesce: -1, MaxSize: 256 << 10})
	for i := range 40 {
		evs = evs[:0]
		for j := range 100 {
			ev := refusal(i*100+j, fmt.Sprintf("n%d.test.", i*100+j))
			ev.Detail = strings.Repeat("x", 100)
			evs = append(evs, ev)
		}
		if err := s.WriteEvents(evs); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Tick(t0); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = s.List(ctx, Filter{Verdict: "pruned"})
	if len(recs) != 1 || recs[0].Count < 100 {
		t.Fatalf("retention by size: %+v", recs)
	}
	if _, _, err := s.Verify(ctx); err != nil {
		t.Errorf("verify after retention by size: %v", err)
	}
}

func TestReverseHost(t *testing.T) {
	for in, want := range map[string]string{"api.github.com.": "com.github.api.", "GitHub.com": "com.github.", "": "", "x": "x."} {
		if got := reverseHost(in); got != want {
			t.Errorf("reverseHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSharedJournal: two gateways (two Stores, as two processes would
// have) append to one journal; the chain stays whole.
func TestSharedJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	a := openTestStore(t, StoreConfig{Path: path, Coalesce: -1})
	b := openTestStore(t, StoreConfig{Path: path, Coalesce: -1})
	done := make(chan error, 2)
	for i, s := range []*Store{a, b} {
		go func() {
			for j := range 50 {
				if err := s.WriteEvents([]Event{refusal(j, fmt.Sprintf("s%d-%d.test.", i, j))}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n, _, err := a.Verify(context.Background()); n != 100 || err != nil {
		t.Errorf("verified %d, %v; want 100", n, err)
	}
}

// TestExport: every record, oldest first, as JSON lines or OCSF events of
// the class of its layer.
func TestExport(t *testing.T) {
	s := openTestStore(t, StoreConfig{Coalesce: -1})
	evs := []Event{
		refusal(0, "evil.test."),
		{Time: t0, Agent: "a", Layer: LayerHTTP, Kind: Refused, Reason: ReasonHostNotAllowed, Name: "evil.test",
			Dst: netip.MustParseAddrPort("192.0.2.1:80"), Proto: "tcp"},
		{Time: t0, Agent: "a", Layer: LayerFirewall, Kind: Allowed, Reason: ReasonAllowed, Dst: netip.MustParseAddrPort("192.0.2.2:22"), Proto: "tcp"},
		{Time: t0, Agent: "a", Layer: LayerTLS, Kind: WouldRefuse, Reason: ReasonSNINotAllowed, Name: "new.test",
			Dst: netip.MustParseAddrPort("192.0.2.3:443"), Proto: "tcp"},
	}
	if err := s.WriteEvents(evs); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Export(context.Background(), s.Reader, &b, "ocsf", false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []struct {
		class               int
		action, disposition string
	}{{4003, "Denied", "Blocked"}, {4002, "Denied", "Blocked"}, {4001, "Allowed", "Allowed"}, {4001, "Allowed", "Detected"}}
	if len(lines) != len(want) {
		t.Fatalf("%d OCSF events: %s", len(lines), b.String())
	}
	for i, l := range lines {
		var ev struct {
			ClassUID    int    `json:"class_uid"`
			TypeUID     int    `json:"type_uid"`
			Action      string `json:"action"`
			Disposition string `json:"disposition"`
			Metadata    struct {
				Sequence int64 `json:"sequence"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.ClassUID != want[i].class || ev.Action != want[i].action || ev.Disposition != want[i].disposition ||
			ev.TypeUID/100 != ev.ClassUID || ev.Metadata.Sequence != int64(i+1) {
			t.Errorf("event %d: %+v, %v: %s", i, ev, err, l)
		}
	}
	b.Reset()
	if err := Export(context.Background(), s.Reader, &b, "jsonl", false); err != nil || strings.Count(b.String(), "\n") != 4 ||
		!strings.Contains(b.String(), `"layer":"http"`) {
		t.Errorf("jsonl: %v: %s", err, b.String())
	}
	if err := Export(context.Background(), s.Reader, &b, "xml", false); err == nil {
		t.Error("an unknown format was accepted")
	}
}

// TestExportFollow: with follow, records stored after the export began
// are written too, until the context ends.
func TestExportFollow(t *testing.T) {
	s := openTestStore(t, StoreConfig{Coalesce: -1})
	if err := s.WriteEvents([]Event{refusal(0, "before.test.")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Export(ctx, s.Reader, pw, "jsonl", true); pw.Close() }()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() || !strings.Contains(lines.Text(), "before.test") {
		t.Fatalf("first line %q", lines.Text())
	}
	if err := s.WriteEvents([]Event{refusal(1, "after.test.")}); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || !strings.Contains(lines.Text(), "after.test") {
		t.Fatalf("the record stored after the export began: %q", lines.Text())
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Errorf("Export after the context ended: %v", err)
	}
}
