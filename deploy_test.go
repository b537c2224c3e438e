package sluice_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The systemd unit of `sluice serve` (deploy/systemd) and what
// deploy/README.md says of it.
const (
	unitFile   = "deploy/systemd/sluice.service"
	unitBinary = "/usr/local/bin/sluice" // ExecStart's, where the README installs it
	deployDoc  = "deploy/README.md"
	// maxExposure is the unit's `systemd-analyze security` exposure
	// (3.2 with systemd 252) and half a point: a change that loosens the
	// sandbox more than that fails here, and must be argued in the README
	// with a new figure.
	maxExposure = 3.7
)

// unitCapabilities are the capabilities the unit grants, all of them:
// deploy/README.md says where sluice uses each, and why the others it
// names are left out.
var unitCapabilities = []string{"CAP_KILL", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE"}

// unitSettings reads the values of every key of a unit file, in order,
// with continuation lines joined; comments and section headers are
// skipped (the unit has no key in two sections).
func unitSettings(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", unitFile, line)
		}
		out[strings.TrimSpace(k)] = append(out[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return out
}

// grantedCapabilities is the bounding set the settings give: every
// CapabilityBoundingSet= line adds to it. A '~' line (which removes) is
// a problem: the unit lists what it grants.
func grantedCapabilities(settings map[string][]string) (caps, problems []string) {
	for _, v := range settings["CapabilityBoundingSet"] {
		if strings.HasPrefix(v, "~") || v == "" {
			problems = append(problems, "CapabilityBoundingSet="+v+": list the capabilities granted, each line adding to the set")
			continue
		}
		caps = append(caps, strings.Fields(v)...)
	}
	slices.Sort(caps)
	return slices.Compact(caps), problems
}

// documentedCapabilities reads the capability table of deploy/README.md:
// the rows "| `CAP_X` | yes | ..." are the capabilities it says the unit
// grants, "| `CAP_X` | no | ..." those it says it leaves out.
func documentedCapabilities(t *testing.T) (granted, left []string) {
	t.Helper()
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(CAP_[A-Z_]+)` \\| (yes|no) \\|")
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		if m[2] == "yes" {
			granted = append(granted, m[1])
		} else {
			left = append(left, m[1])
		}
	}
	slices.Sort(granted)
	return granted, left
}

// TestUnitCapabilities: the unit grants exactly unitCapabilities, as a
// bounding set (the service runs as root, so it holds them all, and no
// ambient set), and deploy/README.md's table documents exactly those.
func TestUnitCapabilities(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	settings := unitSettings(t, data)
	want := slices.Sorted(slices.Values(unitCapabilities))
	got, problems := grantedCapabilities(settings)
	for _, p := range problems {
		t.Errorf("%s: %s", unitFile, p)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s grants %v; want exactly %v (a capability added or removed is argued in %s, and listed in unitCapabilities)", unitFile, got, want, deployDoc)
	}
	for _, key := range []string{"AmbientCapabilities", "User", "DynamicUser", "PrivateUsers"} {
		if v, ok := settings[key]; ok {
			t.Errorf("%s sets %s=%v: the unit runs as root with a bounding set; a change of that model is argued in %s", unitFile, key, v, deployDoc)
		}
	}
	granted, left := documentedCapabilities(t)
	if !slices.Equal(granted, want) {
		t.Errorf("%s's capability table grants %v; the unit grants %v", deployDoc, granted, want)
	}
	if len(left) < 4 {
		t.Errorf("%s's capability table leaves out %v; the scan is wrong, or the table lost the capabilities it says are not needed", deployDoc, left)
	}
}

// TestUnitCapabilitiesCatch: the reading above sees every line of the
// set, continued lines too, and refuses one that removes.
func TestUnitCapabilitiesCatch(t *testing.T) {
	for _, tc := range []struct {
		unit     string
		want     []string
		problems int
	}{
		{"CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"}, 0},
		{"[Service]\nCapabilityBoundingSet=CAP_NET_ADMIN \\\n  CAP_SYS_PTRACE\n", []string{"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}, 0},
		{"CapabilityBoundingSet=CAP_NET_ADMIN\nCapabilityBoundingSet=~CAP_SYS_ADMIN\n", []string{"CAP_NET_ADMIN"}, 1},
	} {
		got, problems := grantedCapabilities(unitSettings(t, []byte(tc.unit)))
		if !slices.Equal(got, tc.want) || len(problems) != tc.problems {
			t.Errorf("%q: got %v and %d problems %v, want %v and %d", tc.unit, got, len(problems), problems, tc.want, tc.problems)
		}
	}
}

// systemdAnalyze returns the path of systemd-analyze, or skips the test
// when there is none; under CI (CI set, as CI services set it) it fails
// instead, since the Makefile installs it (package systemd).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("systemd-analyze not found with CI=%s: `make deps` installs it (Debian package systemd)", os.Getenv("CI"))
		}
		t.Skip("systemd-analyze not found (Debian/Ubuntu: apt-get install systemd, or sudo make deps): the unit is not verified")
	}
	return path
}

// buildSluice builds cmd/sluice into a directory of the test's own.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, out)
	}
	return bin
}

// unitWithBinary writes the unit into a directory of the test's own, as
// sluice.service, with ExecStart naming bin instead of unitBinary (which
// verify needs to exist, and which this machine need not have).
func unitWithBinary(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(data, []byte("ExecStart="+unitBinary+" ")) != 1 {
		t.Fatalf("%s: want one ExecStart=%s line", unitFile, unitBinary)
	}
	data = bytes.Replace(data, []byte("ExecStart="+unitBinary+" "), []byte("ExecStart="+bin+" "), 1)
	path := filepath.Join(t.TempDir(), "sluice.service")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnitVerify: `systemd-analyze verify` passes the unit without a word
// (it checks every key and value, and that the commands exist), and the
// example config it starts with passes `sluice check` without a warning.
func TestUnitVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	bin := buildSluice(t)
	unit := unitWithBinary(t, bin)
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s (%s with ExecStart=%s): %v\n%s", unitFile, unit, bin, err, out)
	}
	var stdout, stderr bytes.Buffer
	check := exec.Command(bin, "check", "deploy/systemd/sluice.yaml")
	check.Stdout, check.Stderr = &stdout, &stderr
	if err := check.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("sluice check deploy/systemd/sluice.yaml: %v\n%s%s", err, stdout.String(), stderr.String())
	}
}

// exposureLine finds the overall exposure level that `systemd-analyze
// security` prints last.
var exposureLine = regexp.MustCompile(`Overall exposure level for sluice\.service: ([0-9]+\.[0-9]+)`)

// TestUnitSecurity: `systemd-analyze security` rates the unit's sandbox
// no worse than maxExposure.
func TestUnitSecurity(t *testing.T) {
	analyze := systemdAnalyze(t)
	unit := unitWithBinary(t, "/bin/true") // security reads the unit alone
	out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("unrecognized option")) && os.Getenv("CI") == "" {
		t.Skipf("this systemd-analyze cannot rate a unit file (--offline came with systemd 252): %s", bytes.TrimSpace(out))
	}
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in the output of systemd-analyze security:\n%s", out)
	}
	got, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure level %.1f (at most %.1f)", got, maxExposure)
	if got > maxExposure {
		t.Errorf("systemd-analyze security rates %s %.1f, above %.1f: the sandbox was loosened (what it says of each setting:)\n%s", unitFile, got, maxExposure, out)
	}
}
