package sandbox

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitArg is the hidden subcommand that sluice runs as the agent's
// first process: already in the agent's network namespace, in a mount
// namespace and a PID namespace of its own, it hides host services
// reachable through the filesystem, points /etc/resolv.conf at the
// gateway, shows the agent's own interfaces under /sys and its own
// processes under /proc, drops privileges, closes every inherited
// descriptor but 0-2 and starts the user's command. It stays as the PID
// namespace's init (see superviseCommand): when it ends, the kernel kills
// every process of the agent, wherever it has moved its network.
const InitArg = "__agent-init"

// Init is the agent's first process (InitArg and what follows it on the
// command line of Launch.Cmd). It returns the exit status for the
// process: the command's, or 125-127 as a shell would when sluice could
// not prepare or start it.
func Init(args []string) int {
	fs := flag.NewFlagSet(InitArg, flag.ContinueOnError)
	resolv := fs.String("resolv", "", "file to mount over /etc/resolv.conf")
	bundle := fs.String("ca-bundle", "", "CA bundle to mount over the distribution's and name in TrustVars")
	uid := fs.Int("uid", 0, "user id to run as")
	gid := fs.Int("gid", 0, "group id to run as")
	groups := fs.String("groups", "", "supplementary group ids, comma separated")
	interactive := fs.Bool("interactive", false, "the command shares a terminal's process group with sluice")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return 125
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "sluice: prepare agent:", err)
		return 125
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make mounts private: %w", err))
	}
	// Open the resolv.conf to mount before hiding the directory it is in.
	var resolvPath string
	if *resolv != "" {
		f, err := os.Open(*resolv)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		resolvPath = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	var bundlePath string
	if *bundle != "" {
		f, err := os.Open(*bundle)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		bundlePath = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	hidden, err := hideSideDoors()
	if err != nil {
		return fail(err)
	}
	if resolvPath != "" {
		if err := mountResolvConf(resolvPath, hidden); err != nil {
			return fail(err)
		}
	}
	if bundlePath != "" {
		at, err := mountCABundle(bundlePath)
		if err != nil {
			return fail(err)
		}
		for _, v := range TrustVars {
			os.Setenv(v, at)
		}
	}
	// /proc shows the agent's own processes: those of its PID namespace.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail(fmt.Errorf("mount /proc: %w", err))
	}
	// Like `ip netns exec`: /sys shows this namespace's interfaces.
	if unix.Unmount("/sys", unix.MNT_DETACH) == nil {
		_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	}
	var gids []int
	for _, g := range strings.Split(*groups, ",") {
		if n, err := strconv.Atoi(g); err == nil {
			gids = append(gids, n)
		}
	}
	if err := syscall.Setgroups(gids); err != nil {
		return fail(fmt.Errorf("setgroups: %w", err))
	}
	if err := syscall.Setgid(*gid); err != nil {
		return fail(fmt.Errorf("setgid %d: %w", *gid, err))
	}
	if err := syscall.Setuid(*uid); err != nil {
		return fail(fmt.Errorf("setuid %d: %w", *uid, err))
	}
	// Nothing sluice (or whoever started sluice) had open reaches the
	// command but its standard streams: no socket of another namespace.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fail(fmt.Errorf("close inherited files: %w", err))
	}
	path, err := exec.LookPath(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) {
			return 127
		}
		return 126
	}
	return superviseCommand(path, fs.Args(), *interactive)
}

// superviseCommand runs the command as the only child of this process,
// the PID namespace's init: it passes on the signals sluice relays, reaps
// every orphan that the kernel hands to an init, and exits with the
// command's status (128+N when a signal N ended it). Its exit is what
// ends the agent: the kernel kills every process left in the namespace.
// The command is not init itself because an init ignores every signal it
// has no handler for, so a plain command would never see sluice's SIGTERM.
func superviseCommand(path string, args []string, interactive bool) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	cmd := exec.Command(path, args[1:]...)
	cmd.Args = args
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "sluice: exec %s: %v\n", path, err)
		return 126
	}
	pid := cmd.Process.Pid
	// The standard streams are the command's: holding them open here would
	// keep a reader of sluice's output waiting for this process too.
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for fd := range 3 {
			_ = unix.Dup2(int(null.Fd()), fd)
		}
		null.Close()
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			if status, done := reapChildren(pid); done {
				return status
			}
		case syscall.SIGURG, syscall.SIGPIPE:
			// Go's scheduler preempts with SIGURG; SIGPIPE is ours alone.
		case syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTSTP:
			if interactive {
				continue // the terminal sent it to the command too
			}
			_ = syscall.Kill(pid, sig.(syscall.Signal))
		default:
			_ = syscall.Kill(pid, sig.(syscall.Signal))
		}
	}
	return 125
}

