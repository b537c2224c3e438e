package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/metrics"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/sandbox"
)

// ServerConfig is what a Server serves.
type ServerConfig struct {
	// File is the serve config (see LoadServeConfig); a reload reads it
	// again, and the policies it names.
	File string
	// StateDir is every gateway's Config.StateDir.
	StateDir string
	// UI, when the config names a ui address, makes the web UI's handler
	// over the shared journal; addr is the address the Server listens on.
	// The Server serves it there, beside /metrics. nil: /metrics alone.
	UI func(j *journal.Store, addr string) (http.Handler, error)
	// Poll is how often the config and policy files are looked at for a
	// change (modification time, size, inode): a second when zero, never
	// when negative.
	Poll time.Duration
	// Log receives what the Server and its gateways say, and every
	// refusal (journal.LogSink).
	Log *slog.Logger

	// newGateway starts an agent's gateway: New, or a fake in tests.
	newGateway func(Config) (agentGateway, error)
}

// agentGateway is what a Server needs of an agent's gateway. *Gateway is
// one; the Server's tests use a fake.
type agentGateway interface {
	Run(ctx context.Context) error
	Close() error
	Detach() error
	// reloadPolicy puts p, read from file, in force (see SetPolicy).
	reloadPolicy(p *policy.Policy, file string) error
	// Counts is what it counts of itself, for metrics.
	Counts() metrics.AgentCounts
}

// reloadPolicy puts p in force, journaled as a reload of file.
func (g *Gateway) reloadPolicy(p *policy.Policy, file string) error {
	return g.setBase(p, journal.ReasonReload, "reload of "+file)
}

func newGateway(cfg Config) (agentGateway, error) {
	g, err := New(cfg)
	if err != nil {
		return nil, err // not a nil *Gateway in an interface
	}
	return g, nil
}

// Server is `sluice serve`: a gateway for each agent of a serve config,
// all in the network namespace it is started in, sharing the upstream
// resolvers, one journal and, when the config names one, a web UI with
// /metrics. New starts them, Run serves and reloads until its context
// ends, Close stops every agent.
//
// Agents are independent: one agent's bad policy, failed start or failure
// at run time concerns that agent alone. The Server fails closed per
// agent: an agent that cannot be served as its policy says is cut off,
// never served with less checking, and the others go on.
type Server struct {
	cfg       ServerConfig
	log       *slog.Logger
	started   *ServeConfig // as at start: the settings only a restart changes
	upstreams []netip.AddrPort
	store     *sharedStore
	flows     *firewall.FlowSweeper // the agents' walks of the conntrack table
	metrics   *metrics.Metrics
	ui        *http.Server
	uiAddr    string

	kernel bool                    // real gateways, not a test's fakes: slots are claimed (claimSlots)
	agents map[string]*servedAgent // Run's alone once it runs
	failed chan agentFailure
	hup    chan struct{}
	stamps fileStamps // of the files a change of which reloads
}

// servedAgent is one agent's running gateway and the config entry it
// serves.
type servedAgent struct {
	spec   ServeAgent
	g      agentGateway
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine that runs g ends
}

type agentFailure struct {
	agent *servedAgent
	err   error
}

// Journal retention of sluice serve: sluice run's defaults.
const (
	serveJournalMaxAge  = 30 * 24 * time.Hour
	serveJournalMaxSize = 1 << 30
)

