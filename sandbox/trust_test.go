package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestCleanupTrustsOnlyRootsRecords: a state directory or record that
// someone but root could have written is refused before anything in it
// is acted on (cleanup kills and removes what records name, as root).
func TestCleanupTrustsOnlyRootsRecords(t *testing.T) {
	nstest.RequireRoot(t) // the records are root's: making them so needs root
	dir := t.TempDir()
	record := filepath.Join(dir, "netns-1-agent-x.json")
	if err := os.WriteFile(record, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := TrustedDir(dir); err != nil {
		t.Fatalf("root's 0700 directory and 0600 record: %v", err)
	}
	if err := os.Chmod(record, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Cleanup(CleanupConfig{Dir: dir, DryRun: true}); err == nil || !strings.Contains(err.Error(), "is not root's alone") {
		t.Errorf("a record others may write: %v, want refused", err)
	}
	if err := os.Chmod(record, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(record, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := TrustedDir(dir); err == nil {
		t.Error("a record owned by nobody was trusted")
	}
	if err := os.Chown(record, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := TrustedDir(dir); err == nil {
		t.Error("a directory anyone may write was trusted")
	}
}
