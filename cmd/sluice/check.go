package main

import (
	"fmt"

	"github.com/sluicegw/sluice/gateway"
)

var checkHelp = help{
	usage: "sluice check FILE...|-",
	about: `Validates policy files without running anything: every error with
file:line, then the warnings of the entries that are valid (risks a
person should know of; an entry acknowledges one with 'accept: [RISK]').
'-' reads a policy from standard input. Exit status 0 when every file is
valid, 1 when one is not, 2 for a wrong command line.`,
	examples: `  sluice check agent.yaml
  sluice check examples/*.yaml
  generate-policy | sluice check -`,
}

func checkCmd(args []string) error {
	fs := newFlags("check", checkHelp)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("check", "no policy file: sluice check FILE... ('-' for standard input)")
	}
	failed := false
	for _, file := range fs.Args() {
		p, warnings, err := gateway.PolicySource{File: file}.Load()
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
		}
		for _, w := range warnings {
			fmt.Fprintln(stderr, w)
		}
		if err != nil {
			continue
		}
		fmt.Fprintf(stdout, "%s: ok, %d entries, policy %s\n", displayName(file), len(p.Entries()), p.Hash())
	}
	if failed {
		return exitError{1}
	}
	return nil
}

func displayName(file string) string {
	if file == "-" {
		return "<stdin>"
	}
	return file
}
