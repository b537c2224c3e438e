// Package dnsfilter is sluice's filtering resolver. It answers one agent's
// queries: names the policy does not allow are refused locally (their
// query never leaves the gateway); allowed names are forwarded, their
// answers filtered, their addresses programmed into the agent's firewall
// sets and pinned to the queried name, and only then released.
package dnsfilter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Allower programs the datapath so that the agent may open TCP connections
// to addrs on ports for at least the given time. It returns only once the
// kernel has the elements: the answer is released after it returns.
type Allower interface {
	Allow(ctx context.Context, addrs []netip.Addr, ports []uint16, need time.Duration) error
}

// Defaults for Config fields left zero.
const (
	// DefaultMinTTL keeps an address in the sets for at least this long, so
	// a client that got a 1 s TTL and connects a few seconds later (a
	// package manager resolving everything first) is not dropped.
	DefaultMinTTL = 60 * time.Second
	// DefaultMaxTTL bounds how long one answer keeps an address open:
	// addresses change owners, and a huge TTL must not admit one forever.
	DefaultMaxTTL = time.Hour
	// DefaultCacheSize bounds the answer cache by entries.
	DefaultCacheSize = 10000
	// DefaultMaxPins bounds the pin table by addresses.
	DefaultMaxPins = 100000
	// maxChain bounds how many CNAMEs are followed.
	maxChain = 16
	// negativeTTL is how long an answer without records is cached.
	negativeTTL = 30 * time.Second
)

// Config configures a Server. Zero fields get the defaults above.
type Config struct {
	// Agent names the agent in decisions.
	Agent string
	// Clients are the source prefixes queries are accepted from; a query
	// from anywhere else is refused, so no one else can open the agent's sets.
	Clients []netip.Prefix
	// Internal are prefixes no answer may point into, whatever the policy
	// says: the gateway's own addresses and the agents' subnets.
	Internal []netip.Prefix
	// Connected are the networks the gateway is attached to (its upstream
	// link's subnet: its router, a NAS, other hosts of that LAN). Answers
	// may point into them only for entries with private: true.
	Connected []netip.Prefix
	// Global are special-purpose ranges that answers may point into as if
	// they were globally reachable, for labs and tests whose fake internet
	// lives on documentation and benchmarking addresses. Only prefixes
	// inside the lab ranges are accepted (policy.CheckGlobalRange);
	// Internal and Connected still win over them.
	Global []netip.Prefix
	// IPv6 says whether the gateway can carry IPv6. When false, AAAA
	// questions get an empty answer so that clients do not wait on v6.
	IPv6 bool
	// Upstream resolves allowed names.
	Upstream Upstream
	// Allower programs the agent's sets.
	Allower Allower
	// Pins receives name→address bindings; required.
	Pins *Pins
	// Journal receives every decision.
	Journal journal.Sink
	// MinTTL and MaxTTL clamp how long an answer keeps its addresses open.
	MinTTL, MaxTTL time.Duration
	// CacheSize bounds the answer cache; negative disables it.
	CacheSize int
	// Log reports what is not a decision: errors, and warnings about
	// allowed names that do not resolve (at most one per name and kind
	// of trouble in a few minutes).
	Log *slog.Logger
	// Report puts the agent in report mode: a question the policy would
	// refuse (a name no entry allows, a new name past its wildcard's
	// budget) is resolved and answered as an allowed one is, and
	// journaled as WouldRefuse with the reason that would have refused
	// it and the addresses handed out. Its addresses are pinned to the
	// name, so that the proxy can still tell whether a connection goes
	// where the name led; a name no entry allows opens nothing in the
	// sets (the ruleset of a report-mode agent lets its flows through
	// and journals them, which is how their ports are seen). What is
	// no policy's decision stays refused as in enforce mode: a query
	// from a foreign source, a message that is not one standard query,
	// a question sluice never forwards, a name that is not a host name,
	// no policy in force, and the gateway's own failures (sets, pins).
	Report bool
	// AnswerTime, when set, is told how long each answer took, from the
	// question parsed to the answer built: the upstream exchange and the
	// set updates included (sluice serve's latency histogram).
	AnswerTime func(time.Duration)
}

// Server is a filtering resolver for one agent. It is safe for concurrent use.
type Server struct {
	cfg    Config
	policy atomic.Pointer[policy.Policy] // the policy in force
	// gate orders set updates against policy changes: an answer holds it
	// for reading while it opens the sets and pins under the policy it
	// was decided with; SetPolicy holds it for writing while it swaps the
	// policy. So every update made under the old policy is in place before
	// the swap (where the revocation that follows sees it), and every
	// later one was decided under the new policy.
	gate  sync.RWMutex
	cache *cache
	fast  *fastCache // replies packed for the fast path; nil with no cache
	held  *heldHits  // the fast path's answers not yet journaled
	// budgets bounds the new names asked under each wildcard entry.
	budgets *nameBudgets
	// notices rate-limits the log lines about allowed names that do not
	// resolve and about upstream failures.
	notices *notices
	now     func() time.Time

	mu sync.Mutex
	// stopping: Shutdown was called. Listeners stop on purpose, and a
	// query still queued for the UDP workers is dropped, not answered.
	// Set under mu (see Serve); atomic, for the workers to read without it.
	stopping atomic.Bool
	failed   chan error // a listener stopped serving by itself
	servers  []*dns.Server
	closers  []func() error
	readers  sync.WaitGroup // the UDP sockets' readers (serveUDP)
}

