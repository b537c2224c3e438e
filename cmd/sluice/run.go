package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
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
	verbose    bool
	command    []string
	cfg        gateway.Config
	store      journal.StoreConfig
	ui         string
	upstreamCA string
}

func parseRunFlags(args []string) (*runOptions, error) {
	o := &runOptions{}
	c := &o.cfg
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: sluice run [flags] -- COMMAND [ARG...]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.source.File, "policy", "", "policy `file` (YAML, version 1)")
	fs.Var((*multiFlag)(&o.source.Allow), "allow", "allow `HOST[:PORT]` or CIDR:PORT in addition to the policy (repeatable)")
	fs.Var(&o.upstream, "upstream", "upstream resolver `ADDR[:PORT]` (repeatable; default: the nameservers of /etc/resolv.conf)")
	fs.Var(&o.global, "global-range", "treat this documentation or benchmarking `PREFIX` as globally reachable in answers, for labs and tests (repeatable)")
	fs.StringVar(&c.Name, "name", "", "the agent's `name` in every record (default: the command's base name)")
	fs.StringVar(&o.user, "user", "", "run the command as this `user` (default: the user who ran sudo, else root)")
	fs.Var(prefixFlag{&c.AgentNet}, "agent-net", "IPv4 `prefix` of the link to the agent (default: the first free /30 of "+gateway.AgentPool+")")
	fs.Var(prefixFlag{&c.AgentNet6}, "agent-net6", "IPv6 `prefix` of the link to the agent (default: the first free /64 of "+gateway.AgentPool6+")")
	fs.BoolVar(&c.NoIPv6, "no-ipv6", false, "give the agent no IPv6 even where the gateway has it")
	fs.DurationVar(&c.MinTTL, "min-ttl", dnsfilter.DefaultMinTTL, "keep answered addresses open at least this long")
	fs.DurationVar(&c.MaxTTL, "max-ttl", dnsfilter.DefaultMaxTTL, "keep answered addresses open at most this long per answer")
	fs.DurationVar(&c.HelloTimeout, "hello-timeout", tlsinspect.DefaultHelloTimeout, "time a connection has to send its TLS ClientHello or HTTP request head")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", tlsinspect.DefaultIdleTimeout, "close a proxied connection that moves no data for this long")
	fs.Int64Var(&c.MaxConns, "max-connections", 0, "proxied connections open at once; beyond, new ones are reset (0: 16384, or what the open files limit holds)")
	fs.StringVar(&o.store.Path, "journal", journal.DefaultPath, "keep every decision in this `file` (SQLite); \"\" for none")
	fs.DurationVar(&o.store.MaxAge, "journal-max-age", 30*24*time.Hour, "delete journal records older than this (0: keep)")
	fs.Int64Var(&o.store.MaxSize, "journal-max-size", 1<<30, "delete the oldest journal records beyond this many `bytes` (0: no bound)")
	fs.StringVar(&o.ui, "ui", "", "serve the web UI on this `address` (such as 127.0.0.1:8099) while the command runs")
	fs.BoolVar(&o.logAllowed, "log-allowed", false, "log allowed decisions too, not only refusals")
	fs.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines instead of text")
	fs.BoolVar(&o.verbose, "v", false, "log what sluice sets up and tears down")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "verify the hosts whose TLS sluice terminates (those with git or http rules) against the CAs in this PEM `file` instead of the system's")
	if err := fs.Parse(args); err != nil {
		return nil, exitError{2}
	}
	if err := o.complete(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		return nil, exitError{2}
	}
	o.command = fs.Args()
	if len(o.command) == 0 {
		fs.Usage()
		return nil, exitError{2}
	}
	if c.Name == "" {
		c.Name = gateway.NameFor(o.command[0])
	} else if !gateway.ValidName(c.Name) {
		fmt.Fprintf(os.Stderr, "sluice: --name %q: want 1 to 32 letters, digits, '.', '_' or '-'\n", c.Name)
		return nil, exitError{2}
	}
	return o, nil
}

// complete turns the flags that need parsing into the gateway's config.
func (o *runOptions) complete() error {
	if o.cfg.MaxConns < 0 {
		return errors.New("--max-connections must not be negative")
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
	p, warnings, err := o.source.Load()
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
	user, err := sandbox.LookupUser(o.user)
	if err != nil {
		return err
	}
	if user.UID == 0 {
		log.Warn("the command runs as root, with the host's capabilities: it could leave its network namespace; " +
			"run agents as an unprivileged user (sudo picks the invoking user, or pass --user)")
	}
	if o.cfg.Upstreams, err = upstreams(o.upstream); err != nil {
		return err // before anything is set up
	}
	o.cfg.Policy, o.cfg.PolicySource, o.cfg.Log = p, o.source, log
	var logSink journal.Writer = journal.LogSink{Log: log, Allowed: o.logAllowed}
	o.cfg.Journal = logSink
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
		o.cfg.Journal = journal.Tee{store, logSink}
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
	go func() {
		for range hup {
			_ = g.Reload() // it logs what went wrong; the policy in force stays
		}
	}()
	code, err := g.RunCommand(o.command, user, sigs)
	if cerr := g.Close(); cerr != nil {
		log.Error("cleanup incomplete", "err", cerr)
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return err
	}
	return exitError{code}
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
