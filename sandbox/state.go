package sandbox

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultStateDir holds one record per gateway namespace that a sluice
// run is using: what it created and which sysctls it changed, so that the
// next start after a crash can undo it.
const DefaultStateDir = "/run/sluice"

// StateConfig says where a run's record lives and how to undo what a dead
// run left behind.
type StateConfig struct {
	// Dir holds the records; DefaultStateDir when empty.
	Dir string
	// Table is the name of the run's nftables table.
	Table string
	// Iface is the gateway's end of the agent's link.
	Iface string
	// RemoveTable deletes a dead run's table and reports whether there
	// was one. It is the caller's (sandbox knows no nftables), and runs
	// after the dead run's agent and link are gone.
	RemoveTable func(name string) (bool, error)
}

// State is the record of what one run changed in its gateway namespace.
type State struct {
	PID   int    `json:"pid"`
	Start string `json:"start"` // the process's start time, against PID reuse
	Table string `json:"table"`
	Iface string `json:"iface"`
	// AgentPID and AgentStart identify the first process of the agent's
	// PID namespace: killing it ends every process of the agent.
	AgentPID   int    `json:"agent_pid,omitempty"`
	AgentStart string `json:"agent_start,omitempty"`
	// Sysctls lists each sysctl sluice changed with the value it had
	// before, in the order they were changed.
	Sysctls []Sysctl `json:"sysctls"`
	// Files are files the run created, removed by the next start if the
	// run could not.
	Files []string `json:"files,omitempty"`

	path        string
	removeTable func(string) (bool, error)
	mu          sync.Mutex
}

// Sysctl is one setting and the value to restore.
type Sysctl struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

// ErrBusy means another live sluice already uses this gateway namespace.
var ErrBusy = errors.New("another sluice is running in this network namespace")

// Claim records that this process now owns the table and link names in the
// current network namespace. If a previous owner died without cleaning up,
// its agent, link, table and sysctls are undone first, and what was undone
// is returned for the caller to report.
func Claim(cfg StateConfig) (*State, []string, error) {
	cookie, err := netnsCookie()
	if err != nil {
		return nil, nil, fmt.Errorf("identify network namespace: %w", err)
	}
	dir := cmp.Or(cfg.Dir, DefaultStateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("netns-%d.json", cookie))
	var undone []string
	if old, err := readState(path); err == nil {
		if old.PID != os.Getpid() && processStart(old.PID) == old.Start {
			return nil, nil, fmt.Errorf("%w (pid %d); stop it or run in another namespace", ErrBusy, old.PID)
		}
		old.removeTable = cfg.RemoveTable
		if undone, err = old.undo(); err != nil {
			return nil, undone, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	s := &State{PID: os.Getpid(), Start: processStart(os.Getpid()), Table: cfg.Table, Iface: cfg.Iface, path: path, removeTable: cfg.RemoveTable}
	if err := s.save(); err != nil {
		return nil, undone, err
	}
	return s, undone, nil
}

// Dir is the directory of the record, where the run's own files go too.
func (s *State) Dir() string { return filepath.Dir(s.path) }

// netnsCookie identifies the current network namespace for as long as the
// system runs; unlike its inode number, a cookie is never reused.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	const soNetnsCookie = 71 // SO_NETNS_COOKIE, Linux 5.14
	b := make([]byte, 8)
	n := uint32(len(b))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, soNetnsCookie,
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", errno)
	}
	return binary.NativeEndian.Uint64(b), nil
}

func readState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("corrupt state file: %w", err)
	}
	s.path = path
	return &s, nil
}

