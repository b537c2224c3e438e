package sandbox

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Run is what an agent's record says of its run, and whether the sluice
// that wrote it still lives: what `sluice status` shows. Fields that
// records written by older versions lack are zero.
type Run struct {
	Name string
	// PID is sluice's; Alive says it still runs (the same process, not a
	// reuse of its pid). A live sluice keeps its gateway namespace, so a
	// run whose namespace is gone is dead.
	PID   int
	Alive bool
	// Started is when the run started (for older records, worked out from
	// the start time of its process); zero when unknown.
	Started    time.Time
	Command    []string
	PolicyHash string
	// NetNS is the gateway namespace's name under /run/netns ("" when it
	// had none, as the host's has not), Cookie its cookie.
	NetNS  string
	Cookie uint64
	Table  string
	Iface  string
	// AgentPID is the first process of the agent, 0 before it started.
	AgentPID int
	// AgentNetNS names the agent's namespace under NetNSDir when it has a
	// name (see State.AgentNetNS); ResolvConf and CABundle are the files
	// a command started in it gets (see State.ResolvConf).
	AgentNetNS           string
	ResolvConf, CABundle string
	// Forwarding says the run holds the forwarding sluice switched on.
	Forwarding bool
	// Router says the agent is the clients behind Iface, an interface of
	// the user's (router mode): it has no namespace.
	Router bool
	// Record is the path of the record.
	Record string

	state *State
}

// Uptime is how long a live run has been running at now; 0 for a dead
// one, or when its start is unknown.
func (r Run) Uptime(now time.Time) time.Duration {
	if !r.Alive || r.Started.IsZero() {
		return 0
	}
	return max(now.Sub(r.Started), 0)
}

// Runs reads the records of every agent in dir (DefaultStateDir when
// empty), those of every gateway namespace, oldest run first. A directory
// that does not exist holds no runs. Records that do not read are
// reported in the error, after the runs that did; a directory that does
// not read is the error alone (errors.Is(err, fs.ErrPermission) when it
// is root's).
func Runs(dir string) ([]Run, error) {
	dir = cmp.Or(dir, DefaultStateDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read the records in %s: %w", dir, err)
	}
	boot := bootTime()
	var runs []Run
	var errs []error
	for _, e := range entries {
		cookie, ok := agentRecordCookie(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(dir, e.Name())
		s, err := readState(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("the record %s does not read: %w", path, err))
			continue
		}
		runs = append(runs, s.run(cookie, boot))
	}
	slices.SortStableFunc(runs, func(a, b Run) int {
		return cmp.Or(a.Started.Compare(b.Started), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Record, b.Record))
	})
	return runs, errors.Join(errs...)
}

// agentRecordCookie returns the namespace cookie of an agent record's
// file name ("netns-COOKIE-agent-NAME.json"), or false if name is not
// one.
func agentRecordCookie(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, "netns-")
	if !ok || !strings.HasSuffix(rest, ".json") {
		return 0, false
	}
	num, agent, ok := strings.Cut(rest, "-agent-")
	if !ok || agent == ".json" {
		return 0, false
	}
	cookie, err := strconv.ParseUint(num, 10, 64)
	return cookie, err == nil
}

func (s *State) run(cookie uint64, boot time.Time) Run {
	started := s.Started
	if started.IsZero() {
		started = ticksSince(boot, s.Start)
	}
	return Run{
		Name: s.Name, PID: s.PID, Alive: s.alive(), Started: started,
		Command: s.Command, PolicyHash: s.PolicyHash, NetNS: s.NetNS, Cookie: cookie,
		Table: s.Table, Iface: s.Iface, AgentPID: s.AgentPID, Forwarding: s.Forwarding, Router: s.Router,
		AgentNetNS: s.AgentNetNS, ResolvConf: s.ResolvConf, CABundle: s.CABundle,
		Record: s.path, state: s,
	}
}

// userHZ is the unit of the start times in /proc/PID/stat: USER_HZ, 100
// on every architecture Linux runs on (sysconf(_SC_CLK_TCK)).
const userHZ = 100

// ticksSince is the time a process started, given the boot time and its
// start time in clock ticks (field 22 of /proc/PID/stat); zero if either
// is unknown.
func ticksSince(boot time.Time, ticks string) time.Time {
	n, err := strconv.ParseUint(ticks, 10, 64)
	if err != nil || boot.IsZero() {
		return time.Time{}
	}
	return boot.Add(time.Duration(n) * (time.Second / userHZ))
}

// bootTime is when the system booted (btime of /proc/stat), zero if
// unknown.
func bootTime() time.Time {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}
