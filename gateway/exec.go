package gateway

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sluicegw/sluice/sandbox"
)

// launchFiles writes, once, the files a command started in the agent
// gets as /etc/resolv.conf (the gateway's address on the link) and as
// its CA bundle ("" when the policy had no host with rules at start),
// recorded with the run so that a crash cannot leave them behind.
func (g *Gateway) launchFiles() (resolv, bundle string, err error) {
	if g.launchWritten {
		return g.resolvConf, g.caBundle, nil
	}
	resolv = fmt.Sprintf("%s/%s.resolv.conf", g.state.Dir(), g.state.Iface)
	if err := g.state.WriteFile(resolv, []byte("nameserver "+g.agent.Gateway.String()+"\noptions edns0\n")); err != nil {
		return "", "", err
	}
	if bundle, err = g.agentBundle(); err != nil {
		return "", "", err
	}
	g.resolvConf, g.caBundle, g.launchWritten = resolv, bundle, true
	return resolv, bundle, nil
}

// writeLaunchFiles writes the launch files of an agent with a named
// namespace at start, and names them in its record, where `sluice exec`
// finds them; they go with the record (Close, Detach, or the next start
// after a crash). sluice run's agent gets them when its command starts.
func (g *Gateway) writeLaunchFiles() error {
	if g.cfg.Namespace == "" {
		return nil
	}
	resolv, bundle, err := g.launchFiles()
	if err != nil {
		return err
	}
	return g.state.SetLaunchFiles(resolv, bundle)
}

// ExecConfig is a command to run in the namespace of an agent that a
// running gateway serves (`sluice exec`).
type ExecConfig struct {
	// Agent is the agent's name: its namespace is NamespaceFor(Agent).
	Agent string
	// StateDir holds the gateways' records (sandbox.DefaultStateDir when
	// empty): the agent's, which names its resolv.conf and CA bundle.
	StateDir string
	// Args is the command and its arguments.
	Args []string
	// User is who the command runs as.
	User sandbox.Credential
	// Env is the command's environment (see sandbox.Launch).
	Env []string
	// Stdin, Stdout and Stderr are the command's standard streams.
	Stdin, Stdout, Stderr *os.File
	// Log receives what the command's supervision has to say.
	Log *slog.Logger
}

// Exec runs cfg.Args in the named namespace of the agent cfg.Agent, which
// a live gateway serves, the way RunCommand runs sluice run's command:
// the gateway's resolv.conf and CA bundle mounted, the host's side doors
// hidden, as cfg.User, signals from sigs relayed. It returns the
// command's exit status the way a shell reports it. An agent that no
// live gateway serves is an error that names the agents that are served.
func Exec(cfg ExecConfig, sigs <-chan os.Signal) (int, error) {
	dir := cmp.Or(cfg.StateDir, sandbox.DefaultStateDir)
	// The record names the files mounted over the command's resolv.conf
	// and CA bundle, as root: only root's own records are taken.
	if err := sandbox.TrustedDir(dir); err != nil {
		return 0, err
	}
	runs, rerr := sandbox.Runs(dir)
	r, err := findServed(runs, cfg.Agent, dir)
	if err != nil {
		if rerr != nil {
			err = fmt.Errorf("%w (and %w)", err, rerr)
		}
		return 0, err
	}
	for _, f := range []string{r.ResolvConf, r.CABundle} {
		if f != "" && !strings.HasPrefix(filepath.Clean(f), filepath.Clean(dir)+"/") {
			return 0, fmt.Errorf("the record of agent %q names %s, outside the state directory %s: not taken", cfg.Agent, f, dir)
		}
	}
	return sandbox.Launch{
		NetNS: r.AgentNetNS, Args: cfg.Args, ResolvConf: r.ResolvConf, CABundle: r.CABundle,
		User: cfg.User, Env: cfg.Env, Stdin: cfg.Stdin, Stdout: cfg.Stdout, Stderr: cfg.Stderr, Log: cfg.Log,
	}.Run(sigs, nil)
}

// findServed picks, among the runs recorded in dir, the live one that
// serves the agent name in its named namespace; or says why there is
// none, naming the agents that are served.
func findServed(runs []sandbox.Run, name, dir string) (sandbox.Run, error) {
	want := NamespaceFor(name)
	var served []string
	var dead *sandbox.Run
	for i, r := range runs {
		if r.Router && r.Alive && r.Name == name {
			return r, fmt.Errorf("agent %q is served in router mode, behind interface %s: %w", name, r.Iface, sandbox.ErrRouterMode)
		}
		if r.AgentNetNS == "" {
			continue // sluice run's, or router mode's: no namespace to find
		}
		if r.Alive {
			served = append(served, strings.TrimPrefix(r.AgentNetNS, NamespacePrefix))
		}
		if r.AgentNetNS != want {
			continue
		}
		switch {
		case r.Alive && r.ResolvConf == "":
			return r, fmt.Errorf("agent %q is starting: try again once its gateway is ready", name)
		case r.Alive:
			return r, nil
		default:
			dead = &runs[i]
		}
	}
	if dead != nil {
		return sandbox.Run{}, fmt.Errorf("agent %q is not served: its sluice (pid %d) is dead, and its namespace %s is cut off until the next start with it", name, dead.PID, want)
	}
	slices.Sort(served)
	if len(served) == 0 {
		return sandbox.Run{}, fmt.Errorf("no agent %q: no running sluice serves an agent namespace (no record of one in %s)", name, dir)
	}
	return sandbox.Run{}, fmt.Errorf("no agent %q: the agents served are %s", name, strings.Join(slices.Compact(served), ", "))
}