// New returns a Server that enforces p. It does not listen until Serve.
func New(cfg Config, p *policy.Policy) (*Server, error) {
	if cfg.Upstream == nil || cfg.Allower == nil || cfg.Pins == nil || cfg.Journal == nil {
		return nil, errors.New("dnsfilter: Upstream, Allower, Pins and Journal are required")
	}
	for _, g := range cfg.Global {
		if err := policy.CheckGlobalRange(g); err != nil {
			return nil, fmt.Errorf("dnsfilter: %w", err)
		}
	}
	cfg.MinTTL = cmp.Or(cfg.MinTTL, DefaultMinTTL)
	cfg.MaxTTL = cmp.Or(cfg.MaxTTL, DefaultMaxTTL)
	if cfg.MinTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("dnsfilter: min TTL %v is above max TTL %v", cfg.MinTTL, cfg.MaxTTL)
	}
	size := cfg.CacheSize
	switch {
	case size == 0:
		size = DefaultCacheSize
	case size < 0:
		size = 0
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, cache: newCache(size), budgets: newNameBudgets(), notices: newNotices(), now: time.Now, failed: make(chan error, 1)}
	if size > 0 {
		s.fast = newFastCache(size)
		s.held = &heldHits{sink: cfg.Journal, interval: journal.DefaultCoalesce}
	}
	s.policy.Store(p)
	return s, nil
}

// SetPolicy puts p in force for every question from now on. When then
// runs (if not nil), no answer decided under the previous policy is still
// opening the sets, and none decided under p can until it returns: what
// then sees of the sets and pins (to revoke what p no longer allows) is
// all there is.
func (s *Server) SetPolicy(p *policy.Policy, then func()) {
	s.gate.Lock()
	defer s.gate.Unlock()
	s.policy.Store(p)
	if then != nil {
		then()
	}
}

// Permits says whether an answer may hand the agent addr under an entry
// with private as given: the filter every answer passes, for revoking
// what an entry that changed no longer allows.
func (s *Server) Permits(addr netip.Addr, private bool) bool { return !s.forbidden(addr, private) }

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	resp := s.Answer(context.Background(), src, req)
	if resp == nil {
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		s.cfg.Log.Debug("write dns answer", "err", err)
	}
}

// udpSize is how large a UDP answer to req may be: what its EDNS record
// advertises, at least the classic 512 bytes.
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > dns.MinMsgSize {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// ListenAndServe answers on addr over UDP and TCP until Shutdown. It
// returns once both listeners are bound, and reports errors of serving
// through the logger.
func (s *Server) ListenAndServe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dnsfilter: listen udp %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dnsfilter: listen tcp %s: %w", addr, err)
	}
	return s.Serve(ln, pc)
}

// Serve answers on already bound sockets (for example, sockets opened inside
// another network namespace) until Shutdown: TCP on ln, UDP on each of pcs
// (several sockets on one port, say, with SO_REUSEPORT). It returns once
// all serve.
func (s *Server) Serve(ln net.Listener, pcs ...net.PacketConn) error {
	tcp := &dns.Server{Listener: ln, Handler: s, MsgAcceptFunc: acceptQuery,
		ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	servers := []*dns.Server{tcp}
	var conns []*net.UDPConn
	for _, pc := range pcs {
		if conn, ok := pc.(*net.UDPConn); ok {
			conns = append(conns, conn)
		} else {
			servers = append(servers, &dns.Server{PacketConn: pc, Handler: s, MsgAcceptFunc: acceptQuery})
		}
	}
	// Under the lock, so that a Shutdown either comes after and closes
	// these sockets (then waits for their readers), or came before and
	// nothing starts.
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		return errors.New("dnsfilter: Serve after Shutdown")
	}
	if len(conns) > 0 {
		s.serveUDP(conns, udpMaxWorkers)
	}
	s.servers = append(s.servers, servers...)
	for _, pc := range pcs {
		s.closers = append(s.closers, pc.Close)
	}
	s.mu.Unlock()
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			err := srv.ActivateAndServe()
			if !s.stopping.Load() {
				select {
				case s.failed <- fmt.Errorf("dnsfilter: the resolver stopped serving: %w", cmp.Or(err, errors.New("no error"))):
				default: // one failure is enough
				}
			}
		}()
		<-started
	}
	return nil
}

// Run answers on what Serve attached until ctx ends, then shuts down. It
// returns at once, with the error, when a listener stops serving by
// itself: the agent can resolve nothing more, and the gateway must end.
func (s *Server) Run(ctx context.Context) error {
	defer s.Shutdown()
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.failed:
		return err
	}
}

// Shutdown stops every listener started by Serve, waits for the UDP
// readers to end, and records what the fast path holds for the journal.
// The UDP workers drop the queries still queued; one a worker is
// answering (in the upstream, say) is answered and recorded as it ends.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.stopping.Store(true)
	servers, closers := s.servers, s.closers
	s.servers, s.closers = nil, nil
	s.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Shutdown()
	}
	for _, c := range closers {
		_ = c()
	}
	// A reader answers the batch it read before its socket closed, and
	// journals it: before the journal closes, which comes next.
	s.readers.Wait()
	if s.held != nil {
		s.held.close()
	}
}

// acceptQuery lets through what Answer checks itself (so that every refusal
// is answered and journaled the same way) and drops responses sent to us.
func acceptQuery(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 { // QR: a response, not a query
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}