// NewServer reads the config and every policy it names and starts a
// gateway for each agent. Any error in the files fails the start, with
// every problem at once (file:line): a gateway does not start on a
// config a person has not got right. An agent whose gateway fails to
// start is logged as an error and left cut off (it has no link), and the
// others start; NewServer fails when none does.
func NewServer(cfg ServerConfig) (s *Server, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	kernel := cfg.newGateway == nil // not a test's fake gateways
	if kernel {
		cfg.newGateway = newGateway
	}
	var rec *recovery
	if kernel {
		rec = recoverDead(cfg.StateDir) // meanwhile: reading 100 policies takes a while too
		defer rec.wait()                // whatever fails, nothing of it goes on after
	}
	stamps := stampFiles([]string{cfg.File})
	conf, err := LoadServeConfig(cfg.File)
	if err != nil {
		rec.wait()
		return nil, err
	}
	s = &Server{cfg: cfg, log: cfg.Log, started: conf, metrics: metrics.New(), kernel: kernel,
		agents: map[string]*servedAgent{}, failed: make(chan agentFailure), hup: make(chan struct{}, 1)}
	s.stamps = stamps.watch(cfg.File, policyFiles(conf))
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				s.log.Error("cleanup after failed start incomplete", "err", cerr)
			}
			s = nil
		}
	}()
	if s.upstreams = conf.Upstreams; len(s.upstreams) == 0 {
		if s.upstreams, err = SystemResolvers(); err != nil {
			return s, fmt.Errorf("%s names no upstream and %w", cfg.File, err)
		}
	}
	store, err := journal.OpenStore(journal.StoreConfig{Path: conf.Journal, MaxAge: serveJournalMaxAge, MaxSize: serveJournalMaxSize, Log: s.log})
	if err != nil {
		return s, err
	}
	s.store = &sharedStore{s: store}
	if s.flows, err = firewall.NewFlowSweeper(); err != nil {
		return s, err
	}
	if conf.UI != "" {
		if err := s.serveUI(conf.UI); err != nil {
			return s, err
		}
	}
	// One probe for every agent, which share the upstreams, while they
	// start (not a test's fake gateways: their upstreams are made up).
	reportUpstreams := func() {}
	if kernel {
		reportUpstreams = probeUpstreams(s.upstreams, s.log, "upstream: in "+cfg.File)
	}
	forgotten := kernel && s.forgetFlowsBeforeStart(conf, rec.wait())
	var failures []error
	for spec, err := range s.startAgents(conf.Agents, forgotten) {
		s.log.Error("agent did not start: it stays cut off; a reload tries again", "agent", spec.Name, "err", err)
		failures = append(failures, fmt.Errorf("agent %s: %w", spec.Name, err))
	}
	reportUpstreams()
	if len(s.agents) == 0 {
		return s, fmt.Errorf("no agent started: %w", errors.Join(failures...))
	}
	s.log.Info("serve ready", "config", cfg.File, "agents", len(s.agents), "failed", len(failures), "journal", conf.Journal, "ui", s.uiAddr)
	return s, nil
}

// startOrder puts the agents that name their link's networks first, so
// that none of them finds its network taken by an agent that took the
// first free one of the pool.
func startOrder(agents []ServeAgent) []ServeAgent {
	out := slices.Clone(agents)
	slices.SortStableFunc(out, func(a, b ServeAgent) int {
		return cmp.Compare(netsFromPool(a), netsFromPool(b))
	})
	return out
}

// forgetFlowsBeforeStart reports what the recovery (recoverDead) did,
// which deleted the dead agents' tracked flows, and then deletes, in one
// walk of the conntrack table, those from every network a namespace agent
// of conf may get: the networks its agents name and the pools, less those
// that live agents hold and those with an address up here (another
// sluice's agents, of another state directory). None of those networks
// has a link up now, so no flow from them appears before the agents'
// tables are in, and the agents start without a walk each
// (Config.FlowsForgotten), each of which costs the kernel a pass over the
// whole table. It says whether it did; when not, the agents walk for
// themselves as they start.
func (s *Server) forgetFlowsBeforeStart(conf *ServeConfig, rec *recovery) bool {
	for _, u := range rec.undone {
		s.log.Info("cleaned up after an earlier run that did not exit cleanly: " + u)
	}
	if rec.err != nil {
		s.log.Warn("the agents' records could not be read before start: each agent's start sees to it", "err", rec.err)
		return false
	}
	held := rec.held
	nets := []netip.Prefix{netip.MustParsePrefix(AgentPool), netip.MustParsePrefix(AgentPool6)}
	for _, a := range conf.Agents {
		nets = appendNets(nets, a)
	}
	// Not what live agents hold (those of this state directory), nor any
	// network with an address up here now: another sluice's agents (of
	// another state directory), or whatever else uses these ranges.
	live, connected, err := gatewayAddrs()
	if err != nil {
		s.log.Warn("the gateway's addresses could not be listed before start: each agent's start sees to it", "err", err)
		return false
	}
	live = append(live, connected...)
	for _, h := range held {
		live = append(live, h.Nets...)
	}
	n, err := firewall.ForgetFlowsExcept(-1, nets, live)
	if err != nil {
		s.log.Warn("the tracked flows of earlier agents could not be deleted before start: each agent's start sees to it", "err", err)
		return false
	}
	if n > 0 {
		s.log.Debug("forgot the tracked flows of earlier agents", "flows", n)
	}
	return true
}

