package e2e

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
)

// journalCmd runs `sluice journal ARGS` on the host and returns its
// output and exit status.
func journalCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(sluiceBin, append([]string{"journal"}, args...)...)
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// listJournal returns the records `sluice journal list --json` prints.
func listJournal(t *testing.T, path string, flags ...string) []journal.Record {
	t.Helper()
	out, code := journalCmd(t, append([]string{"list", "--journal", path, "--json", "--limit", "10000"}, flags...)...)
	if code != 0 {
		t.Fatalf("journal list: exit %d: %s", code, out)
	}
	var recs []journal.Record
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r journal.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("journal list printed %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

var readyPolicy = regexp.MustCompile(`gateway ready.* policy=(sha256:[0-9a-f]+)`)

// TestJournalRecordsEveryLayer: a refusal at each layer, and the allowed
// decisions beside them, are in the journal with their reason, rule and
// the policy hash in force; the filters select them; the chain verifies,
// and verify names an edited and a deleted record.
func TestJournalRecordsEveryLayer(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(t.TempDir(), "journal.db")
	c := w.curl()
	r := w.run(t, []string{"--journal", path, "--allow", "allowed.test"}, prelude+`
try dns `+c+` https://evil.test/
try tls `+c+` --resolve evil.test:443:`+allowedAddr+` https://evil.test/
try http `+c+` -H "Host: evil.test" http://allowed.test/
try fw nc -z -w 2 `+allowedAddr+` 9443
try allowed `+c+` https://allowed.test/
`)
	expect(t, r, map[string]string{"dns": curlNoResolve, "tls": curlRefused, "http": curlRefused, "fw": "1", "allowed": ok})
	m := readyPolicy.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no policy hash in sluice's log:\n%s", r.stderr)
	}
	hash := m[1]
	recs := listJournal(t, path)
	type want struct {
		layer         journal.Layer
		verdict, name string
		reason        journal.Reason
	}
	for _, w := range []want{
		{journal.LayerDNS, "refused", "evil.test", journal.ReasonNameNotAllowed},
		{journal.LayerTLS, "refused", "evil.test", journal.ReasonSNINotAllowed},
		{journal.LayerHTTP, "refused", "evil.test", journal.ReasonHostNotAllowed},
		{journal.LayerFirewall, "refused", "", journal.ReasonNoSetEntry},
		{journal.LayerDNS, "allowed", "allowed.test", journal.ReasonAllowed},
		{journal.LayerTLS, "allowed", "allowed.test", journal.ReasonAllowed},
	} {
		found := false
		for _, rec := range recs {
			if rec.Layer == w.layer && rec.Verdict == w.verdict && rec.Reason == w.reason && (w.name == "" || rec.Name == w.name) {
				found = true
				if rec.Policy != hash || rec.Agent != "sh" {
					t.Errorf("%+v: policy %q agent %q, want the run's policy %s and agent sh", w, rec.Policy, rec.Agent, hash)
				}
				if w.verdict == "allowed" && rec.Rule == "" {
					t.Errorf("%+v: an allowed record without the rule that allowed it", w)
				}
			}
		}
		if !found {
			t.Errorf("no record of %+v among %d records: %+v", w, len(recs), recs)
		}
	}
	// The agent kernel's housekeeping from :: (DAD, MLD) is dropped and
	// counted, not journaled (TestSpoofedSourceDropped shows that a real
	// spoofed source is).
	for _, rec := range recs {
		if rec.Reason == journal.ReasonSpoofed {
			t.Errorf("housekeeping journaled as a refusal: %+v", rec)
		}
	}
	// The filters, through the command line.
	for _, f := range [][]string{{"--layer", "dns", "--verdict", "refused"}, {"--host", "test"}, {"--reason", "no_set_entry"}} {
		got := listJournal(t, path, f...)
		if len(got) == 0 {
			t.Errorf("journal list %v: nothing", f)
		}
		for _, rec := range got {
			if f[0] == "--layer" && (rec.Layer != "dns" || rec.Verdict != "refused") || f[0] == "--reason" && rec.Reason != "no_set_entry" ||
				f[0] == "--host" && !strings.HasSuffix(rec.Name, ".test") {
				t.Errorf("journal list %v printed %+v", f, rec)
			}
		}
	}
	out, code := journalCmd(t, "verify", "--journal", path)
	if code != 0 || !strings.Contains(out, "records verified") {
		t.Fatalf("journal verify: exit %d: %s", code, out)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	if err := db.QueryRow("SELECT name FROM records WHERE id = 2").Scan(&name); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ stmt, want string }{
		{"UPDATE records SET name = 'edited.test.' WHERE id = 2", "record 2: its content does not match"},
		{"UPDATE records SET name = '" + name + "' WHERE id = 2", ""},
		{"DELETE FROM records WHERE id = 3", "record 4: its link does not match"},
	} {
		if _, err := db.Exec(tc.stmt); err != nil {
			t.Fatal(err)
		}
		out, code := journalCmd(t, "verify", "--journal", path)
		if tc.want == "" && code != 0 || tc.want != "" && (code == 0 || !strings.Contains(out, tc.want)) {
			t.Errorf("verify after %q: exit %d, %q; want %q", tc.stmt, code, out, tc.want)
		}
	}
}

// TestJournalSurvivesKill: records the journal acknowledged (committed:
// a reader sees them) are all there after a kill -9 of sluice in the
// middle of a flood of refusals, the chain verifies, and the next run
// goes on with it.
func TestJournalSurvivesKill(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(t.TempDir(), "journal.db")
	// Unique names, so that nothing is coalesced: a record each; twenty
	// to a dig, so that a loaded machine's process starts do not pace it.
	a := startAgent(t, w, []string{"--journal", path}, `i=0; while :; do i=$((i+1)); dig +tries=1 +time=1 +short $(seq -f "n$i-%g.evil.test" 20) >/dev/null; done`)
	var seen int64
	waitFor(t, func() bool {
		if !fileExists(path) {
			return false
		}
		if recs := listJournal(t, path, "--limit", "1"); len(recs) > 0 {
			seen = recs[0].ID
		}
		return seen >= 200
	})
	a.kill(t)
	out, code := journalCmd(t, "verify", "--journal", path)
	if code != 0 {
		t.Fatalf("verify after kill -9: exit %d: %s", code, out)
	}
	recs := listJournal(t, path, "--limit", "10000")
	if int64(len(recs)) < seen || recs[len(recs)-1].ID != 1 {
		t.Errorf("after kill -9: %d records (oldest %d); %d were committed before it", len(recs), recs[len(recs)-1].ID, seen)
	}
	w.run(t, []string{"--journal", path}, "dig +short after.evil.test >/dev/null")
	if out, code := journalCmd(t, "verify", "--journal", path); code != 0 {
		t.Errorf("verify after the next run: exit %d: %s", code, out)
	}
	if got := listJournal(t, path, "--host", "after.evil.test"); len(got) == 0 {
		t.Error("the next run's refusal is not in the journal")
	}
}
