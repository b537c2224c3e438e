package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// agentInitArg is the hidden subcommand that sluice runs as the agent's
// first process: already in the agent's network namespace and in a mount
// namespace of its own, it points /etc/resolv.conf at the gateway, shows
// the agent's own interfaces under /sys, drops privileges and executes the
// user's command in its place.
const agentInitArg = "__agent-init"

func agentInit(args []string) error {
	fs := flag.NewFlagSet(agentInitArg, flag.ContinueOnError)
	resolv := fs.String("resolv", "", "file to mount over /etc/resolv.conf")
	uid := fs.Int("uid", 0, "user id to run as")
	gid := fs.Int("gid", 0, "group id to run as")
	groups := fs.String("groups", "", "supplementary group ids, comma separated")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return exitError{125}
	}
	fail := func(err error) error {
		fmt.Fprintln(os.Stderr, "sluice: prepare agent:", err)
		return exitError{125}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make mounts private: %w", err))
	}
	if *resolv != "" {
		if err := mountResolvConf(*resolv); err != nil {
			return fail(err)
		}
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
	path, err := exec.LookPath(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) {
			return exitError{127}
		}
		return exitError{126}
	}
	err = syscall.Exec(path, fs.Args(), os.Environ())
	fmt.Fprintf(os.Stderr, "sluice: exec %s: %v\n", path, err)
	return exitError{126}
}

// mountResolvConf binds file over /etc/resolv.conf, following a symlink to
// its target the way the resolver library will.
func mountResolvConf(file string) error {
	target := "/etc/resolv.conf"
	if resolved, err := filepath.EvalSymlinks(target); err == nil {
		target = resolved
	} else {
		// A dangling link, say to the stub of a stopped systemd-resolved:
		// give its directory a private tmpfs in this mount namespace (the
		// host sees nothing) and create the file there to mount over.
		link, lerr := os.Readlink(target)
		if lerr != nil {
			return fmt.Errorf("find /etc/resolv.conf: %w", err)
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join("/etc", link)
		}
		if err := unix.Mount("tmpfs", filepath.Dir(link), "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("/etc/resolv.conf points to missing %s: %w", link, err)
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
