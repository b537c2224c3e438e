package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/sandbox"
	"github.com/sluicegw/sluice/tlsinspect"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// prefixFlag is a flag holding one network prefix.
type prefixFlag struct{ p *netip.Prefix }

func (f prefixFlag) String() string {
	if f.p == nil || !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}

func (f prefixFlag) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return errors.New("want a network prefix such as 198.19.255.252/30")
	}
	*f.p = p
	return nil
}

// runOptions are sluice run's flags.
type runOptions struct {
	source     gateway.PolicySource
	upstream   multiFlag
	global     multiFlag
	user       string
	logAllowed bool
	logJSON    bool
	logFile    string
	manyAgents bool // serve: the human log names each line's agent
	verbose    bool
	command    []string
	cfg        gateway.Config
	store      journal.StoreConfig
	ui         string
	upstreamCA string
}

var runHelp = help{
	usage: "sluice run [flags] -- COMMAND [ARG...]",
	about: `Runs COMMAND in a new network namespace whose only way out is this
gateway: DNS answered by sluice's filtering resolver, connections only to
the addresses of allowed names, TLS and HTTP checked against the name they
were resolved for. Needs root; under sudo the command runs as the invoking
user. Everything sluice set up is removed when the command ends or on
Ctrl-C. sluice's flags go before COMMAND; '--' ends them.`,
	examples: `  # one host, its default ports (80, 443)
  sudo sluice run --allow api.github.com -- curl -sI https://api.github.com
  # several ports in one value, and a host on the local network
  sudo sluice run --allow api.example.com:443,8443 --allow-private nas.lan:5000 -- ./agent
  # a policy file, an API key passed through sudo by name, the log kept in a file
  sudo --preserve-env=ANTHROPIC_API_KEY sluice run --policy examples/claude-code.yaml --log-file agent.log -- claude
  # review refusals in the browser while the agent runs
  sudo sluice run --ui 127.0.0.1:8099 --policy agent.yaml -- aider`,
}

// runFlags defines sluice run's flags on a new flag set, filling o.
func runFlags(o *runOptions) *flag.FlagSet {
	c := &o.cfg
	fs := newFlags("run", runHelp)
	fs.StringVar(&o.source.File, "policy", "", "policy `file` (YAML, version 1; see 'sluice check')")
	fs.Var((*multiFlag)(&o.source.Allow), "allow", "allow `HOST[:PORTS]` or CIDR:PORTS beside the policy; PORTS is 443 or 80,443 (default 80,443 for a host); repeatable")
	fs.Var((*multiFlag)(&o.source.AllowPrivate), "allow-private", "like --allow, and the `HOST[:PORTS]` may resolve to private addresses (a homelab's nas.lan, *.home.arpa); repeatable")
	fs.Var(&acceptFlag{&o.source.Accept}, "accept", "accept these `WARNINGS` for the --allow entries, as 'accept:' does in a policy (git-push-risk, ...); repeatable or comma-separated")
	fs.Var(&o.upstream, "upstream", "upstream resolver `ADDR[:PORT]` (repeatable; default: the nameservers of /etc/resolv.conf)")
	fs.Var(&o.global, "global-range", "treat this documentation or benchmarking `PREFIX` as globally reachable in answers, for labs and tests (repeatable)")
	fs.StringVar(&c.Name, "name", "", "the agent's `name` in every record (default: the command's base name)")
	fs.StringVar(&o.user, "user", "", "run the command as this `user` (default: the user who ran sudo, else root)")
	fs.Var(prefixFlag{&c.AgentNet}, "agent-net", "IPv4 `prefix` of the link to the agent (default: the first free /30 of "+gateway.AgentPool+")")
	fs.Var(prefixFlag{&c.AgentNet6}, "agent-net6", "IPv6 `prefix` of the link to the agent (default: the first free /64 of "+gateway.AgentPool6+")")
	fs.BoolVar(&c.NoIPv6, "no-ipv6", false, "give the agent no IPv6 even where the gateway has it")
	fs.DurationVar(&c.MinTTL, "min-ttl", dnsfilter.DefaultMinTTL, "keep answered addresses open at least this `duration` (30s, 5m)")
	fs.DurationVar(&c.MaxTTL, "max-ttl", dnsfilter.DefaultMaxTTL, "keep answered addresses open at most this `duration` per answer")
	fs.DurationVar(&c.HelloTimeout, "hello-timeout", tlsinspect.DefaultHelloTimeout, "`duration` a connection has to send its TLS ClientHello or HTTP request head")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", tlsinspect.DefaultIdleTimeout, "close a proxied connection that moves no data for this `duration`")
	fs.Int64Var(&c.MaxConns, "max-connections", 0, "proxied connections open at once; beyond, new ones are reset (0: 16384, or what the open files limit holds)")
	fs.StringVar(&o.store.Path, "journal", journal.DefaultPath, "keep every decision in this `file` (SQLite); \"\" for none")
	fs.DurationVar(&o.store.MaxAge, "journal-max-age", 30*24*time.Hour, "delete journal records older than this `duration` (0: keep)")
	fs.Int64Var(&o.store.MaxSize, "journal-max-size", 1<<30, "delete the oldest journal records beyond this many `bytes` (0: no bound)")
	fs.StringVar(&o.ui, "ui", "", "serve the web UI on this `address` (such as 127.0.0.1:8099) while the command runs")
	fs.BoolVar(&o.logAllowed, "log-allowed", false, "log allowed decisions too, not only refusals")
	fs.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines (default: short lines on a terminal, key=value otherwise)")
	fs.StringVar(&o.logFile, "log-file", "", "write sluice's log to this `file` (appended) instead of stderr, which the command shares")
	fs.BoolVar(&o.verbose, "v", false, "log what sluice sets up and tears down")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "verify the hosts whose TLS sluice terminates (those with git or http rules) against the CAs in this PEM `file` instead of the system's")
	return fs
}

