package main

import (
	"strings"
	"testing"
)

// TestExecArgs: sluice exec takes NAME before or after its flags, and
// refuses what it cannot run with a usage error (exit status 2) before it
// looks for the agent; -h prints its help and does nothing else.
func TestExecArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr (stdout for help)
	}{
		{[]string{"exec", "-h"}, 0, "usage: sluice exec NAME [--user USER] [--state-dir DIR] -- COMMAND [ARG...]"},
		{[]string{"help", "exec"}, 0, "--state-dir dir"},
		{[]string{"exec"}, 2, "sluice exec: no agent named"},
		{[]string{"exec", "--user", "nobody"}, 2, "sluice exec: no agent named"},
		{[]string{"exec", "alpha"}, 2, "sluice exec: no command to run"},
		{[]string{"exec", "alpha", "--"}, 2, "sluice exec: no command to run"},
		{[]string{"exec", "--user", "nobody", "alpha", "--"}, 2, "sluice exec: no command to run"},
		{[]string{"exec", "al/pha", "--", "true"}, 2, `sluice exec: agent name "al/pha"`},
		{[]string{"exec", "alpha", "--usr", "x", "--", "true"}, 2, "unknown flag --usr; did you mean --user?"},
	} {
		code, out, errOut := sluice(t, tc.args...)
		got := errOut
		if code == 0 {
			got = out
		}
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.want)
		}
	}
}
