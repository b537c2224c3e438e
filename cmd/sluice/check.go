package main

import (
	"fmt"
	"os"

	"github.com/sluicegw/sluice/gateway"
)

var checkHelp = help{
	usage: "sluice check FILE...|-",
	about: `Validates policy files without running anything: every error with
file:line, then the warnings of the entries that are valid (risks a
person should know of; an entry acknowledges one with 'accept: [RISK]').
A serve config (a file with 'agents:') is checked with every policy it
names. '-' reads a policy from standard input. Exit status 0 when every
file is valid, 1 when one is not, 2 for a wrong command line.`,
	examples: `  sluice check agent.yaml
  sluice check examples/*.yaml
  sluice check /etc/sluice/sluice.yaml
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
		if data, err := os.ReadFile(file); err == nil && gateway.IsServeConfig(data) {
			failed = !checkServe(file) || failed
			continue
		}
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

// checkServe checks a serve config and the policies it names, and says
// whether all are valid.
func checkServe(file string) bool {
	c, err := gateway.LoadServeConfig(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	if c == nil {
		return false
	}
	warned := map[string]bool{} // a policy two agents share warns once
	for _, a := range c.Agents {
		for _, w := range a.Warnings {
			if !warned[a.PolicyFile] {
				fmt.Fprintln(stderr, w)
			}
		}
		warned[a.PolicyFile] = true
		if a.Err == nil {
			fmt.Fprintf(stdout, "%s: agent %s: ok, %s, %d entries, policy %s\n", file, a.Name, a.PolicyFile, len(a.Policy.Entries()), a.Policy.Hash())
		}
	}
	if err != nil {
		return false
	}
	fmt.Fprintf(stdout, "%s: ok, %d agents\n", file, len(c.Agents))
	return true
}

func displayName(file string) string {
	if file == "-" {
		return "<stdin>"
	}
	return file
}