// acceptFlag collects --accept values, comma-separated or repeated.
type acceptFlag struct{ to *[]string }

func (f *acceptFlag) String() string {
	if f.to == nil {
		return ""
	}
	return strings.Join(*f.to, ",")
}

func (f *acceptFlag) Set(s string) error {
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			*f.to = append(*f.to, r)
		}
	}
	return nil
}

func parseRunFlags(args []string) (*runOptions, error) {
	o := &runOptions{}
	fs := runFlags(o)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if len(o.source.Accept) > 0 && len(o.source.Allow)+len(o.source.AllowPrivate) == 0 {
		return nil, usageError("run", "--accept applies to --allow entries, and there are none; in a policy file, write 'accept: [RISK]' on the entry")
	}
	if o.source.File == "-" {
		return nil, usageError("run", "--policy -: the command's standard input is its own; give the policy in a file")
	}
	if err := o.complete(); err != nil {
		return nil, usageError("run", err.Error())
	}
	o.command = fs.Args()
	if len(o.command) == 0 {
		return nil, usageError("run", "no command to run: sluice run [flags] -- COMMAND [ARG...]")
	}
	if o.cfg.Name == "" {
		o.cfg.Name = gateway.NameFor(o.command[0])
	} else if !gateway.ValidName(o.cfg.Name) {
		return nil, usageError("run", fmt.Sprintf("--name %q: want 1 to 32 letters, digits, '.', '_' or '-'", o.cfg.Name))
	}
	return o, nil
}

// misplacedFlags returns the arguments of the command that are sluice
// run's own flags: "sluice run curl --allow x" passes --allow to curl.
func misplacedFlags(command []string) []string {
	defined := runFlags(&runOptions{})
	var out []string
	for _, a := range command[1:] {
		if a == "--" {
			break
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			name, ok = strings.CutPrefix(a, "-")
		}
		name, _, _ = strings.Cut(name, "=")
		if ok && len(name) > 1 && defined.Lookup(name) != nil {
			out = append(out, a)
		}
	}
	return out
}

// complete turns the flags that need parsing into the gateway's config.
func (o *runOptions) complete() error {
	if o.cfg.MaxConns < 0 {
		return errors.New("--max-connections must not be negative")
	}
	if o.cfg.MinTTL < 0 || o.cfg.MaxTTL < 0 || (o.cfg.MaxTTL > 0 && o.cfg.MinTTL > o.cfg.MaxTTL) {
		return fmt.Errorf("--min-ttl %s and --max-ttl %s: want 0 <= min-ttl <= max-ttl", o.cfg.MinTTL, o.cfg.MaxTTL)
	}
	if o.upstreamCA != "" {
		roots, err := gateway.LoadRoots(o.upstreamCA)
		if err != nil {
			return fmt.Errorf("--upstream-ca: %w", err)
		}
		o.cfg.UpstreamRoots = roots
	}
	for _, r := range o.global {
		pfx, err := netip.ParsePrefix(r)
		if err == nil {
			err = policy.CheckGlobalRange(pfx)
		}
		if err != nil {
			return fmt.Errorf("--global-range: %w", err)
		}
		o.cfg.Global = append(o.cfg.Global, pfx)
	}
	return nil
}

// newLogger makes sluice's log: on stderr, or in --log-file and, until
// the command starts (see the returned func), its warnings and errors on
// stderr too, so that a person who sent the log to a file still sees
// what went wrong at start. Each in the format logFormat picks for it.
func newLogger(o *runOptions) (log *slog.Logger, started func(), closeFile func(), err error) {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	toStderr := newHandler(stderr, logFormat(stderr, o.logJSON), level, o.manyAgents)
	if o.logFile == "" {
		return slog.New(toStderr), func() {}, func() {}, nil
	}
	f, err := openLogFile(o.logFile)
	if err != nil {
		return nil, nil, nil, err
	}
	h := &startupTee{file: newHandler(f, logFormat(f, o.logJSON), level, o.manyAgents), stderr: toStderr, started: new(atomic.Bool)}
	return slog.New(h), func() { h.started.Store(true) }, func() { f.Close() }, nil
}

