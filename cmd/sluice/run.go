package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect"
)

// Defaults of sluice run. The agent's link gets addresses from ranges that
// no real network uses: the benchmarking block (RFC 2544) for IPv4 and a
// fixed unique-local prefix for IPv6.
const (
	defaultAgentNet  = "198.19.255.252/30"
	defaultAgentNet6 = "fd5c:1ce0:5c1c::/64"
	nflogGroup       = 9323
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

type runOptions struct {
	policyFile   string
	allow        multiFlag
	upstream     multiFlag
	globalRanges multiFlag
	user         string
	agentNet     string
	agentNet6    string
	noIPv6       bool
	minTTL       time.Duration
	maxTTL       time.Duration
	helloTimeout time.Duration
	idleTimeout  time.Duration
	maxConns     int64
	logAllowed   bool
	logJSON      bool
	verbose      bool
	command      []string
	global       []netip.Prefix // globalRanges, parsed
}

func parseRunFlags(args []string) (*runOptions, error) {
	o := &runOptions{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: sluice run [flags] -- COMMAND [ARG...]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.policyFile, "policy", "", "policy `file` (YAML, version 1)")
	fs.Var(&o.allow, "allow", "allow `HOST[:PORT]` or CIDR:PORT in addition to the policy (repeatable)")
	fs.Var(&o.upstream, "upstream", "upstream resolver `ADDR[:PORT]` (repeatable; default: the nameservers of /etc/resolv.conf)")
	fs.Var(&o.globalRanges, "global-range", "treat this documentation or benchmarking `PREFIX` as globally reachable in answers, for labs and tests (repeatable)")
	fs.StringVar(&o.user, "user", "", "run the command as this `user` (default: the user who ran sudo, else root)")
	fs.StringVar(&o.agentNet, "agent-net", defaultAgentNet, "IPv4 `prefix` of the link to the agent")
	fs.StringVar(&o.agentNet6, "agent-net6", defaultAgentNet6, "IPv6 `prefix` of the link to the agent")
	fs.BoolVar(&o.noIPv6, "no-ipv6", false, "give the agent no IPv6 even where the gateway has it")
	fs.DurationVar(&o.minTTL, "min-ttl", dnsfilter.DefaultMinTTL, "keep answered addresses open at least this long")
	fs.DurationVar(&o.maxTTL, "max-ttl", dnsfilter.DefaultMaxTTL, "keep answered addresses open at most this long per answer")
	fs.DurationVar(&o.helloTimeout, "hello-timeout", tlsinspect.DefaultHelloTimeout, "time a connection has to send its TLS ClientHello or HTTP request head")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", tlsinspect.DefaultIdleTimeout, "close a proxied connection that moves no data for this long")
	fs.Int64Var(&o.maxConns, "max-connections", 0, "proxied connections open at once; beyond, new ones are reset (0: 16384, or what the open files limit holds)")
	fs.BoolVar(&o.logAllowed, "log-allowed", false, "log allowed decisions too, not only refusals")
	fs.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines instead of text")
	fs.BoolVar(&o.verbose, "v", false, "log what sluice sets up and tears down")
	if err := fs.Parse(args); err != nil {
		return nil, exitError{2}
	}
	if o.maxConns < 0 {
		fmt.Fprintln(os.Stderr, "sluice: --max-connections must not be negative")
		return nil, exitError{2}
	}
	for _, r := range o.globalRanges {
		pfx, err := netip.ParsePrefix(r)
		if err == nil {
			err = policy.CheckGlobalRange(pfx)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice: --global-range: %v\n", err)
			return nil, exitError{2}
		}
		o.global = append(o.global, pfx)
	}
	o.command = fs.Args()
	if len(o.command) == 0 {
		fs.Usage()
		return nil, exitError{2}
	}
	return o, nil
}

func newLogger(o *runOptions) *slog.Logger {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if o.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func runCmd(args []string) error {
	o, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	p, warnings, err := loadPolicy(o.policyFile, o.allow)
	if err != nil {
		return err
	}
	log := newLogger(o)
	for _, w := range warnings {
		log.Warn("policy: "+w.Msg, "at", w.Source)
	}
	if len(p.Entries()) == 0 {
		log.Warn("the policy allows nothing: the command will reach no network")
	}
	if os.Geteuid() != 0 {
		return errors.New("run needs root to create network namespaces and nftables rules; try sudo")
	}
	cred, err := commandUser(o.user)
	if err != nil {
		return err
	}
	if cred.uid == 0 {
		log.Warn("the command runs as root, with the host's capabilities: it could leave its network namespace; " +
			"run agents as an unprivileged user (sudo picks the invoking user, or pass --user)")
	}
	if _, err := upstreamServers(o.upstream); err != nil {
		return err // before anything is set up
	}
	raiseFileLimit(log)
	g, err := newGateway(o, p, log)
	if err != nil {
		return err
	}
	code, err := g.runCommand(o.command, cred)
	if cerr := g.close(); cerr != nil {
		log.Error("cleanup incomplete", "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	return exitError{code}
}

// upstreamServers returns the resolvers allowed names are forwarded to.
func upstreamServers(flags []string) ([]string, error) {
	var out []string
	for _, f := range flags {
		if _, _, err := net.SplitHostPort(f); err != nil {
			f = net.JoinHostPort(strings.Trim(f, "[]"), "53")
		}
		if _, err := netip.ParseAddrPort(f); err != nil {
			return nil, fmt.Errorf("--upstream %q: want an IP address, optionally with a port", f)
		}
		out = append(out, f)
	}
	if len(out) > 0 {
		return out, nil
	}
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("no --upstream and cannot read /etc/resolv.conf: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no --upstream and /etc/resolv.conf names no nameserver")
	}
	return out, nil
}

// runCommand starts the command in the agent namespace, relays signals to
// it and returns its exit status the way a shell reports it.
func (g *gateway) runCommand(command []string, cred credential) (int, error) {
	resolv := fmt.Sprintf("%s/%s.resolv.conf", firewall.StateDir, g.agent.Iface)
	if err := g.state.WriteFile(resolv, []byte("nameserver "+g.agent.Gateway.String()+"\noptions edns0\n")); err != nil {
		return 0, err
	}
	// With a terminal the command stays in our process group, so Ctrl-C
	// reaches it from the terminal once, not twice; without one it gets a
	// group of its own and every signal is relayed.
	interactive := isTerminal(os.Stdin)
	args := []string{agentInitArg, "--resolv", resolv, fmt.Sprintf("--interactive=%t", interactive),
		"--uid", fmt.Sprint(cred.uid), "--gid", fmt.Sprint(cred.gid), "--groups", cred.groups, "--"}
	cmd := exec.Command("/proc/self/exe", append(args, command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = cred.env(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Setpgid: !interactive}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := g.agent.Start(cmd); err != nil {
		return 0, fmt.Errorf("start %s: %w", command[0], err)
	}
	if err := g.state.SetAgent(cmd.Process.Pid); err != nil {
		g.log.Error("cannot record the agent's process: a crash now would leave it running", "err", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	received := 0
	for {
		select {
		case sig := <-sigs:
			received++
			if received > 1 {
				g.log.Warn("second signal: killing the command", "signal", sig)
				_ = cmd.Process.Kill()
				continue
			}
			if interactive && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
				continue // the terminal sent it to the command too
			}
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			return exitStatus(cmd, err)
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	st := cmd.ProcessState
	if st == nil {
		return 0, err
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// raiseFileLimit lets the proxy hold many connections: each spliced one
// takes two sockets and, while data flows, two pipes. Where the hard limit
// cannot be raised, the soft one is raised to it; the proxy bounds its
// connections by what is left (tlsinspect.DefaultMaxConns).
func raiseFileLimit(log *slog.Logger) {
	const want = 1 << 20
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	raised := unix.Rlimit{Cur: max(lim.Cur, want), Max: max(lim.Max, want)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
		log.Debug("cannot raise the open files limit", "err", err, "hard", lim.Max)
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}

// heartbeat keeps the dead-man switch alive until ctx ends.
func heartbeat(ctx context.Context, m *firewall.Manager, period time.Duration, log *slog.Logger) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Heartbeat(); err != nil {
				log.Error("heartbeat failed: the agent's new connections will be refused", "err", err)
			}
		}
	}
}
