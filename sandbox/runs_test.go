package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/testing/nstest"
)

// writeTestRecord writes s as the record of agent s.Name of the namespace
// cookie in dir, and returns its path.
func writeTestRecord(t *testing.T, dir string, cookie uint64, s *State) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("netns-%d-agent-%s.json", cookie, s.Name))
	if err := writeRecord(path, s); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunsLiveness: a run is alive while the process that wrote its
// record runs, and dead once its pid is gone or taken by another
// process; records written before status existed read too, their start
// worked out from the process's.
func TestRunsLiveness(t *testing.T) {
	dir := t.TempDir()
	self := processStart(os.Getpid())
	boot := bootTime()
	if boot.IsZero() {
		t.Fatal("no boot time in /proc/stat")
	}
	started := boot.Add(time.Hour).Round(0)
	for _, r := range []Record{
		{PID: os.Getpid(), Start: self, Slot: Slot{Name: "live", Table: "sluice-live", Iface: "sl1"},
			Command: []string{"sleep", "60"}, PolicyHash: "abc", Started: started.Add(time.Hour), NetNS: "gw", NetNSInode: 7},
		{PID: os.Getpid(), Start: "1", Slot: Slot{Name: "reused"}, Started: started},
		{PID: 1 << 30, Start: self, Slot: Slot{Name: "gone"}, Started: started.Add(time.Minute)},
	} {
		writeTestRecord(t, dir, 42, &State{Record: r})
	}
	// As a version without the status fields wrote it.
	old := `{"pid":1073741824,"start":"100","name":"old","table":"sluice-old","iface":"sl9","log_group":9323,"nets":["198.19.255.252/30"],"files":["/nonexistent"]}`
	if err := os.WriteFile(filepath.Join(dir, "netns-43-agent-old.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"netns-42-forwarding.json", "lock", "netns-42-agent-x.json.tmp", "ca"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := Runs(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name    string
		alive   bool
		started time.Time
		cookie  uint64
	}{
		{"old", false, boot.Add(time.Second), 43}, // 100 ticks after boot
		{"reused", false, started, 42},
		{"gone", false, started.Add(time.Minute), 42},
		{"live", true, started.Add(time.Hour), 42},
	}
	if len(runs) != len(want) {
		t.Fatalf("got %d runs, want %d: %+v", len(runs), len(want), runs)
	}
	for i, w := range want {
		r := runs[i]
		if r.Name != w.name || r.Alive != w.alive || !r.Started.Equal(w.started) || r.Cookie != w.cookie {
			t.Errorf("run %d: got %s alive=%v started=%v cookie=%d, want %s alive=%v started=%v cookie=%d",
				i, r.Name, r.Alive, r.Started, r.Cookie, w.name, w.alive, w.started, w.cookie)
		}
	}
	live := runs[3]
	if !slices.Equal(live.Command, []string{"sleep", "60"}) || live.PolicyHash != "abc" || live.NetNS != "gw" || live.Table != "sluice-live" {
		t.Errorf("the live run's record read as %+v", live)
	}
}

// TestRunsUnreadable: a record that does not read is reported beside the
// runs that do; a missing directory holds no runs.
func TestRunsUnreadable(t *testing.T) {
	if runs, err := Runs(filepath.Join(t.TempDir(), "none")); runs != nil || err != nil {
		t.Errorf("a missing directory: %v, %v", runs, err)
	}
	dir := t.TempDir()
	writeTestRecord(t, dir, 1, &State{Record: Record{PID: 1 << 30, Slot: Slot{Name: "a"}}})
	bad := filepath.Join(dir, "netns-1-agent-bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	runs, err := Runs(dir)
	if len(runs) != 1 || err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("got %v, %v; want run a and an error naming %s", runs, err, bad)
	}
}

func TestAgentRecordCookie(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cookie uint64
		ok     bool
	}{
		{"netns-4097-agent-sh.json", 4097, true},
		{"netns-1-agent-a-agent-b.json", 1, true},
		{"netns-4097-forwarding.json", 0, false},
		{"netns-4097-agent-sh.json.tmp", 0, false},
		{"netns-x-agent-sh.json", 0, false},
		{"netns-1-agent-.json", 0, false},
		{"lock", 0, false},
	} {
		cookie, ok := agentRecordCookie(tc.name)
		if cookie != tc.cookie || ok != tc.ok {
			t.Errorf("%s: got %d, %v; want %d, %v", tc.name, cookie, ok, tc.cookie, tc.ok)
		}
	}
}