// undo removes what a dead run left behind and says what it did. The
// agent goes first, its processes and then its link, and the table last:
// the dead run's agent is by design still running (cut off by the table),
// and with the table gone before the link it would forward anything,
// anywhere, unfiltered.
func (s *State) undo() ([]string, error) {
	var done []string
	if s.AgentPID > 0 && processStart(s.AgentPID) == s.AgentStart {
		if syscall.Kill(s.AgentPID, syscall.SIGKILL) == nil {
			done = append(done, fmt.Sprintf("killed the agent (pid %d)", s.AgentPID))
		}
	}
	if s.Iface != "" {
		existed, err := DeleteLink(s.Iface)
		if err != nil {
			// The table stays, and so does the record: with the link still
			// there, the table is all that holds the agent (its heartbeat
			// has lapsed, so it refuses everything).
			return done, fmt.Errorf("remove the link %s of an earlier run: %w", s.Iface, err)
		}
		if existed {
			done = append(done, "removed link "+s.Iface)
		}
	}
	if s.removeTable != nil && s.Table != "" {
		if existed, err := s.removeTable(s.Table); existed && err == nil {
			done = append(done, "removed table inet "+s.Table)
		}
	}
	for _, sc := range slices.Backward(s.Sysctls) {
		if cur, err := readSysctl(sc.Path); err == nil && cur != sc.Value && writeSysctl(sc.Path, sc.Value) == nil {
			done = append(done, "restored "+sc.Path+"="+sc.Value)
		}
	}
	for _, f := range s.Files {
		if os.Remove(f) == nil {
			done = append(done, "removed "+f)
		}
	}
	_ = os.Remove(s.path)
	return done, nil
}

// SetAgent records the first process of the agent's PID namespace, so
// that the next start after a crash can end the agent before it removes
// the link and the table.
func (s *State) SetAgent(pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.AgentPID, s.AgentStart = pid, processStart(pid)
	return s.save()
}

// WriteFile creates a file that belongs to this run, recorded first so
// that a crash cannot leave it behind for good; Release removes it.
func (s *State) WriteFile(path string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Files = append(s.Files, path)
	if err := s.save(); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func (s *State) save() error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// SetSysctl sets a sysctl of the gateway namespace, recording its old
// value first (on disk, before the change) so a crash cannot lose it.
func (s *State) SetSysctl(path, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := readSysctl(path)
	if err != nil {
		return err
	}
	if old == value {
		return nil
	}
	s.Sysctls = append(s.Sysctls, Sysctl{Path: path, Value: old})
	if err := s.save(); err != nil {
		return err
	}
	return writeSysctl(path, value)
}

// Release restores the sysctls and removes the record. The table and link
// are the caller's to remove before.
func (s *State) Release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sc := range slices.Backward(s.Sysctls) {
		if err := writeSysctl(sc.Path, sc.Value); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", sc.Path, sc.Value, err))
		}
	}
	for _, f := range s.Files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// processStart returns field 22 of /proc/PID/stat (start time in clock
// ticks), or "" if there is no such process.
func processStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after it do not.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// ForwardingPlan says which forwarding sysctls are off and would have to be
// switched on, which is also where the ruleset must guard against opening
// paths between the host's other interfaces.
type ForwardingPlan struct {
	Enable4, Enable6 bool
}

// PlanForwarding reads the current forwarding settings.
func PlanForwarding(ipv6 bool) (ForwardingPlan, error) {
	v4, err := readSysctl("net/ipv4/ip_forward")
	if err != nil {
		return ForwardingPlan{}, err
	}
	p := ForwardingPlan{Enable4: v4 != "1"}
	if ipv6 {
		v6, err := readSysctl("net/ipv6/conf/all/forwarding")
		if err != nil {
			return p, err
		}
		p.Enable6 = v6 != "1"
	}
	return p, nil
}

// EnableForwarding switches on what the plan says. For IPv6, interfaces that
// accept router advertisements would stop doing so once forwarding is on
// (and lose their default route), so they are first told to accept them
// anyway (accept_ra=2); every change is recorded in s and undone by Release.
func (s *State) EnableForwarding(p ForwardingPlan) error {
	if p.Enable4 {
		if err := s.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	if p.Enable6 {
		dirs, _ := filepath.Glob("/proc/sys/net/ipv6/conf/*/accept_ra")
		for _, d := range dirs {
			rel := strings.TrimPrefix(d, "/proc/sys/")
			if v, err := readSysctl(rel); err == nil && v == "1" && !strings.Contains(rel, "/all/") {
				if err := s.SetSysctl(rel, "2"); err != nil {
					return err
				}
			}
		}
		if err := s.SetSysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return nil
}