// recovery is what the recovery before serve's start did: it runs while
// the config is read (recoverDead).
type recovery struct {
	done   chan struct{}
	undone []string
	held   []sandbox.Holder
	err    error
}

// recoverDead undoes what dead runs left in this namespace (their links
// all at once, then their tracked flows, before their records go:
// sandbox), on a goroutine of its own.
func recoverDead(stateDir string) *recovery {
	r := &recovery{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.undone, r.held, r.err = sandbox.RecoverHeld(stateConfig(stateDir, nil))
	}()
	return r
}

// wait returns r once the recovery is done; nil waits for nothing.
func (r *recovery) wait() *recovery {
	if r != nil {
		<-r.done
	}
	return r
}

// startConcurrency is how many agents start, or reload, at once. Most of
// an agent's start is spent waiting on the kernel (links, tables, the
// conntrack walk, a probe of the upstreams) rather than on a CPU, and
// each gateway's claim of its slot is taken under the records' lock, so
// agents start side by side; a few at a time keep the kernel's locks
// (rtnl, the nftables commit) from becoming one long queue, and leave a
// core for the agents already serving.
const startConcurrency = 8

// startAgents starts a gateway for each of specs, in startOrder (those
// that name their networks all before any from the pool), and yields
// each agent that did not start with its error. The agents started are
// in s.agents once it is done. forgotten: see forgetFlowsBeforeStart.
func (s *Server) startAgents(specs []ServeAgent, forgotten bool) iter.Seq2[ServeAgent, error] {
	return func(yield func(ServeAgent, error) bool) {
		ordered := startOrder(specs)
		cfgs := make([]*Config, len(ordered))
		errs := make([]error, len(ordered))
		var claim []*Config
		var claimAt []int
		// The networks the agents name, running and starting, for each
		// to refuse answers into (Config.peerNets); those from the pools
		// are in the pools.
		var peers []netip.Prefix
		for _, a := range s.agents {
			peers = appendNets(peers, a.spec)
		}
		for _, spec := range ordered {
			peers = appendNets(peers, spec)
		}
		for i, spec := range ordered {
			cfgs[i] = s.agentConfig(spec, forgotten)
			cfgs[i].peerNets = peers
			if s.kernel && spec.Interface == "" {
				claim, claimAt = append(claim, cfgs[i]), append(claimAt, i)
			}
		}
		// The namespace agents' slots in one pass (router mode's claim
		// in New, from its interface), in startOrder.
		for j, err := range claimSlots(claim, s.log) {
			errs[claimAt[j]] = err
		}
		started := make([]*servedAgent, len(ordered))
		eachAtOnce(len(ordered), startConcurrency, func(i int) {
			if errs[i] == nil {
				started[i], errs[i] = s.launchAgent(ordered[i], *cfgs[i])
			}
		})
		var failed []int
		for i, a := range started {
			if a != nil {
				s.agents[a.spec.Name] = a
				s.metrics.SetUp(a.spec.Name, true)
				s.metrics.Track(a.spec.Name, a.g.Counts)
				s.logWarnings(a.spec)
				continue
			}
			s.metrics.SetUp(ordered[i].Name, false)
			failed = append(failed, i)
		}
		for _, i := range failed {
			if !yield(ordered[i], errs[i]) {
				return
			}
		}
	}
}

// eachAtOnce calls f(0) … f(n-1), up to limit of them at a time, and
// returns when all have returned.
func eachAtOnce(n, limit int, f func(i int)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, limit)
	for i := range n {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			f(i)
		})
	}
	wg.Wait()
}

// appendNets appends the networks a names for its link (none in router
// mode: the interface's networks are the gateway's own).
func appendNets(nets []netip.Prefix, a ServeAgent) []netip.Prefix {
	for _, n := range []netip.Prefix{a.AgentNet, a.AgentNet6} {
		if n.IsValid() && a.Interface == "" {
			nets = append(nets, n)
		}
	}
	return nets
}

