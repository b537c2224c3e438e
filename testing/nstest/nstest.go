// Package nstest gives tests throwaway network namespaces: a root guard,
// named namespaces that are removed when the test ends, and a safe way to
// run Go code inside one.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Keep the test binary's main thread out of namespace switches: Do runs on
// fresh goroutines, and with the main goroutine locked here none of them
// can be scheduled on the main thread, which Go can never end.
func init() { runtime.LockOSThread() }

// RequireRoot skips t when the test cannot create namespaces, with a
// message that says so; under CI (CI set) it fails instead, so that a
// misconfigured CI machine cannot pass by skipping.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root to create network namespaces, veth pairs and nftables tables; run with sudo"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}

// RequireTool returns the path of the command name, or skips the test
// with a message saying what it leaves untested; when CI is set it fails
// instead, since `make deps` installs every tool the tests drive (the
// Makefile's TEST_PACKAGES names pkg).
func RequireTool(t testing.TB, name, pkg, untested string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (Debian package %s): %s is not tested", name, pkg, untested)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
	return ""
}

// NS is a named network namespace made for one test.
type NS struct {
	Name string
	fd   int
}

// Prefix returns a short random prefix for the names of one test's
// namespaces and links, so tests can run in parallel.
func Prefix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "sl" + hex.EncodeToString(b)
}

// New creates the namespace name (under /run/netns, as `ip netns add`
// does) with its loopback up, and deletes it when t ends.
func New(t testing.TB, name string) *NS {
	t.Helper()
	RequireRoot(t)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		// Kill whatever a failed test left running in it, then remove it.
		if out, err := exec.Command("sh", "-c", "ip netns pids "+name+" | xargs -r kill -9").CombinedOutput(); err != nil {
			t.Logf("kill processes in %s: %v: %s", name, err, out)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ns := &NS{Name: name, fd: fd}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	// A new namespace inherits the host's IPv4 settings
	// (devconf_inherit_init_net 0), and a host that routes for containers
	// forwards: every test namespace starts from one that does not, as
	// the tests expect sluice to find and restore it.
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		ns.Run(t, "sh", "-c", "echo 0 > "+f)
	}
	return ns
}

// Fd is an open handle of the namespace, valid until the test ends.
func (ns *NS) Fd() int { return ns.fd }

// Do runs fn with the calling goroutine's thread inside the namespace.
// Sockets fn opens stay in the namespace after it returns. The thread is
// never returned to the scheduler: it exits with the goroutine, so no
// other code ever runs in the wrong namespace.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Cmd returns a command that runs inside the namespace.
func (ns *NS) Cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and fails t if it fails.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Cmd(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", ns.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Link creates a veth pair between a and b with the given names.
func Link(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}