// startupTee writes every record to the log file, and until started the
// warnings and errors to stderr as well.
type startupTee struct {
	file, stderr slog.Handler
	started      *atomic.Bool // shared by the tees WithAttrs makes
}

func (h *startupTee) Enabled(ctx context.Context, l slog.Level) bool { return h.file.Enabled(ctx, l) }

func (h *startupTee) Handle(ctx context.Context, r slog.Record) error {
	err := h.file.Handle(ctx, r)
	if r.Level >= slog.LevelWarn && !h.started.Load() {
		_ = h.stderr.Handle(ctx, r.Clone())
	}
	return err
}

func (h *startupTee) WithAttrs(as []slog.Attr) slog.Handler {
	return &startupTee{file: h.file.WithAttrs(as), stderr: h.stderr.WithAttrs(as), started: h.started}
}

func (h *startupTee) WithGroup(name string) slog.Handler {
	return &startupTee{file: h.file.WithGroup(name), stderr: h.stderr.WithGroup(name), started: h.started}
}

func runCmd(args []string) error {
	o, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	p, warnings, err := o.source.Load()
	if err != nil {
		return err
	}
	if len(p.Entries()) == 0 {
		if m := misplacedFlags(o.command); len(m) > 0 {
			fmt.Fprintf(stderr, "sluice run: warning: %s after the command go to the command, not to sluice, and the policy allows nothing; "+
				"put sluice's flags, with their values, before the command: sluice run [flags] -- COMMAND [ARG...]\n", strings.Join(m, " "))
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("run needs root to create network namespaces and nftables rules; try sudo")
	}
	log, started, closeLog, err := newLogger(o)
	if err != nil {
		return err
	}
	defer closeLog()
	user, err := sandbox.LookupUser(o.user)
	if err != nil {
		return err
	}
	if o.cfg.Upstreams, err = upstreams(o.upstream); err != nil {
		return err // before anything is set up
	}
	o.cfg.Policy, o.cfg.PolicySource, o.cfg.Log = p, o.source, log
	summary := &journal.Summary{}
	var logSink journal.Writer = journal.LogSink{Log: log, Allowed: o.logAllowed}
	o.cfg.Journal = journal.Tee{summary, logSink}
	var store *journal.Store
	if o.ui != "" && o.store.Path == "" {
		return errors.New("--ui needs the journal: give --journal a file")
	}
	if o.store.Path != "" {
		o.store.Log = log
		if store, err = journal.OpenStore(o.store); err != nil {
			return err
		}
		defer store.Close()
		o.cfg.Journal = journal.Tee{summary, store, logSink}
	}
	gateway.RaiseFileLimit(log)
	// Signals are caught before the gateway exists, so that none is lost
	// between its start and the command's.
	sigs, hup := make(chan os.Signal, 4), make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(sigs)
	defer signal.Stop(hup)
	g, err := gateway.New(o.cfg)
	if err != nil {
		return err
	}
	if o.ui != "" {
		stop, err := serveUI(o.ui, store, store.Changed, g, log)
		if err != nil {
			g.Close()
			return err
		}
		defer stop()
	}
	// The warnings wait for a start that worked: before it, a person has
	// an error to fix first.
	for _, w := range warnings {
		log.Warn("policy: "+w.Msg, "at", w.Source)
	}
	if len(p.Entries()) == 0 {
		log.Warn("the policy allows nothing: the command will reach no network; give --allow HOST or --policy FILE")
	}
	if user.UID == 0 {
		log.Warn("the command runs as root, with the host's capabilities: it could leave its network namespace; " +
			"run agents as an unprivileged user (sudo picks the invoking user, or pass --user)")
	}
	go func() {
		for range hup {
			_ = g.Reload() // it logs what went wrong; the policy in force stays
		}
	}()
	started()
	code, err := g.RunCommand(o.command, user, sigs)
	if cerr := g.Close(); cerr != nil {
		log.Error("cleanup incomplete", "err", cerr)
		err = errors.Join(err, cerr)
	}
	printSummary(summary, o.store.Path)
	if err != nil {
		return err
	}
	return exitError{code}
}

// printSummary tells the person at the terminal, as the run ends, what
// was refused: what to allow, at a glance, and where the details are.
func printSummary(s *journal.Summary, journalPath string) {
	line := s.Line(8)
	if line == "" {
		return
	}
	if journalPath != "" {
		line += "; journal: " + journalPath
	}
	fmt.Fprintln(stderr, "sluice: "+line)
}

// upstreams parses --upstream, or takes /etc/resolv.conf's nameservers.
func upstreams(flags []string) ([]netip.AddrPort, error) {
	if len(flags) == 0 {
		out, err := gateway.SystemResolvers()
		if err != nil {
			return nil, fmt.Errorf("no --upstream and %w", err)
		}
		return out, nil
	}
	var out []netip.AddrPort
	for _, f := range flags {
		ap, err := gateway.ParseUpstream(f)
		if err != nil {
			return nil, fmt.Errorf("--upstream: %w", err)
		}
		out = append(out, ap)
	}
	return out, nil
}