func netsFromPool(a ServeAgent) int {
	if a.AgentNet.IsValid() || a.AgentNet6.IsValid() {
		return 0
	}
	return 1
}

// agentConfig is the Config of spec's gateway.
func (s *Server) agentConfig(spec ServeAgent, forgotten bool) *Config {
	return &Config{
		Name: spec.Name, Policy: spec.Policy, PolicySource: PolicySource{File: spec.PolicyFile},
		Namespace: spec.Namespace(), Interface: spec.Interface, AgentNet: spec.AgentNet, AgentNet6: spec.AgentNet6,
		Upstreams: s.upstreams, upstreamsProbed: true, Global: s.started.Global, StateDir: s.cfg.StateDir, Report: spec.Mode == ModeReport, Flows: s.flows, FlowsForgotten: forgotten,
		AnswerTime: s.metrics.AnswerTime(spec.Name),
		// Counted first, so that a failing store does not hide what is
		// counted; every agent's records go to the one store.
		Journal: journal.Tee{s.metrics, s.store, journal.LogSink{Log: s.log}},
		Log:     slog.New(agentHandler{s.log.Handler(), spec.Name}),
	}
}

// launchAgent starts a gateway for spec, which has no error, with cfg,
// and the goroutine that reports its failure to Run (which takes it once
// the agent is in s.agents: startAgents puts it there). It may run beside
// other launches.
func (s *Server) launchAgent(spec ServeAgent, cfg Config) (*servedAgent, error) {
	g, err := s.cfg.newGateway(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &servedAgent{spec: spec, g: g, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if err := g.Run(ctx); err != nil {
			select {
			case s.failed <- agentFailure{a, err}:
			case <-ctx.Done():
			}
		}
	}()
	return a, nil
}

// logWarnings says what policy.Lint says of the agent's policy, once
// the agent serves it (as sluice run does: before that, a person has an
// error to fix first).
func (s *Server) logWarnings(spec ServeAgent) {
	for _, w := range spec.Warnings {
		s.log.Warn("policy: "+w.Msg, "agent", spec.Name, "at", w.Source)
	}
}

// closeAgent stops a's gateway and undoes it all: its namespace goes.
func (s *Server) closeAgent(a *servedAgent) error {
	s.stopAgent(a)
	return a.g.Close()
}

// detachAgent stops serving a: its link and table go, its namespace and
// the processes in it stay, cut off (only loopback), until a start or a
// reload serves it again (Gateway.Detach).
func (s *Server) detachAgent(a *servedAgent) error {
	s.stopAgent(a)
	return a.g.Detach()
}

func (s *Server) stopAgent(a *servedAgent) {
	s.halt(a)
	delete(s.agents, a.spec.Name)
}

// halt stops a's gateway from serving (its Run ends) and its counts from
// being read; its teardown is the caller's. It may run beside others.
func (s *Server) halt(a *servedAgent) {
	s.metrics.Untrack(a.spec.Name)
	a.cancel()
	<-a.done
}

// Reload asks Run to read the config and its policies again (SIGHUP). It
// does not wait; requests made while one waits are one.
func (s *Server) Reload() {
	select {
	case s.hup <- struct{}{}:
	default:
	}
}

// errAllFailed ends Run when no agent is left serving.
var errAllFailed = errors.New("every agent has failed: nothing left to serve")

// Run serves until ctx ends, reloading on Reload and when the config or
// a policy file changes. An agent whose gateway fails is torn down (cut
// off: its link goes; its processes stay, with loopback only) and the failure logged as
// an error; the others go on, and a reload tries it again. A firewall
// fails closed, and it does so for the agent whose gateway failed: that
// agent reaches nothing. The others' gateways still enforce their own
// policies, whole; ending them too would take down what still works
// and protect nothing more. So Run returns an error only when a failure
// leaves no agent serving. The agents keep running when Run returns:
// Close stops them.
func (s *Server) Run(ctx context.Context) error {
	var tick <-chan time.Time
	if s.cfg.Poll > 0 {
		t := time.NewTicker(s.cfg.Poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.failed:
			s.agentFailed(f)
			if len(s.agents) == 0 {
				return errAllFailed
			}
		case <-s.hup:
			s.reload("SIGHUP")
		case <-tick:
			if s.stamps.changed() {
				s.reload("a file changed")
			}
		}
	}
}

// agentFailed tears down the agent whose gateway failed.
func (s *Server) agentFailed(f agentFailure) {
	if s.agents[f.agent.spec.Name] != f.agent {
		return // closed meanwhile
	}
	s.log.Error("agent failed: cut off, its namespace kept; a reload tries again", "agent", f.agent.spec.Name, "err", f.err)
	s.metrics.SetUp(f.agent.spec.Name, false)
	// Detached: the agent's processes keep their namespace, cut off,
	// until a reload serves it again.
	if err := s.detachAgent(f.agent); err != nil {
		s.log.Error("teardown of the failed agent incomplete", "agent", f.agent.spec.Name, "err", err)
	}
}

// reload reads the config and its policies again and applies what
// changed: an agent added starts, an agent removed is torn down, an
// agent whose policy changed gets it (atomically: Gateway.SetPolicy's
// revocation). An agent whose entry or policy has errors keeps what is
// in force, and the others still reload. Settings of the whole serve
// (upstream, journal, ui, global_ranges) and an agent's link or mode
// apply at the next start only.
func (s *Server) reload(why string) {
	stamps := stampFiles(s.stamps.paths()) // before reading: a change meanwhile reloads again
	next, err := LoadServeConfig(s.cfg.File)
	if next == nil {
		s.stamps = stamps
		s.log.Error("serve config reload failed: every agent keeps what is in force", "config", s.cfg.File, "trigger", why, "err", err)
		s.metrics.Reloaded(metrics.ReloadFailed)
		return
	}
	s.stamps = stamps.watch(s.cfg.File, policyFiles(next))
	result := metrics.ReloadOK
	if err != nil {
		result = metrics.ReloadPartial
		s.log.Error("serve config has errors: the agents they concern keep what is in force", "config", s.cfg.File, "trigger", why, "err", err)
	}
	for _, msg := range restartOnly(s.started, next) {
		s.log.Warn(msg)
	}
	running := map[string]ServeAgent{}
	for name, a := range s.agents {
		running[name] = a.spec
	}
	plan := planReload(running, next)
	for _, msg := range plan.notes {
		s.log.Warn(msg)
	}
	for _, name := range plan.remove {
		a := s.agents[name]
		s.log.Info("agent removed from the config: tearing it down", "agent", name)
		if err := s.closeAgent(a); err != nil {
			s.log.Error("teardown of the removed agent incomplete", "agent", name, "err", err)
		}
		s.metrics.Forget(name)
	}
	reloadErrs := make([]error, len(plan.reload))
	eachAtOnce(len(plan.reload), startConcurrency, func(i int) {
		spec := plan.reload[i]
		reloadErrs[i] = s.reloadAgent(s.agents[spec.Name], spec)
	})
	if errors.Join(reloadErrs...) != nil {
		result = metrics.ReloadPartial // each gateway said why, and keeps its policy
	}
	for spec, err := range s.startAgents(plan.add, false) {
		result = metrics.ReloadPartial
		s.log.Error("agent did not start: it stays cut off; a reload tries again", "agent", spec.Name, "err", err)
	}
	added := 0
	for _, spec := range plan.add {
		if s.agents[spec.Name] != nil {
			added++
			s.log.Info("agent added", "agent", spec.Name, "policy", spec.Policy.Hash())
		}
	}
	s.metrics.Reloaded(result)
	level := slog.LevelInfo
	if why != "SIGHUP" && result == metrics.ReloadOK && len(plan.remove)+len(plan.reload)+len(plan.add) == 0 {
		level = slog.LevelDebug // a file touched, nothing changed
	}
	s.log.Log(context.Background(), level, "serve config reloaded", "trigger", why, "result", result,
		"added", added, "removed", len(plan.remove), "reloaded", len(plan.reload), "kept", len(plan.kept))
}

// reloadAgent puts spec's policy in force in a's gateway, journaled as
// a reload of its file. On error the policy in force stays (the gateway
// logs why).
func (s *Server) reloadAgent(a *servedAgent, spec ServeAgent) error {
	if err := a.g.reloadPolicy(spec.Policy, spec.PolicyFile); err != nil {
		return err
	}
	a.spec.Policy, a.spec.Warnings, a.spec.PolicyFile, a.spec.Source = spec.Policy, spec.Warnings, spec.PolicyFile, spec.Source
	s.logWarnings(spec)
	return nil
}

// reloadPlan is what a reload does to the agents.
type reloadPlan struct {
	remove []string     // running, and gone from the config
	reload []ServeAgent // running, and their policy changed
	add    []ServeAgent // in the config and not running: new, or failed before
	kept   []string     // in the config with errors: as they are (running or not)
	notes  []string     // for the log: what the reload does not do, and why
}

// planReload works out, from the agents running (each with the entry it
// serves) and the config read anew, what a reload does. An agent whose
// entry has errors is kept as it is; while an entry has no valid name, no
// agent is removed (that entry may be a running agent's, misspelt).
func planReload(running map[string]ServeAgent, next *ServeConfig) reloadPlan {
	var p reloadPlan
	inConfig := map[string]bool{}
	for _, spec := range next.Agents {
		inConfig[spec.Name] = true
		cur, isRunning := running[spec.Name]
		switch {
		case spec.Err != nil && isRunning:
			p.kept = append(p.kept, spec.Name)
			p.notes = append(p.notes, fmt.Sprintf("agent %s: its entry or policy has errors (above): it keeps what is in force", spec.Name))
		case spec.Err != nil:
			p.kept = append(p.kept, spec.Name)
			p.notes = append(p.notes, fmt.Sprintf("agent %s: its entry or policy has errors (above): not started", spec.Name))
		case !isRunning:
			p.add = append(p.add, spec)
		default:
			for _, what := range linkChanges(cur, spec) {
				p.notes = append(p.notes, fmt.Sprintf("agent %s: %s changed; it applies when serve starts again", spec.Name, what))
			}
			if cur.PolicyFile != spec.PolicyFile || cur.Policy.Hash() != spec.Policy.Hash() {
				p.reload = append(p.reload, spec)
			}
		}
	}
	var gone []string
	for name := range running {
		if !inConfig[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	if next.Unnamed > 0 && len(gone) > 0 {
		p.notes = append(p.notes, fmt.Sprintf("an agent's entry has no valid name: no agent is removed until it is fixed (%v stay)", gone))
		gone = nil
	}
	p.remove = gone
	return p
}

// linkChanges names the settings of an agent that a reload does not
// change: its link and its mode are made when it starts.
func linkChanges(cur, next ServeAgent) []string {
	var out []string
	if cur.Interface != next.Interface {
		out = append(out, "interface")
	}
	if cur.Mode != next.Mode {
		out = append(out, "mode")
	}
	if cur.AgentNet != next.AgentNet {
		out = append(out, "agent_net")
	}
	if cur.AgentNet6 != next.AgentNet6 {
		out = append(out, "agent_net6")
	}
	return out
}

// restartOnly says which settings of the whole serve changed: they take
// effect when serve starts again, not on a reload.
func restartOnly(was, next *ServeConfig) []string {
	var out []string
	note := func(key string, changed bool) {
		if changed {
			out = append(out, key+" changed in "+next.File+": ignored until serve starts again")
		}
	}
	note("upstream", !slices.Equal(was.Upstreams, next.Upstreams))
	note("global_ranges", !slices.Equal(was.Global, next.Global))
	note("journal", was.Journal != next.Journal)
	note("ui", was.UI != next.UI)
	return out
}

// Close stops every agent and undoes what its gateway set up (the web UI
// first, the journal last, once every agent's last records are in it).
// Call it once Run has returned.
func (s *Server) Close() error {
	var errs []error
	n := len(s.agents)
	if s.ui != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.ui.Shutdown(ctx) // live event streams end with the process
		cancel()
	}
	// Detached, not closed: the agents' namespaces, and the processes in
	// them, outlive a restart of serve (systemctl restart, an upgrade),
	// cut off meanwhile; the next start adopts them. An agent taken out
	// of the config is closed instead. Side by side, as they start.
	names := slices.Sorted(maps.Keys(s.agents))
	detached := make([]error, len(names))
	eachAtOnce(len(names), startConcurrency, func(i int) {
		a := s.agents[names[i]]
		s.halt(a)
		detached[i] = a.g.Detach()
	})
	for i, err := range detached {
		delete(s.agents, names[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("agent %s: %w", names[i], err))
		}
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store = nil
	}
	if s.flows != nil {
		errs = append(errs, s.flows.Close())
		s.flows = nil
	}
	err := errors.Join(errs...)
	if err == nil {
		s.log.Info("serve stopped: every agent detached, its namespace kept", "agents", n)
	}
	return err
}

// serveUI listens on addr and serves /metrics there, and the web UI
// (cfg.UI) beside it.
func (s *Server) serveUI(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("web UI: %w", err)
	}
	s.uiAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	if s.cfg.UI != nil {
		h, err := s.cfg.UI(s.store.s, s.uiAddr)
		if err != nil {
			ln.Close()
			return err
		}
		mux.Handle("/", h)
	}
	// Idle connections close, so that a client that never logs in cannot
	// hold the gateway's descriptors.
	s.ui = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := s.ui.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web UI stopped", "err", err)
		}
	}()
	return nil
}

