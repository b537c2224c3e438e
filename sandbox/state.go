package sandbox

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultStateDir holds the records of the agents that sluice runs, one
// per agent, named after its gateway namespace and its name: what each
// created and holds, so that the next start after a crash can undo it.
// The forwarding settings of a namespace, shared by its agents, have a
// record of their own there.
const DefaultStateDir = "/run/sluice"

// Slot is what one agent holds in its gateway namespace. No two agents of
// a namespace hold the same name, table, link or log group, nor
// overlapping networks.
type Slot struct {
	Name     string         `json:"name"`
	Table    string         `json:"table"`
	Iface    string         `json:"iface"`
	LogGroup uint16         `json:"log_group"`
	Nets     []netip.Prefix `json:"nets"`
}

// Holder is an agent that holds a slot: a live one, or a dead one whose
// link could not be removed (its table stays too, refusing everything).
type Holder struct {
	Slot
	PID int
}

// ErrBusy means another sluice holds part of the slot an agent asked for.
var ErrBusy = errors.New("is held by another sluice in this network namespace")

// Conflict says why s cannot be held beside h, or returns nil.
func (s Slot) Conflict(h Holder) error {
	busy := func(what string) error {
		return fmt.Errorf("%s %w (agent %q, pid %d)", what, ErrBusy, h.Name, h.PID)
	}
	switch {
	case s.Name == h.Name:
		return busy(fmt.Sprintf("agent name %q", s.Name))
	case s.Table == h.Table:
		return busy("table inet " + s.Table)
	case s.Iface == h.Iface:
		return busy("link " + s.Iface)
	case s.LogGroup == h.LogGroup:
		return busy(fmt.Sprintf("log group %d", s.LogGroup))
	}
	for _, n := range s.Nets {
		for _, o := range h.Nets {
			if n.Overlaps(o) {
				return busy(fmt.Sprintf("agent network %s (overlapping %s)", n, o))
			}
		}
	}
	return nil
}

// StateConfig says where the records live and how to pick and undo what
// the records name.
type StateConfig struct {
	// Dir holds the records; DefaultStateDir when empty.
	Dir string
	// Choose picks the new agent's slot, given those the namespace's other
	// agents hold. It runs under the namespace's lock, after what dead
	// runs left is gone, so that no two starts pick the same.
	Choose func(held []Holder) (Slot, error)
	// RemoveTable deletes a dead run's table and reports whether there
	// was one. It is the caller's (sandbox knows no nftables), and runs
	// after the dead run's agent and link are gone.
	RemoveTable func(name string) (bool, error)
	// ForgetFlows deletes the tracked flows from dead runs' networks (see
	// firewall.ForgetFlows), after their links are gone and before their
	// records are: a live agent forgets its own when it ends, and a new
	// agent on those networks must inherit none. It is the caller's too;
	// nil deletes none.
	ForgetFlows func(nets []netip.Prefix) error
	// SetGuard installs the guard that keeps forwarding which sluice
	// switched on from opening paths between the namespace's other
	// interfaces, exempting the agents' links (ifaces); with an empty
	// plan it removes the guard. It is the caller's too.
	SetGuard func(plan ForwardingPlan, ifaces []string) error
	// AgentNetNS, when set, names the new agent's network namespace under
	// NetNSDir (see State.AgentNetNS). Claim refuses it while a live run
	// of any gateway namespace, recorded in Dir, holds it.
	AgentNetNS string
	// Router says the new agent's link (the slot's Iface) is an existing
	// interface of the user's, router mode (see State.Router).
	Router bool
}

// State is the record of what one agent holds in its gateway namespace.
type State struct {
	Record
	path string
	ns   *namespace
	mu   sync.Mutex
}

