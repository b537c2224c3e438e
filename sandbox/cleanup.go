package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// CleanupConfig says where the records are, and how to undo what the dead
// runs of one network namespace left.
type CleanupConfig struct {
	// Dir holds the records; DefaultStateDir when empty.
	Dir string
	// Recover undoes what the dead runs of the current network namespace
	// left, as the next start there does (gateway.Recover). Cleanup calls
	// it inside each namespace that has dead runs, on a thread of its
	// own there.
	Recover func() ([]string, error)
	// DryRun says what would be removed, and removes nothing.
	DryRun bool
}

// Cleanup undoes what the dead runs recorded in the directory left, in
// whichever network namespace each ran, and says what it did, one line
// each. Live runs are left alone. The runs of a gateway namespace that
// is gone lost their links and tables with it: their agents, files and
// records are what is left of them. An agent whose namespace has a name
// (sluice serve's) keeps it and its processes, cut off, for the next
// start with it (see State.undo). It needs root, to find and enter the
// namespaces. Records that do not read, and namespaces it cannot tell
// are gone, are reported in the error and left as they are.
func Cleanup(cfg CleanupConfig) ([]string, error) {
	dir := cmp.Or(cfg.Dir, DefaultStateDir)
	if err := TrustedDir(dir); err != nil {
		return nil, err
	}
	runs, err := Runs(dir)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var done []string
	for _, dead := range deadByNamespace(runs) {
		d, err := cleanupNamespace(cfg, dir, dead, runs)
		done = append(done, d...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return done, errors.Join(errs...)
}

// deadByNamespace groups the dead runs by their gateway namespace, in the
// order of the first of each.
func deadByNamespace(runs []Run) [][]Run {
	var out [][]Run
	for _, r := range runs {
		if r.Alive {
			continue
		}
		i := slices.IndexFunc(out, func(g []Run) bool { return g[0].Cookie == r.Cookie })
		if i < 0 {
			out = append(out, nil)
			i = len(out) - 1
		}
		out[i] = append(out[i], r)
	}
	return out
}

// cleanupNamespace undoes the dead runs of one gateway namespace: inside
// it with cfg.Recover if it still exists, from here if it is gone.
func cleanupNamespace(cfg CleanupConfig, dir string, dead, all []Run) ([]string, error) {
	cookie := dead[0].Cookie
	var inode uint64
	for _, r := range dead {
		inode = cmp.Or(inode, r.state.NetNSInode)
	}
	fd, err := openNetNS(cookie, inode)
	if err != nil {
		return nil, err
	}
	if fd < 0 {
		done := []string{fmt.Sprintf("the gateway namespace %s is gone, and the links and tables of its runs with it", netnsLabel(dead[0]))}
		if cfg.DryRun {
			for _, r := range dead {
				done = append(done, r.leftovers(false)...)
			}
			return done, nil
		}
		d, err := removeGone(newNamespace(StateConfig{Dir: dir}, dir, cookie))
		return append(done, d...), err
	}
	defer unix.Close(fd)
	if cfg.DryRun {
		var done []string
		for _, r := range dead {
			done = append(done, r.leftovers(true)...)
		}
		return append(done, forwardingLeftovers(newNamespace(StateConfig{Dir: dir}, dir, cookie), all)...), nil
	}
	if cfg.Recover == nil {
		return nil, errors.New("cleanup: no way to undo a run in its namespace")
	}
	var done []string
	err = inNetNS(fd, func() error {
		c, err := netnsCookie()
		if err != nil {
			return err
		}
		if c != cookie {
			return fmt.Errorf("entered network namespace %d, not %d", c, cookie)
		}
		done, err = cfg.Recover()
		return err
	})
	// Recover says what failed among what it did, and keeps the record
	// of a run it could not undo (its link would not go): say so.
	for _, r := range dead {
		if s, rerr := readState(r.Record); rerr == nil && s.PID == r.PID && s.Start == r.state.Start {
			err = errors.Join(err, fmt.Errorf("agent %s (pid %d) is not cleaned up: its record %s stays", r.Name, r.PID, r.Record))
		}
	}
	return done, err
}

// netnsLabel names a run's gateway namespace for a person.
func netnsLabel(r Run) string {
	if r.NetNS != "" {
		return fmt.Sprintf("%q (cookie %d)", r.NetNS, r.Cookie)
	}
	return fmt.Sprintf("with cookie %d", r.Cookie)
}

// removeGone removes the records of the dead runs of a namespace that is
// gone, their agents and files with them, and the namespace's forwarding
// record once no run of it is left.
func removeGone(ns *namespace) ([]string, error) {
	var done []string
	err := ns.locked(func() error {
		records, unread := ns.agents()
		left := 0
		for _, s := range records {
			if s.alive() {
				left++ // cannot be: a live sluice keeps its namespace
				continue
			}
			d, _ := s.undo(false)
			done = append(done, d...)
		}
		if unread != nil || left > 0 {
			return unread
		}
		if os.Remove(ns.forwardingPath()) == nil {
			done = append(done, "removed the forwarding record of the namespace: "+ns.forwardingPath())
		}
		return nil
	})
	return done, err
}

// leftovers says what undoing the dead run would remove; with kernel
// false its namespace is gone, and its link and table with it.
func (r Run) leftovers(kernel bool) []string {
	s := r.state
	var out []string
	if s.AgentNetNS == "" && s.AgentPID > 0 && processStart(s.AgentPID) == s.AgentStart {
		out = append(out, fmt.Sprintf("would kill the agent %s (pid %d)", s.Name, s.AgentPID))
	}
	if kernel && s.Router {
		out = append(out, "would keep interface "+s.Iface+" (router mode: the user's, never removed)")
	} else if kernel && s.Iface != "" {
		out = append(out, "would remove link "+s.Iface)
	}
	if s.AgentNetNS != "" {
		out = append(out, fmt.Sprintf("would keep the agent namespace %s and its processes, with no link, for the next start with it", s.AgentNetNS))
	}
	if kernel && s.Table != "" {
		out = append(out, "would remove table inet "+s.Table)
	}
	for _, f := range s.Files {
		if _, err := os.Lstat(f); err == nil {
			out = append(out, "would remove "+f)
		}
	}
	return append(out, fmt.Sprintf("would remove the record of agent %s (pid %d): %s", s.Name, s.PID, s.path))
}

// forwardingLeftovers says which sysctls undoing the namespace's dead
// runs would restore: those of its forwarding record, when none of its
// live runs holds forwarding.
func forwardingLeftovers(ns *namespace, runs []Run) []string {
	if slices.ContainsFunc(runs, func(r Run) bool { return r.Alive && r.Cookie == ns.cookie && r.Forwarding }) {
		return nil
	}
	fwd, err := ns.readForwarding()
	if err != nil {
		return nil
	}
	var out []string
	for _, sc := range slices.Backward(fwd.Sysctls) {
		out = append(out, "would restore "+sc.Path+"="+sc.Value+" (if changed)")
	}
	return out
}

// TrustedDir refuses a state directory that someone other than root could
// have written records into: cleanup kills the processes, removes the
// links, tables and files that records name, as root, so a planted
// record must not be taken for sluice's. The directory and each record
// in it must be root's and writable by no one else.
func TrustedDir(dir string) error {
	check := func(path string) error {
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		if st.Uid != 0 || st.Mode&0o022 != 0 || st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			return fmt.Errorf("%s is not root's alone (owner %d, mode %o): cleanup acts only on records no one but root could have written", path, st.Uid, st.Mode&0o7777)
		}
		return nil
	}
	if err := check(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // no records: nothing to do
		}
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			if err := check(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