// sharedStore lets the gateways of a Server share one journal store. A
// Store is written by one goroutine (its coalescing and pending records
// are unguarded), and every gateway writes from its own journal.Async:
// their writes, and their ticks, are taken one at a time here.
type sharedStore struct {
	mu sync.Mutex
	s  *journal.Store
}

// WriteEvents stores evs, after any other gateway's write in progress.
func (w *sharedStore) WriteEvents(evs []journal.Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s.WriteEvents(evs)
}

// Tick is the store's (journal.Ticker), taken in turn likewise.
func (w *sharedStore) Tick(now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s.Tick(now)
}

// Linger is the store's (journal.Lingerer).
func (w *sharedStore) Linger() time.Duration { return w.s.Linger() }

// Close closes the store once the last write is done.
func (w *sharedStore) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s.Close()
}

// agentHandler names the agent in the records of one agent's gateway
// that do not name it themselves: serve's agents share one log.
type agentHandler struct {
	slog.Handler
	agent string
}

func (h agentHandler) Handle(ctx context.Context, r slog.Record) error {
	named := false
	r.Attrs(func(a slog.Attr) bool {
		named = a.Key == "agent"
		return !named
	})
	if !named {
		r = r.Clone()
		r.AddAttrs(slog.String("agent", h.agent))
	}
	return h.Handler.Handle(ctx, r)
}