func TestUptime(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		run  Run
		want time.Duration
	}{
		{Run{Alive: true, Started: now.Add(-90 * time.Second)}, 90 * time.Second},
		{Run{Alive: false, Started: now.Add(-90 * time.Second)}, 0},
		{Run{Alive: true}, 0},
		{Run{Alive: true, Started: now.Add(time.Second)}, 0}, // a clock stepped back
	} {
		if got := tc.run.Uptime(now); got != tc.want {
			t.Errorf("%+v: uptime %v, want %v", tc.run, got, tc.want)
		}
	}
}

func TestTicksSince(t *testing.T) {
	boot := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		boot  time.Time
		ticks string
		want  time.Time
	}{
		{boot, "250", boot.Add(2500 * time.Millisecond)},
		{boot, "", time.Time{}},
		{boot, "gone", time.Time{}},
		{time.Time{}, "250", time.Time{}},
	} {
		if got := ticksSince(tc.boot, tc.ticks); !got.Equal(tc.want) {
			t.Errorf("ticksSince(%v, %q) = %v, want %v", tc.boot, tc.ticks, got, tc.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/run/netns/gw`:          "/run/netns/gw",
		`/run/netns/a\040b`:      "/run/netns/a b",
		`/x\134y`:                `/x\y`,
		`/trailing\04`:           `/trailing\04`,
		`/run/docker/netns/a\01`: `/run/docker/netns/a\01`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// sleeper starts a process that stands for a dead run's agent, and
// returns its pid and start time; it is killed when the test ends.
func sleeper(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, processStart(cmd.Process.Pid)
}

// killedBySIGKILL waits for cmd and says whether SIGKILL ended it.
func killedBySIGKILL(cmd *exec.Cmd) bool {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		return false
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestCleanupGoneNamespace: the dead runs of a gateway namespace that no
// longer exists (no namespace has its cookie) lose their agents, files
// and records, and the namespace its forwarding record; nothing of the
// kernel is asked to go, and a live run elsewhere stays.
func TestCleanupGoneNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	agent, agentStart := sleeper(t)
	file := filepath.Join(dir, "gone.resolv.conf")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const gone = 1<<63 + 12345 // no namespace has had this cookie
	dead := writeTestRecord(t, dir, gone, &State{Record: Record{PID: 1 << 30, Start: "1", Slot: Slot{Name: "dead", Table: "sluice-dead", Iface: "lo"},
		AgentPID: agent.Process.Pid, AgentStart: agentStart, Files: []string{file}, NetNS: "gw", NetNSInode: 1}})
	// An older record, with no inode: every namespace is looked at.
	older := writeTestRecord(t, dir, gone+1, &State{Record: Record{PID: 1 << 30, Start: "1", Slot: Slot{Name: "older", Iface: "lo"}}})
	fwd := filepath.Join(dir, fmt.Sprintf("netns-%d-forwarding.json", uint64(gone)))
	if err := os.WriteFile(fwd, []byte(`{"sysctls":[{"path":"net/ipv4/ip_forward","value":"0"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	live := writeTestRecord(t, dir, gone+2, &State{Record: Record{PID: os.Getpid(), Start: processStart(os.Getpid()), Slot: Slot{Name: "live"}}})
	recovered := false
	cfg := CleanupConfig{Dir: dir, DryRun: true, Recover: func() ([]string, error) { recovered = true; return nil, nil }}

	done, err := Cleanup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`the gateway namespace "gw" (cookie 9223372036854788153) is gone, and the links and tables of its runs with it`,
		fmt.Sprintf("would kill the agent dead (pid %d)", agent.Process.Pid),
		"would remove " + file,
		"would remove the record of agent dead (pid 1073741824): " + dead,
		"would remove the record of agent older (pid 1073741824): " + older,
	} {
		if !slices.Contains(done, want) {
			t.Errorf("dry run: %q\nwant %q among them", done, want)
		}
	}
	for _, p := range []string{dead, older, fwd, file, live} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the dry run removed %s", p)
		}
	}

	cfg.DryRun = false
	if done, err = Cleanup(cfg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("killed the agent dead (pid %d)", agent.Process.Pid),
		"removed " + file,
		"removed the record of agent dead (pid 1073741824): " + dead,
		"removed the record of agent older (pid 1073741824): " + older,
		"removed the forwarding record of the namespace: " + fwd,
	} {
		if !slices.Contains(done, want) {
			t.Errorf("cleanup: %q\nwant %q among them", done, want)
		}
	}
	if slices.ContainsFunc(done, func(d string) bool { return strings.Contains(d, "link") && !strings.Contains(d, "links") }) || recovered {
		t.Errorf("cleanup of a gone namespace touched a link or entered a namespace: %q", done)
	}
	if !killedBySIGKILL(agent) {
		t.Error("the dead run's agent was not killed")
	}
	for _, p := range []string{dead, older, fwd, file} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live run's record went: %v", err)
	}
}

// TestCleanupInNamespace: the dead runs of a namespace that exists are
// undone inside it, by Recover: the link there goes (Recover's, not a
// link of that name elsewhere), the table, the record; a live run of the
// same namespace keeps its record and link. The dry run says so first
// and removes nothing.
func TestCleanupInNamespace(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-st")
	dir := t.TempDir()
	var removed []string
	cfg := StateConfig{Dir: dir, RemoveTable: func(name string) (bool, error) { removed = append(removed, name); return true, nil }}
	var deadPath, livePath, oldPath string
	err := ns.Do(func() error {
		claim := func(s Slot) (*State, error) {
			c := cfg
			c.Choose = func([]Holder) (Slot, error) { return s, nil }
			st, _, err := Claim(c)
			return st, err
		}
		dead, err := claim(slot("dead", 1))
		if err != nil {
			return err
		}
		live, err := claim(slot("live", 2))
		if err != nil {
			return err
		}
		if err := live.SetCommand([]string{"sh", "-c", "sleep 60"}); err != nil {
			return err
		}
		if err := live.SetPolicy("f00d"); err != nil {
			return err
		}
		dead.Start = "gone"
		deadPath, livePath = dead.path, live.path
		// A dead run's record as a version before status wrote it: no
		// inode says where its namespace is, the cookie alone.
		cookie, err := netnsCookie()
		if err != nil {
			return err
		}
		oldPath = filepath.Join(dir, fmt.Sprintf("netns-%d-agent-old.json", cookie))
		old := `{"pid":1073741824,"start":"1","name":"old","table":"sluice-old","iface":"slt3","log_group":103,"nets":["198.19.255.12/30"]}`
		if err := os.WriteFile(oldPath, []byte(old), 0o600); err != nil {
			return err
		}
		return dead.save()
	})
	if err != nil {
		t.Fatal(err)
	}
	// What a claim records for status: the namespace, when, and what the
	// run said of itself.
	runs, err := Runs(dir)
	if err != nil || len(runs) != 3 {
		t.Fatalf("runs: %+v, %v", runs, err)
	}
	for _, r := range runs[1:] { // the old record's first: its process started before the test
		if r.NetNS != ns.Name || r.state.NetNSInode == 0 || time.Since(r.Started) > time.Minute || r.Alive != (r.Name == "live") {
			t.Errorf("run %s: netns %q (inode %d), started %v, alive %v", r.Name, r.NetNS, r.state.NetNSInode, r.Started, r.Alive)
		}
		if r.Name == "live" && (!slices.Equal(r.Command, []string{"sh", "-c", "sleep 60"}) || r.PolicyHash != "f00d") {
			t.Errorf("the live run's command %q, policy %q", r.Command, r.PolicyHash)
		}
	}
	for _, l := range []string{"slt1", "slt2", "slt3"} {
		ns.Run(t, "ip", "link", "add", l, "type", "veth", "peer", "name", l+"p")
	}
	// A link of the dead run's name outside its namespace is another's.
	other := nstest.New(t, nstest.Prefix()+"-ot")
	other.Run(t, "ip", "link", "add", "slt1", "type", "veth", "peer", "name", "slt1p")

	recover := func() ([]string, error) { return Recover(cfg) }
	// Cleanup runs from another namespace, which has a link of the dead
	// run's name too.
	cleanup := func(cfg CleanupConfig) (done []string) {
		t.Helper()
		if err := other.Do(func() error { var err error; done, err = Cleanup(cfg); return err }); err != nil {
			t.Fatal(err)
		}
		return done
	}
	done := cleanup(CleanupConfig{Dir: dir, DryRun: true, Recover: recover})
	want := []string{
		"would remove link slt3", "would remove table inet sluice-old", "would remove the record of agent old (pid 1073741824): " + oldPath,
		"would remove link slt1", "would remove table inet sluice-dead", fmt.Sprintf("would remove the record of agent dead (pid %d): %s", os.Getpid(), deadPath),
	}
	if !slices.Equal(done, want) {
		t.Errorf("dry run: %q\nwant %q", done, want)
	}
	if !strings.Contains(ns.Run(t, "ip", "-br", "link"), "slt1") || len(removed) > 0 {
		t.Error("the dry run removed something")
	}

	done = cleanup(CleanupConfig{Dir: dir, Recover: recover})
	want = []string{ // the links of all first, in one request
		"removed link slt1", "removed link slt3",
		"removed table inet sluice-dead", fmt.Sprintf("removed the record of agent dead (pid %d): %s", os.Getpid(), deadPath),
		"removed table inet sluice-old", "removed the record of agent old (pid 1073741824): " + oldPath,
	}
	if !slices.Equal(done, want) {
		t.Errorf("cleanup: %q\nwant %q", done, want)
	}
	links := ns.Run(t, "ip", "-br", "link")
	if strings.Contains(links, "slt1") || strings.Contains(links, "slt3") || !strings.Contains(links, "slt2") {
		t.Errorf("links of the namespace after cleanup:\n%s", links)
	}
	if !strings.Contains(other.Run(t, "ip", "-br", "link"), "slt1") {
		t.Error("cleanup removed a link of the dead run's name in another namespace")
	}
	if _, err := os.Stat(livePath); err != nil {
		t.Errorf("the live run's record: %v", err)
	}
	for _, p := range []string{deadPath, oldPath} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the dead run's record %s: %v", p, err)
		}
	}
}

// TestCleanupReportsWhatStays: a dead run that Recover could not undo
// (its record stays) is an error of Cleanup's, naming it.
func TestCleanupReportsWhatStays(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	cookie, err := netnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	path := writeTestRecord(t, dir, cookie, &State{Record: Record{PID: 1 << 30, Start: "1", Slot: Slot{Name: "stuck"}}})
	entered := false
	_, err = Cleanup(CleanupConfig{Dir: dir, Recover: func() ([]string, error) {
		entered = true
		return []string{"remove the link slt1 of an earlier run: busy"}, nil
	}})
	if !entered || err == nil || !strings.Contains(err.Error(), "agent stuck (pid 1073741824) is not cleaned up: its record "+path+" stays") {
		t.Errorf("cleanup of a run whose record stays: entered %v, %v", entered, err)
	}
}
