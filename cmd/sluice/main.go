// Command sluice is a transparent egress firewall for AI coding agents.
//
//	sluice run [flags] -- COMMAND [ARG...]   run COMMAND with only the policy's egress
//	sluice check FILE...|-                   validate policy files, print warnings
//	sluice journal list|verify|export        read the decision journal
//	sluice ui                                review a journal in the browser
//	sluice ca export                         print the interception CA
//	sluice status | cleanup                  the runs on this machine; what dead ones left
//	sluice completion bash|zsh|fish          shell completion
//	sluice version
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/sluicegw/sluice/sandbox"
)

// command is one of sluice's subcommands.
type command struct {
	name     string
	synopsis string // one line in the top-level usage
	run      func(args []string) error
}

// commands are sluice's subcommands, in the order the usage lists them.
// Each prints its own help with -h.
var commands []command

func init() {
	commands = []command{
		{"run", "run a command whose only way out is this gateway (root)", runCmd},
		{"serve", "run the gateway of every agent a config names, reloading on change (root)", serveCmd},
		{"exec", "run a command in the namespace of an agent sluice serve serves (root)", execCmd},
		{"check", "validate policy files: every error with file:line, then warnings", checkCmd},
		{"presets", "list the policy fragments a policy may include by name", presetsCmd},
		{"policy", "suggest a policy from the journal, or import another tool's allow-list", policyCmd},
		{"journal", "read the decision journal: list, verify, export", journalCmd},
		{"ui", "review a journal in the browser", uiCmd},
		{"ca", "print the CA the agent trusts for hosts with git or http rules", caCmd},
		{"status", "the runs on this machine, alive and dead", statusCmd},
		{"cleanup", "remove what dead runs left behind (root)", cleanupCmd},
		{"completion", "print shell completion for bash, zsh or fish", completionCmd},
		{"version", "print the version, revision and Go version", versionCmd},
	}
}

func topUsage() string {
	var b strings.Builder
	b.WriteString("sluice: a transparent egress firewall for AI coding agents\n\nusage: sluice COMMAND [flags] [ARG...]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-11s %s\n", c.name, c.synopsis)
	}
	b.WriteString(`
examples:
  sudo sluice run --allow api.github.com -- curl -sI https://api.github.com
  sluice check agent.yaml
  sudo sluice journal list --verdict refused --since 1h

'sluice help COMMAND' or 'sluice COMMAND -h' shows a command's flags and examples.
`)
	return b.String()
}

// exitError carries the exit status a subcommand wants, after it has
// already said why.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// The main goroutine keeps the main thread to itself, so that the
// goroutines that enter the agent's namespace never run on it (see
// sandbox.Agent.Run).
func init() { runtime.LockOSThread() }

func main() {
	code := run(os.Args[1:])
	stopProfile()
	os.Exit(code)
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage())
		return 2
	}
	var err error
	switch name := args[0]; name {
	case sandbox.InitArg:
		return sandbox.Init(args[1:])
	case "help", "-h", "--help":
		if len(args) > 1 && name == "help" && args[1] != "help" && args[1] != "-h" && args[1] != "--help" {
			if c := lookup(args[1]); c != nil {
				// `sluice help journal list` is `sluice journal list -h`.
				err = c.run(append(args[2:], "-h"))
				break
			}
			err = unknownCommand(args[1])
			break
		}
		fmt.Fprint(stdout, topUsage())
	case "--version":
		err = versionCmd(nil)
	default:
		if c := lookup(name); c != nil {
			err = c.run(args[1:])
		} else {
			err = unknownCommand(name)
		}
	}
	var ee exitError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func unknownCommand(name string) error {
	msg := fmt.Sprintf("sluice: unknown command %q", name)
	best, bestD := "", 1<<30
	for _, c := range commands {
		if d := editDistance(name, c.name); d < bestD {
			best, bestD = c.name, d
		}
	}
	if bestD <= max(1, len(best)/3) {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	fmt.Fprintln(stderr, msg)
	fmt.Fprintln(stderr, "run 'sluice help' for the list of commands")
	return exitError{2}
}
