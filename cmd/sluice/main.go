// Command sluice is a transparent egress firewall for AI coding agents.
//
//	sluice run [flags] -- COMMAND [ARG...]   run COMMAND with only the policy's egress
//	sluice check FILE...                     validate policy files, print warnings
//	sluice journal list|verify|export         read the decision journal
//	sluice ui                                  review a journal in the browser
//	sluice ca export                           print the interception CA
//	sluice version
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/sluicegw/sluice/sandbox"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `sluice: a transparent egress firewall for AI coding agents

usage:
  sluice run [flags] -- COMMAND [ARG...]   run COMMAND in a network namespace whose
                                           only way out is this gateway (needs root)
  sluice check FILE...                     validate policy files: every error with
                                           file:line, then warnings
  sluice journal list [flags]              the journal's records, newest first
  sluice journal verify                    check the journal's hash chain
  sluice journal export [--follow] [--format jsonl|ocsf]
  sluice ui [--journal FILE] [--listen ADDR] [--policy FILE]
                                           review a journal in the browser
  sluice ca export [--name NAME]           print the CA the agent trusts for the hosts
                                           with git or http rules
  sluice version

'sluice run -h' lists the flags of run.
`

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
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(args[1:])
	case "check":
		err = checkCmd(args[1:])
	case "journal":
		err = journalCmd(args[1:])
	case "ui":
		err = uiCmd(args[1:])
	case "ca":
		err = caCmd(args[1:])
	case "version", "--version":
		fmt.Println("sluice", version)
	case sandbox.InitArg:
		return sandbox.Init(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(os.Stderr, "sluice:", err)
		return 1
	}
}
