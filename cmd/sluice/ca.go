package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicegw/sluice/gateway"
)

// caCmd is `sluice ca export`: the CA an agent trusts for the hosts with
// rules, for setups that do not go through sluice run's mounts (a VM, a
// container with its own trust store).
func caCmd(args []string) error {
	h := help{
		usage: "sluice ca export [--name NAME]",
		about: `Prints the CA certificate (PEM) that an agent trusts for the hosts whose
TLS sluice terminates (those with git or http rules), for setups that do
not go through sluice run's mounts: a VM, a container with its own trust
store. sluice run makes the agent trust it by itself.`,
		examples: "  sudo sluice ca export > sluice-ca.pem\n  sudo sluice ca export --name claude",
	}
	if len(args) == 0 || args[0] != "export" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			printHelp(stdout, nil, h)
			return errHelp
		}
		return usageError("ca", "want 'sluice ca export [--name NAME]'")
	}
	fs := newFlags("ca export", h)
	name := fs.String("name", "", "the agent's `name` (default: the only agent with a CA)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("ca export", fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	dir := gateway.CADir("", *name)
	if *name == "" {
		all, _ := filepath.Glob(filepath.Join(gateway.CADir("", "*"), "ca.pem"))
		switch len(all) {
		case 0:
			return errors.New("no interception CA: sluice makes one when a policy has git or http rules")
		case 1:
			dir = filepath.Dir(all[0])
		default:
			return fmt.Errorf("%d agents have a CA: say which with --name", len(all))
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	_, err = stdout.Write(data)
	return err
}
