package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/sandbox"
)

// statusCmd is `sluice status`: the runs of this machine, alive and dead.
func statusCmd(args []string) error {
	fs := newFlags("status", help{
		usage: "sluice status [--json] [--state-dir DIR]",
		about: `Lists the runs whose records are in the state directory, those of every
gateway namespace: the agent, ALIVE or DEAD (its sluice is gone: killed,
crashed, or its namespace deleted), sluice's pid, when it started and for
how long it has run, the hash of the policy in force, and the command. What a
dead run left (its agent, link, table, files) stays until 'sluice
cleanup' or the next run in the same namespace removes it.
The records are root's: run it with sudo.`,
		examples: "  sudo sluice status\n  sudo sluice status --json | jq -r 'select(.state == \"dead\") | .agent'",
	})
	asJSON := fs.Bool("json", false, "print one JSON object per run, a line each")
	dir := fs.String("state-dir", sandbox.DefaultStateDir, "the `dir`ectory of the runs' records")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("status", fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	runs, err := sandbox.Runs(*dir)
	if err != nil && len(runs) == 0 {
		// The directory, or every record in it, does not read: saying
		// "no runs" would be wrong.
		fmt.Fprintln(stderr, readError("status", err))
		return exitError{1}
	}
	now := time.Now()
	if *asJSON {
		writeRunsJSON(stdout, runs, now)
	} else {
		writeRunsTable(stdout, runs, now, *dir)
	}
	if err != nil {
		fmt.Fprintln(stderr, readError("status", err))
		return exitError{1}
	}
	return nil
}

// readError words an error of reading the records, saying that they are
// root's when that is why.
func readError(cmd string, err error) string {
	msg := fmt.Sprintf("sluice %s: %v", cmd, err)
	if errors.Is(err, os.ErrPermission) {
		msg += fmt.Sprintf("\nthe records are root's (needs root): try sudo sluice %s", cmd)
	}
	return msg
}

// writeRunsTable prints the runs as a table, or a line saying there are
// none.
func writeRunsTable(w io.Writer, runs []sandbox.Run, now time.Time, dir string) {
	if len(runs) == 0 {
		fmt.Fprintf(w, "no sluice runs (no records in %s)\n", dir)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tSTATE\tPID\tSTARTED\tUPTIME\tPOLICY\tNETNS\tCOMMAND")
	for _, r := range runs {
		started, uptime := "-", "-"
		if !r.Started.IsZero() {
			started = r.Started.Local().Format(time.DateTime)
		}
		if r.Alive && !r.Started.IsZero() {
			uptime = r.Uptime(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Name, runState(r), r.PID, started, uptime,
			cmp.Or(shortHash(r.PolicyHash), "-"), cmp.Or(r.NetNS, "-"), cmp.Or(clip(quoteCommand(r.Command), 60), "-"))
	}
	tw.Flush()
}

func runState(r sandbox.Run) string {
	if r.Alive {
		return "ALIVE"
	}
	return "DEAD"
}

// runJSON is a run as `sluice status --json` prints it.
type runJSON struct {
	Agent         string    `json:"agent"`
	State         string    `json:"state"` // "alive" or "dead"
	PID           int       `json:"pid"`
	Started       time.Time `json:"started,omitzero"`
	UptimeSeconds *int64    `json:"uptime_seconds,omitempty"` // alive runs only
	PolicyHash    string    `json:"policy_hash,omitempty"`
	Command       []string  `json:"command,omitempty"`
	NetNS         string    `json:"netns,omitempty"`
	NetNSCookie   uint64    `json:"netns_cookie"`
	Table         string    `json:"table,omitempty"`
	Iface         string    `json:"iface,omitempty"`
	AgentPID      int       `json:"agent_pid,omitempty"`
	Record        string    `json:"record"`
}

func writeRunsJSON(w io.Writer, runs []sandbox.Run, now time.Time) {
	enc := json.NewEncoder(w)
	for _, r := range runs {
		j := runJSON{Agent: r.Name, State: strings.ToLower(runState(r)), PID: r.PID, Started: r.Started,
			PolicyHash: r.PolicyHash, Command: r.Command, NetNS: r.NetNS, NetNSCookie: r.Cookie,
			Table: r.Table, Iface: r.Iface, AgentPID: r.AgentPID, Record: r.Record}
		if r.Alive && !r.Started.IsZero() {
			up := int64(r.Uptime(now) / time.Second)
			j.UptimeSeconds = &up
		}
		_ = enc.Encode(j)
	}
}

// shortHash is a policy hash as the logs and the journal show it
// ("sha256:" and 16 hex digits), cut to that length if it is longer.
func shortHash(h string) string {
	const short = len("sha256:") + 16
	if len(h) > short {
		return h[:short]
	}
	return h
}

// quoteCommand writes a command line on one line, quoting the arguments
// a shell would not take as they are.
func quoteCommand(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "":
			out[i] = a
		case strings.ContainsFunc(a, func(r rune) bool { return r < ' ' || r == 0x7f }):
			out[i] = fmt.Sprintf("%q", a) // control characters, newlines: escaped
		default:
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// clip shortens s to n runes, ending it with "…" when it cut it.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// cleanupCmd is `sluice cleanup`: removes what dead runs left.
func cleanupCmd(args []string) error {
	fs := newFlags("cleanup", help{
		usage: "sluice cleanup [--dry-run] [--state-dir DIR]",
		about: `Removes what the dead runs of 'sluice status' left (root): for each,
in its gateway namespace, its agent's processes, its link, its nftables
table, the forwarding settings no live run needs, its files and its
record, as the next run in that namespace would. A run whose namespace
was deleted lost its link and table with it: its agent, files and record
go. Live runs are not touched. Prints one line per thing removed.`,
		examples: "  sudo sluice cleanup --dry-run   # say what would go\n  sudo sluice cleanup",
	})
	dry := fs.Bool("dry-run", false, "print what would be removed, and remove nothing")
	dir := fs.String("state-dir", sandbox.DefaultStateDir, "the `dir`ectory of the runs' records")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("cleanup", fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "sluice cleanup: needs root, to enter the runs' network namespaces and remove their links and tables; try sudo sluice cleanup")
		return exitError{1}
	}
	done, err := sandbox.Cleanup(sandbox.CleanupConfig{
		Dir: *dir, DryRun: *dry,
		Recover: func() ([]string, error) { return gateway.Recover(*dir) },
	})
	for _, d := range done {
		fmt.Fprintln(stdout, d)
	}
	if len(done) == 0 && err == nil {
		fmt.Fprintf(stdout, "nothing to clean up: no dead runs in %s\n", *dir)
	}
	if err != nil {
		fmt.Fprintln(stderr, readError("cleanup", err))
		return exitError{1}
	}
	return nil
}
