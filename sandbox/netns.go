package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsInode is the inode of the network namespace at path (such as
// /proc/thread-self/ns/net or /run/netns/NAME), 0 if it is none.
func netnsInode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// netnsName is the name under /run/netns (as `ip netns add` makes) of the
// network namespace whose inode is inode, "" if it has none.
func netnsName(inode uint64) string {
	if inode == 0 {
		return ""
	}
	var self unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil {
		return ""
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Ino == inode && st.Dev == self.Dev {
			return e.Name()
		}
	}
	return ""
}

// openNetNS opens the network namespace whose cookie is cookie, looking
// wherever a namespace can be held: by this process, by a bind mount (as
// `ip netns add` makes), by a process or one of its threads, by an open
// descriptor. inode, when not 0, is the namespace's, which spares
// entering the others to read their cookies. It returns -1 and no error
// when there is no such namespace; an error when it could not look
// everywhere (it needs root).
func openNetNS(cookie, inode uint64) (int, error) {
	seen := map[uint64]bool{}
	var denied error
	for path, ino := range netnsCandidates() {
		if seen[ino] || (inode != 0 && ino != inode) {
			continue
		}
		seen[ino] = true
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				denied = fmt.Errorf("open %s: %w", path, err)
			}
			continue // a process that has just exited
		}
		got, err := cookieAt(fd)
		if err == nil && got == cookie {
			return fd, nil
		}
		unix.Close(fd)
		if err != nil {
			denied = err
		}
	}
	if denied != nil {
		return -1, fmt.Errorf("cannot tell whether network namespace %d still exists: %w", cookie, denied)
	}
	return -1, nil
}

// netnsCandidates yields the paths that may hold a network namespace,
// with the namespace's inode, cheapest first. A path may be yielded
// again, or name a namespace that is gone by the time it is opened.
func netnsCandidates() iter.Seq2[string, uint64] {
	return func(yield func(string, uint64) bool) {
		if !yield("/proc/self/ns/net", netnsInode("/proc/self/ns/net")) {
			return
		}
		for _, m := range nsfsMounts() {
			if ino := netnsInode(m); ino != 0 && !yield(m, ino) {
				return
			}
		}
		for _, pattern := range []string{"/proc/[0-9]*/ns/net", "/proc/[0-9]*/task/[0-9]*/ns/net", "/proc/[0-9]*/fd/*"} {
			paths, _ := filepath.Glob(pattern)
			for _, p := range paths {
				if ino, ok := netnsLink(p); ok && !yield(p, ino) {
					return
				}
			}
		}
	}
}

// netnsLink reads the magic link at path ("net:[INODE]") and returns the
// inode, or false if it is not a network namespace.
func netnsLink(path string) (uint64, bool) {
	target, err := os.Readlink(path)
	if err != nil {
		return 0, false
	}
	num, ok := strings.CutPrefix(target, "net:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64)
	return ino, err == nil
}

// nsfsMounts lists the mount points of namespaces bound to files in this
// mount namespace, such as /run/netns/NAME.
func nsfsMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "nsfs" {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in
// mountinfo.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cookieAt returns the cookie of the network namespace fd.
func cookieAt(fd int) (uint64, error) {
	var cookie uint64
	err := inNetNS(fd, func() error {
		var err error
		cookie, err = netnsCookie()
		return err
	})
	return cookie, err
}

// inNetNS runs f on a thread of its own inside the network namespace fd.
// The thread is never handed back to other goroutines: it exits with f's.
func inNetNS(fd int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err := notMainThread(); err != nil {
			errc <- err
			return
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