func (h agentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return agentHandler{h.Handler.WithAttrs(as), h.agent}
}

func (h agentHandler) WithGroup(name string) slog.Handler {
	return agentHandler{h.Handler.WithGroup(name), h.agent}
}

// fileStamp is what tells that a file changed: a write changes its
// modification time or size, an editor's rename its inode.
type fileStamp struct {
	mod     time.Time
	size    int64
	ino     uint64
	missing bool
}

// fileStamps are the stamps of the files a reload reads.
type fileStamps map[string]fileStamp

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{missing: true}
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

func stampFiles(paths []string) fileStamps {
	out := fileStamps{}
	for _, p := range paths {
		out[p] = stampOf(p)
	}
	return out
}

// watch returns the stamps of the config file and of paths: those st
// has (taken before the files were read), and the others' now.
func (st fileStamps) watch(config string, paths []string) fileStamps {
	out := fileStamps{}
	for _, p := range append([]string{config}, paths...) {
		if was, ok := st[p]; ok {
			out[p] = was
		} else {
			out[p] = stampOf(p)
		}
	}
	return out
}

func (st fileStamps) paths() []string { return slices.Sorted(maps.Keys(st)) }

// changed reports whether a file differs from its stamp.
func (st fileStamps) changed() bool {
	for p, was := range st {
		if !stampOf(p).equal(was) {
			return true
		}
	}
	return false
}

func (a fileStamp) equal(b fileStamp) bool {
	return a.mod.Equal(b.mod) && a.size == b.size && a.ino == b.ino && a.missing == b.missing
}

// policyFiles are the policy files the config names.
func policyFiles(c *ServeConfig) []string {
	var out []string
	for _, a := range c.Agents {
		if a.PolicyFile != "" {
			out = append(out, a.PolicyFile)
		}
	}
	return out
}
