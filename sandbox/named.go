package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetNSDir is where named network namespaces are bound, as `ip netns add`
// binds them: /run/netns/NAME is what `ip netns exec NAME` enters.
const NetNSDir = "/run/netns"

// nsGetNSType is the ioctl NS_GET_NSTYPE (Linux 4.11): the CLONE_NEW*
// type of a namespace file.
const nsGetNSType = 0xb703

// openNamedNetNS opens the network namespace NetNSDir/name, and creates it
// (bound there as iproute2 binds it) when there is none. adopted says it
// was there before: a run before this one left it, with whatever
// processes still run in it. It refuses to adopt the namespace of the
// calling thread (the gateway's) or of the init process (the host's):
// what an agent's namespace gets (a new link, its processes killed when
// the agent is removed) must never happen to those.
func openNamedNetNS(name string) (fd int, adopted bool, err error) {
	if !validNetNSName(name) {
		return -1, false, fmt.Errorf("network namespace name %q: want a file name (no '/', not . or ..)", name)
	}
	path := filepath.Join(NetNSDir, name)
	fd, err = openNetNSFile(path)
	switch {
	case err == nil:
		if err := notGatewayNetNS(fd); err != nil {
			unix.Close(fd)
			return -1, false, fmt.Errorf("adopt %s: %w", path, err)
		}
		return fd, true, nil
	case !errors.Is(err, errNotNetNS) && !errors.Is(err, os.ErrNotExist):
		return -1, false, err
	}
	fd, err = createNamedNetNS(path)
	return fd, false, err
}

// errNotNetNS means a path holds no network namespace.
var errNotNetNS = errors.New("not a network namespace")

// openNetNSFile opens path, which must hold a network namespace. An empty
// regular file there (what a crash of `ip netns add` or of sluice between
// creating the file and binding the namespace on it leaves) is errNotNetNS;
// anything else that is not a network namespace is an error that says so.
func openNetNSFile(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if fs.Type == unix.NSFS_MAGIC {
		if t, err := unix.IoctlRetInt(fd, nsGetNSType); err == nil && t == unix.CLONE_NEWNET {
			return fd, nil
		}
		unix.Close(fd)
		return -1, fmt.Errorf("%s holds a namespace that is not a network namespace", path)
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
		return -1, fmt.Errorf("%s: %w (an empty file)", path, errNotNetNS)
	}
	return -1, fmt.Errorf("%s is not a network namespace, nor the empty file of one being made", path)
}

// notGatewayNetNS refuses the namespace fd when it is the calling
// thread's or the init process's.
func notGatewayNetNS(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	for _, p := range []string{"/proc/thread-self/ns/net", "/proc/1/ns/net"} {
		var o unix.Stat_t
		if unix.Stat(p, &o) == nil && o.Ino == st.Ino && o.Dev == st.Dev {
			return fmt.Errorf("it is the gateway's or the host's own network namespace (%s), not an agent's", p)
		}
	}
	return nil
}

// createNamedNetNS makes a network namespace and binds it on path, the
// way `ip netns add` does: NetNSDir is made a shared mount point first,
// so that the bind (and later its removal) reaches every mount namespace
// that shares it. An empty file already at path is taken as the mount
// point. The namespace is returned open.
func createNamedNetNS(path string) (int, error) {
	fd, err := newNetNS()
	if err != nil {
		return -1, err
	}
	err = inHostMounts(func() error {
		if err := sharedNetNSDir(filepath.Dir(path)); err != nil {
			return err
		}
		f, err := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create %s: %w", path, err)
		}
		if err == nil {
			unix.Close(f)
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), path, "none", unix.MS_BIND, ""); err != nil {
			_ = os.Remove(path)
			return fmt.Errorf("bind the network namespace on %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// inHostMounts runs fn in the mount namespace of PID 1 when sluice runs in
// another one, as under a hardened systemd unit (ProtectSystem= and its
// kin give the service a mount namespace of its own, from which no mount
// propagates back): a namespace bound on /run/netns there would be seen
// by the service alone, so neither `ip netns exec` nor `sluice exec` nor
// the next start, in a new mount namespace, would find it. fn runs on a
// thread of its own that leaves its file system context (CLONE_FS) and
// joins PID 1's mount namespace (CAP_SYS_ADMIN, CAP_SYS_CHROOT, and
// CAP_SYS_PTRACE to open /proc/1/ns/mnt); that thread is never given back
// to the scheduler. When sluice may not look at PID 1's namespace or join
// it, fn runs where sluice is, as before.
func inHostMounts(fn func() error) error {
	var own, host unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/mnt", &own) != nil || unix.Stat("/proc/1/ns/mnt", &host) != nil ||
		(own.Dev == host.Dev && own.Ino == host.Ino) {
		return fn()
	}
	type result struct {
		joined bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // for good: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- result{false, err}
			return
		}
		fd, err := unix.Open("/proc/1/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{false, err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNS)
		unix.Close(fd)
		if err != nil {
			done <- result{false, err}
			return
		}
		done <- result{true, fn()}
	}()
	r := <-done
	if !r.joined {
		return fn()
	}
	return r.err
}

// sharedNetNSDir makes dir (NetNSDir) exist and be a mount point with
// shared propagation, binding it on itself first when it is not a mount
// point, as iproute2 does.
func sharedNetNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		if err = unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make %s a mount point: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// removeNamedNetNS unbinds the namespace at NetNSDir/name and removes the
// file, as `ip netns del` does. The namespace itself goes when its last
// process and handle do. A name that is already gone is no error.
func removeNamedNetNS(name string) error {
	return inHostMounts(func() error { return removeName(filepath.Join(NetNSDir, name)) })
}

func removeName(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// validNetNSName reports whether name can name a file of NetNSDir.
func validNetNSName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 255 && filepath.Base(name) == name
}

// openNetNSName opens the named network namespace NetNSDir/name, which
// must exist, for a command to join (see Launch.NetNS).
func openNetNSName(name string) (int, error) {
	if !validNetNSName(name) {
		return -1, fmt.Errorf("network namespace name %q: want a file name (no '/', not . or ..)", name)
	}
	fd, err := openNetNSFile(filepath.Join(NetNSDir, name))
	if errors.Is(err, errNotNetNS) {
		return -1, fmt.Errorf("%s: %w", name, err)
	}
	return fd, err
}
