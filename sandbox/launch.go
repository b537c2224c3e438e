package sandbox

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Launch is a command to run in an agent: in the one an Agent made (see
// Agent.Run), or in the named namespace of one that a gateway serves (see
// Launch.Run).
type Launch struct {
	// NetNS names the agent's network namespace under NetNSDir, for
	// Launch.Run; Agent.Run takes its own.
	NetNS string
	// Args is the command and its arguments.
	Args []string
	// ResolvConf is a file to mount over the agent's /etc/resolv.conf.
	ResolvConf string
	// CABundle, when set, is a PEM bundle (the gateway's roots and
	// sluice's CA) mounted over the distribution's bundle files and named
	// by the variables that clients read (see TrustVars).
	CABundle string
	// User is who the command runs as.
	User Credential
	// Env is the command's environment (HOME, USER and LOGNAME are set
	// from User).
	Env []string
	// Stdin, Stdout and Stderr are the command's standard streams.
	Stdin, Stdout, Stderr *os.File
	// Log receives what Launch.Run's supervision has to say (nil:
	// nothing); Agent.Run uses the agent's.
	Log *slog.Logger
}

// Interactive reports whether the command reads from a terminal. Such a
// command stays in sluice's process group, so that the terminal's Ctrl-C
// reaches it once, not twice (once from the terminal, once relayed);
// otherwise it gets a group of its own and every signal is relayed.
func (l Launch) Interactive() bool {
	if l.Stdin == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(l.Stdin.Fd()), unix.TCGETS)
	return err == nil
}

// cmd returns the command that starts sluice's init in the agent (Init),
// which prepares the agent and runs l.Args.
func (l Launch) cmd() *exec.Cmd {
	interactive := l.Interactive()
	args := []string{InitArg, "--resolv", l.ResolvConf, "--ca-bundle", l.CABundle, fmt.Sprintf("--interactive=%t", interactive),
		"--uid", fmt.Sprint(l.User.UID), "--gid", fmt.Sprint(l.User.GID), "--groups", l.User.Groups, "--"}
	cmd := exec.Command("/proc/self/exe", append(args, l.Args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = l.Stdin, l.Stdout, l.Stderr
	cmd.Env = l.User.Env(l.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID, Setpgid: !interactive}
	return cmd
}