// reapChildren collects every child that has ended and reports the
// command's status once it is among them.
func reapChildren(command int) (status int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err != nil || pid <= 0 {
			return status, done
		}
		if pid != command {
			continue
		}
		done = true
		status = ws.ExitStatus()
		if ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
	}
}

// sideDoors are host services reachable through the filesystem, which no
// network namespace separates: the system bus (systemd-resolved resolves
// any name for whoever asks over it), resolved's varlink socket, nscd,
// container runtimes, named namespaces (a way back into the gateway) and
// sluice's own state. The agent gets an empty directory in their place.
var sideDoors = []string{
	"/run/dbus", "/run/systemd", "/run/nscd", "/run/docker", "/run/containerd",
	"/run/podman", "/run/netns", "/run/sluice", "/var/lib/sss/pipes",
}

// sideDoorSockets are single sockets that get /dev/null in their place.
var sideDoorSockets = []string{"/run/docker.sock", "/var/run/docker.sock", "/run/podman/podman.sock"}

// hideSideDoors covers each side door that exists, in this mount namespace
// only, and returns the directories it covered.
func hideSideDoors() ([]string, error) {
	var hidden []string
	for _, dir := range sideDoors {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue // absent
		}
		if err := unix.Mount("tmpfs", real, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
			return nil, fmt.Errorf("hide %s: %w", dir, err)
		}
		hidden = append(hidden, real)
	}
	for _, sock := range sideDoorSockets {
		if real, err := filepath.EvalSymlinks(sock); err == nil {
			if err := unix.Mount("/dev/null", real, "", unix.MS_BIND, ""); err != nil {
				return nil, fmt.Errorf("hide %s: %w", sock, err)
			}
		}
	}
	return hidden, nil
}

// mountResolvConf binds file over /etc/resolv.conf, following a symlink to
// its target the way the resolver library will. When the link dangles
// (say, into a directory hidden above, or of a stopped systemd-resolved),
// its target is created on a private tmpfs: nothing is written to the
// host's filesystem.
func mountResolvConf(file string, hidden []string) error {
	target, err := filepath.EvalSymlinks("/etc/resolv.conf")
	if err != nil {
		link, lerr := os.Readlink("/etc/resolv.conf")
		if lerr != nil {
			return fmt.Errorf("find /etc/resolv.conf: %w", err)
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join("/etc", link)
		}
		dir := filepath.Dir(link)
		if !underAny(dir, hidden) {
			if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=1m"); err != nil {
				return fmt.Errorf("/etc/resolv.conf points to missing %s: %w", link, err)
			}
		} else if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(link, nil, 0o644); err != nil {
			return err
		}
		target = link
	}
	if err := unix.Mount(file, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", file, target, err)
	}
	return nil
}

func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// CABundles are where distributions keep their CA bundle (the list Go's
// crypto/x509 reads).
var CABundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine
}

// TrustVars are the environment variables through which clients take a CA
// bundle (OpenSSL and Go, git, curl, Python requests, Node): set to the
// agent's bundle, whatever the environment had, so that every client
// trusts sluice's CA for the hosts it intercepts.
var TrustVars = []string{"SSL_CERT_FILE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}

// mountCABundle binds file over every distribution bundle that exists
// (symlinks followed, each target once) and returns the first.
func mountCABundle(file string) (string, error) {
	var first string
	done := map[string]bool{}
	for _, p := range CABundles {
		target, err := filepath.EvalSymlinks(p)
		if err != nil || done[target] {
			continue
		}
		if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		done[target] = true
		if err := unix.Mount(file, target, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("bind the CA bundle over %s: %w", target, err)
		}
		if first == "" {
			first = p
		}
	}
	if first == "" {
		return "", fmt.Errorf("no CA bundle to trust sluice's CA through (none of %s; install ca-certificates)", strings.Join(CABundles, ", "))
	}
	return first, nil
}
