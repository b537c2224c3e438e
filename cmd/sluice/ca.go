package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicegw/sluice/gateway"
)

// caCmd is `sluice ca export`: the CA an agent trusts for the hosts with
// rules, for setups that do not go through sluice run's mounts (a VM, a
// container with its own trust store).
func caCmd(args []string) error {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(os.Stderr, "usage: sluice ca export [--name NAME]")
		return exitError{2}
	}
	fs := flag.NewFlagSet("ca export", flag.ContinueOnError)
	name := fs.String("name", "", "the agent's `name` (default: the only agent with a CA)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{2}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ca export: unexpected %q", fs.Arg(0))
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
	_, err = os.Stdout.Write(data)
	return err
}
