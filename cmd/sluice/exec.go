package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/sandbox"
)

var execHelp = help{
	usage: "sluice exec NAME [--user USER] [--state-dir DIR] -- COMMAND [ARG...]",
	about: `Runs COMMAND in the network namespace of the agent NAME that a running
'sluice serve' serves (/run/netns/sluice-NAME), set up as 'sluice run'
sets up its command: /etc/resolv.conf naming the agent's gateway, the CA
bundle with sluice's CA when its policy has hosts with rules, the host's
side doors (D-Bus, /run/netns, container sockets) hidden, as the invoking
user under sudo. Standard streams are passed, signals relayed, and the
command's exit status returned. The command keeps running if serve
restarts; removing the agent from serve's config ends it. Needs root.`,
	examples: `  # a shell in the agent alpha's namespace, as the user who ran sudo
  sudo sluice exec alpha -- bash
  # an agent started there, as a given user
  sudo sluice exec alpha --user agent -- claude`,
}

// execCmd is `sluice exec NAME -- COMMAND`.
func execCmd(args []string) error {
	fs := newFlags("exec", execHelp)
	user := fs.String("user", "", "run the command as this `user` (default: the user who ran sudo, else root)")
	dir := fs.String("state-dir", sandbox.DefaultStateDir, "the `dir`ectory of the gateways' records")
	// NAME may come before the flags or after them.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
	}
	switch {
	case name == "":
		return usageError("exec", "no agent named: sluice exec NAME -- COMMAND [ARG...]")
	case !gateway.ValidName(name):
		return usageError("exec", fmt.Sprintf("agent name %q: want 1 to 32 letters, digits, '.', '_' or '-'", name))
	case len(rest) == 0:
		return usageError("exec", "no command to run: sluice exec NAME -- COMMAND [ARG...]")
	}
	if os.Geteuid() != 0 {
		return errors.New("exec needs root to enter the agent's namespaces; try sudo")
	}
	cred, err := sandbox.LookupUser(*user)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	code, err := gateway.Exec(gateway.ExecConfig{
		Agent: name, StateDir: *dir, Args: rest, User: cred, Env: os.Environ(),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	}, sigs)
	if err != nil {
		return err
	}
	return exitError{code}
}