// Record is what a State's file holds.
type Record struct {
	PID   int    `json:"pid"`
	Start string `json:"start"` // the process's start time, against PID reuse
	Slot
	// AgentPID and AgentStart identify the first process of the agent's
	// PID namespace: killing it ends every process of the agent.
	AgentPID   int    `json:"agent_pid,omitempty"`
	AgentStart string `json:"agent_start,omitempty"`
	// AgentNetNS names the agent's network namespace under NetNSDir when
	// it has a name (sluice serve's agents): the namespace outlives the
	// run, with its processes, for the next start with the same name to
	// adopt. Undoing such a run removes its link (the namespace is left
	// with no way out) and its table, and never kills its processes.
	AgentNetNS string `json:"agent_netns,omitempty"`
	// Router says the agent is the clients behind Iface, an existing
	// interface of the user's (router mode; see InterfaceAgent): sluice
	// did not make it, and undoing the run never deletes or changes it.
	// Its forwarding hold goes first, then its table.
	Router bool `json:"router,omitempty"`
	// ResolvConf and CABundle are the files a command started in the
	// agent gets as /etc/resolv.conf and as its CA bundle (see Launch),
	// for `sluice exec` to find; they are among Files. CABundle is empty
	// when the agent trusts no CA of sluice's.
	ResolvConf string `json:"resolv_conf,omitempty"`
	CABundle   string `json:"ca_bundle,omitempty"`
	// Forwarding says the agent holds the forwarding that sluice switched
	// on in the namespace (see EnableForwarding).
	Forwarding bool `json:"forwarding,omitempty"`
	// Files are files the run created, removed by the next start if the
	// run could not.
	Files []string `json:"files,omitempty"`
	// What `sluice status` shows of the run. Records written before these
	// were added lack them, and read and undo the same.
	//
	// Command is the agent's command line, PolicyHash the hash of the
	// policy in force at start, Started when the run claimed its slot.
	Command    []string  `json:"command,omitempty"`
	PolicyHash string    `json:"policy_hash,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	// NetNS names the gateway namespace (under /run/netns) when it had a
	// name, and NetNSInode is its inode: where to look for the namespace
	// whose cookie the record's file name holds (see openNetNS).
	NetNS      string `json:"netns,omitempty"`
	NetNSInode uint64 `json:"netns_inode,omitempty"`
}

// clone copies r with slices of its own.
func (r Record) clone() Record {
	r.Nets, r.Files, r.Command = slices.Clone(r.Nets), slices.Clone(r.Files), slices.Clone(r.Command)
	return r
}

// Sysctl is one setting and the value to restore.
type Sysctl struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

// forwarding is the record of the sysctls sluice changed in a namespace
// for its agents: the values they had before the first agent, restored
// when the last one that holds them is gone.
type forwarding struct {
	Sysctls []Sysctl `json:"sysctls"`
}

// namespace is the records of the current network namespace.
type namespace struct {
	cfg    StateConfig
	dir    string
	prefix string // of every record of the namespace
	cookie uint64
	inode  uint64 // 0 when unknown
}

// Claim records this process as an agent of the current network
// namespace, in the slot cfg.Choose picks. What dead runs of the
// namespace left (their agents, links, tables, files, and forwarding no
// live agent holds) is undone first, and what was undone is returned for
// the caller to report.
func Claim(cfg StateConfig) (*State, []string, error) {
	states, errs, undone, err := ClaimAll(cfg, []ClaimSpec{{AgentNetNS: cfg.AgentNetNS, Router: cfg.Router, Choose: cfg.Choose}})
	if err = cmp.Or(err, errs[0]); err != nil {
		return nil, undone, err
	}
	return states[0], undone, nil
}

// ClaimSpec is one agent of a ClaimAll: its network namespace's name
// (StateConfig.AgentNetNS), whether it is in router mode
// (StateConfig.Router) and how it picks its slot.
type ClaimSpec struct {
	AgentNetNS string
	Router     bool
	Choose     func(held []Holder) (Slot, error)
}

// ClaimAll is Claim for several agents of this process at once: one pass
// under the records' lock, with one recovery and one reading of the
// records, each agent choosing among the slots that others hold, those
// this call claimed before it included. An agent namespace that a live
// run of any gateway namespace holds is refused: two gateways would each
// remake the other's link into it. It returns a
// State or an error for each spec, in order, what the recovery undid, and
// an error that failed them all. sluice serve starts a hundred agents:
// one at a time, their claims queue for the lock.
func ClaimAll(cfg StateConfig, specs []ClaimSpec) ([]*State, []error, []string, error) {
	ns, err := openNamespace(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	states, errs := make([]*State, len(specs)), make([]error, len(specs))
	var undone []string
	err = ns.locked(func() error {
		var held []Holder
		var unread error
		undone, held, unread = ns.recover()
		if unread != nil {
			return fmt.Errorf("%w; nothing is started until it is removed (after removing the link and the table it names)", unread)
		}
		names := liveAgentNetNS(ns.dir)
		for i, spec := range specs {
			if h, ok := names[spec.AgentNetNS]; ok && spec.AgentNetNS != "" {
				errs[i] = h
				continue
			}
			slot, err := spec.Choose(held)
			if err == nil {
				for _, h := range held {
					if err = slot.Conflict(h); err != nil {
						break
					}
				}
			}
			if err != nil {
				errs[i] = err
				continue
			}
			s := &State{Record: Record{PID: os.Getpid(), Start: processStart(os.Getpid()), Slot: slot, AgentNetNS: spec.AgentNetNS, Router: spec.Router,
				Started: time.Now(), NetNS: netnsName(ns.inode), NetNSInode: ns.inode},
				path: ns.prefix + "agent-" + slot.Name + ".json", ns: ns}
			if errs[i] = s.save(); errs[i] == nil {
				states[i] = s
				if spec.AgentNetNS != "" { // and not twice in this call
					names[spec.AgentNetNS] = fmt.Errorf("the agent namespace %s is claimed twice", spec.AgentNetNS)
				}
				held = append(held, Holder{Slot: slot, PID: s.PID})
			}
		}
		return nil
	})
	return states, errs, undone, err
}

// liveAgentNetNS maps the agent namespace names that live runs of any
// gateway namespace hold to the error that refuses each (see ClaimAll).
// Call it under the lock.
func liveAgentNetNS(dir string) map[string]error {
	out := map[string]error{}
	paths, _ := filepath.Glob(filepath.Join(dir, "netns-*-agent-*.json"))
	for _, p := range paths {
		s, err := readState(p)
		if err == nil && s.AgentNetNS != "" && s.alive() {
			out[s.AgentNetNS] = fmt.Errorf("the agent namespace %s is held by another sluice (agent %q, pid %d, gateway namespace %s)",
				s.AgentNetNS, s.Name, s.PID, cmp.Or(s.NetNS, "without a name"))
		}
	}
	return out
}

// Recover undoes what dead runs left in the current network namespace, as
// Claim does first, and says what it did.
func Recover(cfg StateConfig) ([]string, error) {
	undone, _, err := RecoverHeld(cfg)
	return undone, err
}

// RecoverHeld is Recover, and also returns the slots that are still held
// afterwards: by live agents, and by dead ones it could not undo.
func RecoverHeld(cfg StateConfig) ([]string, []Holder, error) {
	ns, err := openNamespace(cfg)
	if err != nil {
		return nil, nil, err
	}
	var undone []string
	var held []Holder
	err = ns.locked(func() error {
		var unread error
		undone, held, unread = ns.recover()
		return unread
	})
	return undone, held, err
}

func openNamespace(cfg StateConfig) (*namespace, error) {
	cookie, err := netnsCookie()
	if err != nil {
		return nil, fmt.Errorf("identify network namespace: %w", err)
	}
	dir := cmp.Or(cfg.Dir, DefaultStateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ns := newNamespace(cfg, dir, cookie)
	ns.inode = netnsInode("/proc/thread-self/ns/net")
	return ns, nil
}

func newNamespace(cfg StateConfig, dir string, cookie uint64) *namespace {
	return &namespace{cfg: cfg, dir: dir, prefix: filepath.Join(dir, fmt.Sprintf("netns-%d-", cookie)), cookie: cookie}
}

// locked runs f holding the lock of the records. It is one lock for every
// namespace: what it guards is brief, and a lock file per namespace would
// have to be left behind (removing a lock file races with its waiters).
func (ns *namespace) locked(f func() error) error {
	lf, err := os.OpenFile(filepath.Join(ns.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	return f()
}

// agents reads the records of the namespace's agents, and says which it
// could not read.
func (ns *namespace) agents() ([]*State, error) {
	paths, _ := filepath.Glob(ns.prefix + "agent-*.json")
	var out []*State
	var errs []error
	for _, p := range paths {
		s, err := readState(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("the record %s does not read: %w", p, err))
			continue
		}
		s.ns = ns
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// recover undoes what the namespace's dead agents left and returns what
// it did, the agents that still hold their slots, and the records it
// could not read (whose runs it can neither undo nor keep clear of).
func (ns *namespace) recover() ([]string, []Holder, error) {
	records, unread := ns.agents()
	var done []string
	var held []Holder
	var dead, remaining []*State
	for _, s := range records {
		if s.alive() {
			held = append(held, Holder{Slot: s.Slot, PID: s.PID})
			remaining = append(remaining, s)
			continue
		}
		dead = append(dead, s)
	}
	done = append(done, deleteLinksOf(dead)...)
	if err := ns.forgetFlowsOf(dead); err != nil {
		// Undone without this, the dead runs' networks would be taken
		// by new agents that inherit their flows: they stay held, and
		// their records stay, for the next recovery to try again.
		done = append(done, err.Error())
		for _, s := range dead {
			held = append(held, Holder{Slot: s.Slot, PID: s.PID})
		}
		return done, held, unread
	}
	for _, s := range dead {
		d, err := s.undo(true)
		done = append(done, d...)
		if err != nil {
			done = append(done, err.Error())
			held = append(held, Holder{Slot: s.Slot, PID: s.PID})
			remaining = append(remaining, s)
		}
	}
	// With no dead agent undone, the live agents' holds are as the last
	// of them left them, with the guard; but a restore that failed
	// before is tried again.
	if unread != nil {
		remaining = nil // read them again: some are not among them
	} else if remaining == nil {
		remaining = []*State{}
	}
	if err := ns.settleForwarding(&done, len(dead) > 0, remaining); err != nil {
		done = append(done, err.Error())
	}
	return done, held, unread
}

// deleteLinksOf removes the links of dead agents all at once, as the
// first step of their undo, which then finds them gone; should that fail,
// one at a time. Either way every link that can go is gone before their
// flows are deleted (forgetFlowsOf). A link that cannot go fails its
// agent's undo, which keeps its record.
func deleteLinksOf(dead []*State) []string {
	var names []string
	for _, s := range dead {
		if !s.Router && s.Iface != "" {
			names = append(names, s.Iface)
		}
	}
	var done []string
	gone, err := DeleteLinks(names)
	if err != nil {
		done = append(done, err.Error()+"; deleting them one at a time")
		gone = nil
		for _, name := range names {
			if existed, err := DeleteLink(name); err == nil && existed {
				gone = append(gone, name)
			}
		}
	}
	for _, name := range gone {
		done = append(done, "removed link "+name)
	}
	return done
}

// forgetFlowsOf deletes the tracked flows from the networks of dead
// agents whose links are gone.
func (ns *namespace) forgetFlowsOf(dead []*State) error {
	var nets []netip.Prefix
	for _, s := range dead {
		nets = append(nets, s.Nets...)
	}
	if ns.cfg.ForgetFlows == nil || len(nets) == 0 {
		return nil
	}
	if err := ns.cfg.ForgetFlows(nets); err != nil {
		return fmt.Errorf("delete the tracked flows of earlier runs' networks %v: %w", nets, err)
	}
	return nil
}

func (s *State) alive() bool {
	return processStart(s.PID) == s.Start
}

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
	readRecords.mu.Lock()
	c, ok := readRecords.m[path]
	readRecords.mu.Unlock()
	if ok && bytes.Equal(c.raw, b) {
		return &State{Record: c.rec.clone(), path: path}, nil
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("corrupt state file: %w", err)
	}
	s.path = path
	readRecords.mu.Lock()
	if readRecords.m == nil {
		readRecords.m = map[string]readRecord{}
	}
	readRecords.m[path] = readRecord{raw: b, rec: s.Record.clone()}
	readRecords.mu.Unlock()
	return &s, nil
}

// readRecords keeps each record read last, decoded, with the bytes it
// was decoded from. Every start reads every record of the namespace,
// several times, under the records' lock: sluice serve starting a hundred
// agents would decode tens of thousands, where comparing the bytes read
// again costs a twentieth of decoding them.
var readRecords struct {
	mu sync.Mutex
	m  map[string]readRecord
}

type readRecord struct {
	raw []byte
	rec Record
}

// undo removes what a dead agent left behind and says what it did. The
// agent goes first, its processes and then its link (a recovery deletes
// the links of all its dead agents at once before their undo: then the
// processes go after), and the table last:
// the dead run's agent is by design still running (cut off by the table),
// and with the table gone before the link it would forward anything,
// anywhere, unfiltered. Its hold on forwarding goes with its record.
//
// The processes of an agent whose namespace has a name (AgentNetNS) are
// kept, for the next start with that namespace to adopt: its link goes,
// which leaves them no way out (the namespace has nothing else but
// loopback), and then the table.
//
// An agent in router mode (Router) has no process and no link of
// sluice's: its interface is the user's and stays. What stood between the
// interface's clients and the outside is the table, and the forwarding
// the run held: the hold goes first (the guard then drops what the
// interface forwards, or forwarding is off again), and then the table.
//
// With kernel false, the run's gateway namespace is gone, and its link and
// table went with it: a link of that name here would be another's, so only
// the agent, the files and the record are left to remove.
func (s *State) undo(kernel bool) ([]string, error) {
	var done []string
	if s.AgentNetNS == "" && s.AgentPID > 0 && processStart(s.AgentPID) == s.AgentStart {
		if syscall.Kill(s.AgentPID, syscall.SIGKILL) == nil {
			done = append(done, fmt.Sprintf("killed the agent %s (pid %d)", s.Name, s.AgentPID))
		}
	}
	kept := fmt.Sprintf("kept the agent namespace %s and its processes, with no link, for the next start with it", s.AgentNetNS)
	if !kernel {
		if s.AgentNetNS != "" {
			done = append(done, kept)
		}
		return append(done, s.removeFiles()...), nil
	}
	if s.Router {
		if err := s.dropForwarding(&done); err != nil {
			// The table stays, and so does the record: with the hold
			// still there, the table is all that holds the clients (its
			// heartbeat has lapsed, so it refuses everything).
			return done, fmt.Errorf("give up the forwarding held for interface %s of an earlier run: %w", s.Iface, err)
		}
		done = append(done, "kept interface "+s.Iface+" (router mode: the user's, never removed)")
	} else if s.Iface != "" {
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
	if s.AgentNetNS != "" {
		done = append(done, kept)
	}
	if rm := s.ns.cfg.RemoveTable; rm != nil && s.Table != "" {
		if existed, err := rm(s.Table); existed && err == nil {
			done = append(done, "removed table inet "+s.Table)
		}
	}
	return append(done, s.removeFiles()...), nil
}

// removeFiles removes the run's files and then its record.
func (s *State) removeFiles() []string {
	var done []string
	for _, f := range s.Files {
		if os.Remove(f) == nil {
			done = append(done, "removed "+f)
		}
	}
	if os.Remove(s.path) == nil {
		done = append(done, fmt.Sprintf("removed the record of agent %s (pid %d): %s", s.Name, s.PID, s.path))
	}
	forgetRecord(s.path)
	return done
}

// forgetRecord drops path's decoded record from readRecords.
func forgetRecord(path string) {
	readRecords.mu.Lock()
	defer readRecords.mu.Unlock()
	delete(readRecords.m, path)
}

// settleForwarding makes the guard and the forwarding settings match the
// agents that hold forwarding: with none left, the sysctls get their old
// values back and then the guard goes (in that order, so that forwarding
// is never on without it); otherwise the guard exempts the links of those
// that are left (unless holds changed is false: the guard exempts them
// already). Call it under the lock.
//
// records are the namespace's records as they are now, when the caller
// has just read them (nil: read them).
func (ns *namespace) settleForwarding(done *[]string, holdsChanged bool, records []*State) error {
	fwd, err := ns.readForwarding()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var ifaces []string
	if records == nil {
		records, _ = ns.agents()
	}
	for _, s := range records {
		if s.Forwarding {
			ifaces = append(ifaces, s.Iface)
		}
	}
	slices.Sort(ifaces)
	if len(ifaces) > 0 {
		if !holdsChanged {
			return nil
		}
		return ns.setGuard(fwd.plan(), ifaces)
	}
	var errs []error
	for _, sc := range slices.Backward(fwd.Sysctls) {
		cur, err := readSysctl(sc.Path)
		if err == nil && cur == sc.Value {
			continue
		}
		if errors.Is(err, os.ErrNotExist) {
			// An interface's setting (accept_ra), and the interface is
			// gone: nothing to restore. It may have been another agent's
			// link, caught just made, before it refused advertisements.
			continue
		}
		if err = writeSysctl(sc.Path, sc.Value); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", sc.Path, sc.Value, err))
		} else if done != nil {
			*done = append(*done, "restored "+sc.Path+"="+sc.Value)
		}
	}
	if len(errs) > 0 {
		// The record stays, and so does the guard, for the next try; the
		// guard now exempts no link, since no agent holds forwarding.
		if err := ns.setGuard(fwd.plan(), nil); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if err := ns.setGuard(ForwardingPlan{}, nil); err != nil {
		return err
	}
	return os.Remove(ns.forwardingPath())
}

func (ns *namespace) setGuard(plan ForwardingPlan, ifaces []string) error {
	if ns.cfg.SetGuard == nil {
		return nil
	}
	return ns.cfg.SetGuard(plan, ifaces)
}

func (ns *namespace) forwardingPath() string { return ns.prefix + "forwarding.json" }

func (ns *namespace) readForwarding() (*forwarding, error) {
	b, err := os.ReadFile(ns.forwardingPath())
	if err != nil {
		return nil, err
	}
	var f forwarding
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("corrupt forwarding record %s: %w", ns.forwardingPath(), err)
	}
	return &f, nil
}

func (ns *namespace) saveForwarding(f *forwarding) error {
	return writeRecord(ns.forwardingPath(), f)
}

// plan says which families' forwarding sluice switched on.
func (f *forwarding) plan() ForwardingPlan {
	has := func(path string) bool {
		return slices.ContainsFunc(f.Sysctls, func(sc Sysctl) bool { return sc.Path == path })
	}
	return ForwardingPlan{Enable4: has(sysctlForward4), Enable6: has(sysctlForward6)}
}

const (
	sysctlForward4 = "net/ipv4/ip_forward"
	sysctlForward6 = "net/ipv6/conf/all/forwarding"
)

// SetAgent records the first process of the agent's PID namespace, so
// that the next start after a crash can end the agent before it removes
// the link and the table.
func (s *State) SetAgent(pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.AgentPID, s.AgentStart = pid, processStart(pid)
	return s.save()
}

// SetCommand records the agent's command line, for `sluice status`.
func (s *State) SetCommand(args []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Command = slices.Clone(args)
	return s.save()
}

// SetPolicy records the hash of the policy in force, for `sluice status`.
func (s *State) SetPolicy(hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.PolicyHash = hash
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

// SetLaunchFiles records the files a command started in the agent gets
// as /etc/resolv.conf and as its CA bundle ("" for none), written with
// WriteFile before, for `sluice exec` to find.
func (s *State) SetLaunchFiles(resolvConf, caBundle string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ResolvConf, s.CABundle = resolvConf, caBundle
	return s.save()
}

// Dir is the directory of the records, where the run's own files go too.
func (s *State) Dir() string { return s.ns.dir }

func (s *State) save() error { return writeRecord(s.path, s) }

func writeRecord(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// EnableForwarding switches on the forwarding the agent needs (IPv4, and
// IPv6 if ipv6) where it is off, and records that the agent holds it: the
// namespace's other agents may hold it too, and the old values come back
// only when the last of them is gone. The guard goes in before forwarding
// is switched on. For IPv6, interfaces that accept router advertisements
// would stop doing so once forwarding is on (and lose their default
// route), so they are first told to accept them anyway (accept_ra=2);
// not the interfaces of agents in router mode, which are the user's and
// whose clients' advertisements the gateway must not take.
// Every old value is recorded before it changes, so a crash cannot lose it.
func (s *State) EnableForwarding(ipv6 bool) error {
	return EnableForwardingAll([]*State{s}, ipv6)
}

// EnableForwardingAll is EnableForwarding for several agents of one
// namespace, claimed by this process, in one pass under the lock, with
// one change of the guard: sluice serve's agents, which would otherwise
// queue for the lock one at a time.
func EnableForwardingAll(states []*State, ipv6 bool) error {
	if len(states) == 0 {
		return nil
	}
	ns := states[0].ns
	for _, s := range states {
		if s.ns.prefix != ns.prefix {
			return errors.New("sandbox: EnableForwardingAll: agents of different namespaces")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	return ns.locked(func() error {
		fwd, err := ns.readForwarding()
		if errors.Is(err, os.ErrNotExist) {
			fwd = &forwarding{}
		} else if err != nil {
			return err
		}
		var routers []string
		ours := map[string]bool{}
		for _, s := range states {
			ours[s.path] = true
			if s.Router {
				routers = append(routers, s.Iface)
			}
		}
		records, _ := ns.agents()
		for _, r := range records {
			if r.Router && r.alive() && !ours[r.path] {
				routers = append(routers, r.Iface)
			}
		}
		changes, err := forwardingChanges(ipv6, routers)
		if err != nil {
			return err
		}
		for _, c := range changes {
			if !slices.ContainsFunc(fwd.Sysctls, func(sc Sysctl) bool { return sc.Path == c.Path }) {
				fwd.Sysctls = append(fwd.Sysctls, Sysctl{Path: c.Path, Value: c.old})
			}
		}
		if len(fwd.Sysctls) == 0 {
			return nil // forwarding was on before sluice: nothing to hold
		}
		if err := ns.saveForwarding(fwd); err != nil {
			return err
		}
		now := slices.Clone(states)
		for _, s := range states {
			s.Forwarding = true
			if err := s.save(); err != nil {
				return err
			}
		}
		for _, r := range records {
			if !ours[r.path] {
				now = append(now, r)
			}
		}
		if err := ns.settleForwarding(nil, true, now); err != nil {
			return err
		}
		for _, c := range changes {
			if err := writeSysctl(c.Path, c.Value); err != nil {
				return fmt.Errorf("set %s=%s: %w", c.Path, c.Value, err)
			}
		}
		return nil
	})
}

type sysctlChange struct {
	Sysctl
	old string
}

// forwardingChanges lists the sysctls to change for forwarding, with
// their current values; the interfaces skip keep their accept_ra.
func forwardingChanges(ipv6 bool, skip []string) ([]sysctlChange, error) {
	var out []sysctlChange
	want := func(path, value string) error {
		cur, err := readSysctl(path)
		if err != nil {
			return err
		}
		if cur != value {
			out = append(out, sysctlChange{Sysctl{path, value}, cur})
		}
		return nil
	}
	if err := want(sysctlForward4, "1"); err != nil {
		return nil, err
	}
	if !ipv6 {
		return out, nil
	}
	if cur, err := readSysctl(sysctlForward6); err != nil {
		return nil, err
	} else if cur == "1" {
		return out, nil
	}
	dirs, _ := filepath.Glob("/proc/sys/net/ipv6/conf/*/accept_ra")
	for _, d := range dirs {
		rel := strings.TrimPrefix(d, "/proc/sys/")
		if slices.Contains(skip, filepath.Base(filepath.Dir(d))) {
			continue
		}
		if v, err := readSysctl(rel); err == nil && v == "1" && !strings.Contains(rel, "/all/") {
			out = append(out, sysctlChange{Sysctl{rel, "2"}, v})
		}
	}
	return out, want(sysctlForward6, "1")
}

// ReleaseForwarding gives up the agent's hold on forwarding before the
// rest of it goes: the guard stops exempting its link or, when it was the
// last to hold forwarding, the old settings come back. An agent in router
// mode does this before its table goes, since its interface stays (see
// undo); Release does it too.
func (s *State) ReleaseForwarding() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns.locked(func() error { return s.dropForwarding(nil) })
}

// dropForwarding records that the agent no longer holds forwarding and
// settles the namespace's forwarding accordingly. Call it under the lock.
func (s *State) dropForwarding(done *[]string) error {
	if !s.Forwarding {
		return nil
	}
	s.Forwarding = false
	if err := s.save(); err != nil {
		s.Forwarding = true
		return err
	}
	return s.ns.settleForwarding(done, true, nil)
}

// Release gives up the agent's record, its files and its hold on
// forwarding: the last agent of the namespace to go restores the old
// forwarding settings and removes the guard. The agent's link and table
// are the caller's to remove before.
func (s *State) Release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.Files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	err := s.ns.locked(func() error {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		forgetRecord(s.path)
		return s.ns.settleForwarding(nil, true, nil)
	})
	return errors.Join(append(errs, err)...)
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

// ForwardingPlan says which families' forwarding sluice switched on,
// which is also where the guard must keep paths between the namespace's
// other interfaces closed.
type ForwardingPlan struct {
	Enable4, Enable6 bool
}
