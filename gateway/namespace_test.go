package gateway

import (
	"strings"
	"testing"

	"github.com/sluicegw/sluice/sandbox"
)

func TestValidNamespace(t *testing.T) {
	for name, want := range map[string]bool{
		"sluice-alpha": true, NamespaceFor("a.b_c-1"): true, NamespaceFor(strings.Repeat("x", 32)): true,
		"sluice-": false, "alpha": false, "gw": false, "sluice-a/b": false, "sluice-..": false,
		NamespaceFor(strings.Repeat("x", 33)): false, "Sluice-alpha": false,
	} {
		if got := ValidNamespace(name); got != want {
			t.Errorf("ValidNamespace(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestConfigNamespace: a namespace that is not an agent's is refused at
// validation, with the others' problems.
func TestConfigNamespace(t *testing.T) {
	c := Config{Name: "alpha", Namespace: "gw"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `agent namespace "gw": want "sluice-"`) || !strings.Contains(err.Error(), "no policy") {
		t.Errorf("Validate: %v", err)
	}
	c.Namespace = NamespaceFor("alpha")
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "namespace") {
		t.Errorf("Validate of %s: %v", c.Namespace, err)
	}
}

// TestFindServed: sluice exec finds the live run that serves the agent in
// its named namespace, and otherwise says why, naming what is served.
func TestFindServed(t *testing.T) {
	run := func(agent string, alive bool, resolv string) sandbox.Run {
		r := sandbox.Run{Name: agent, PID: 100, Alive: alive, ResolvConf: resolv}
		if agent != "" {
			r.AgentNetNS = NamespaceFor(agent)
		}
		return r
	}
	runs := []sandbox.Run{
		run("beta", true, "/run/sluice/b.resolv.conf"),
		run("alpha", true, "/run/sluice/a.resolv.conf"),
		{Name: "curl", Alive: true}, // sluice run's: not found by name
		run("gone", false, "/run/sluice/g.resolv.conf"),
		run("early", true, ""),
	}
	for _, tc := range []struct {
		name  string
		runs  []sandbox.Run
		found bool
		want  string // the resolv.conf found, or a part of the error
	}{
		{"alpha", runs, true, "/run/sluice/a.resolv.conf"},
		{"curl", runs, false, `no agent "curl": the agents served are alpha, beta, early`},
		{"gone", runs, false, `agent "gone" is not served: its sluice (pid 100) is dead`},
		{"early", runs, false, `agent "early" is starting`},
		{"alpha", nil, false, `no agent "alpha": no running sluice serves an agent namespace (no record of one in /dir)`},
		{"alpha", []sandbox.Run{run("alpha", false, "x"), run("alpha", true, "y")}, true, "y"},
	} {
		r, err := findServed(tc.runs, tc.name, "/dir")
		got := r.ResolvConf
		if err != nil {
			got = err.Error()
		}
		if (err == nil) != tc.found || !strings.Contains(got, tc.want) {
			t.Errorf("findServed(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
