package dnsfilter

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/policy"
)

// Notices about allowed names that do not resolve, and about upstream
// failures, are logged at most once per name and kind of trouble in
// noticeEvery, so that a client that
// retries in a loop does not flood the log; the line after a quiet spell
// says how many were held back. The journal still records every answer.
const (
	noticeEvery = 5 * time.Minute
	// maxNotices bounds the names remembered (names are the agent's
	// choice): when full, the oldest remembered notice is forgotten.
	maxNotices = 4096
)

// troubleUpstreamFailed is the kind of notice of an upstream failure:
// no answer at all, whatever the reason.
const troubleUpstreamFailed = "upstream failed"

type noticeKey struct{ name, kind string }

type noticeState struct {
	at   time.Time // when the last line was logged
	held int       // notices held back since
}

// notices decides which notices are logged. It is safe for concurrent use.
type notices struct {
	mu   sync.Mutex
	seen map[noticeKey]*noticeState
}

func newNotices() *notices { return &notices{seen: map[noticeKey]*noticeState{}} }

// due says whether a notice of kind about name is to be logged at now,
// and how many were held back since the last one logged.
func (n *notices) due(name, kind string, now time.Time) (bool, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := noticeKey{name, kind}
	if st := n.seen[k]; st != nil {
		if now.Sub(st.at) < noticeEvery {
			st.held++
			return false, 0
		}
		held := st.held
		st.at, st.held = now, 0
		return true, held
	}
	if len(n.seen) >= maxNotices {
		n.evict(now)
	}
	n.seen[k] = &noticeState{at: now}
	return true, 0
}

// evict forgets the notices whose quiet spell is over, or else the oldest.
func (n *notices) evict(now time.Time) {
	var oldest noticeKey
	var at time.Time
	for k, st := range n.seen {
		if now.Sub(st.at) >= noticeEvery {
			delete(n.seen, k)
		} else if at.IsZero() || st.at.Before(at) {
			oldest, at = k, st.at
		}
	}
	if len(n.seen) >= maxNotices {
		delete(n.seen, oldest)
	}
}

// trouble says what is wrong with an upstream answer to an allowed
// question of qtype ("NXDOMAIN", "SERVFAIL", "no A records"), "" when
// nothing is. An answer without addresses only counts for A and AAAA
// questions, and not when sluice itself dropped addresses from it (that
// has its own notice).
func trouble(qtype uint16, f filtered) string {
	switch rcode := f.msg.Rcode; {
	case rcode == dns.RcodeNameError:
		return "NXDOMAIN"
	case rcode != dns.RcodeSuccess:
		return rcodeName(rcode)
	case (qtype == dns.TypeA || qtype == dns.TypeAAAA) && len(f.addrs) == 0 && len(f.dropped) == 0:
		return "no " + dns.TypeToString[qtype] + " records"
	}
	return ""
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rcode)
}

// warns says whether trouble with an answer of qtype deserves a warning.
// An AAAA question without records is common (many hosts have no IPv6)
// and says nothing about whether the name works, so it is only noted in
// the journal.
func warns(qtype uint16, trouble string) bool {
	return trouble != "" && !(qtype == dns.TypeAAAA && trouble == "no AAAA records")
}

// warnUnresolved logs that the upstream's answer to an allowed name gives
// the agent nothing to connect to, naming the entry that allowed it.
func (s *Server) warnUnresolved(d policy.Decision, qtype uint16, server, trouble string) {
	ok, held := s.notices.due(d.Name, trouble, s.now())
	if !ok {
		return
	}
	args := []any{"agent", s.cfg.Agent, "name", d.Name, "qtype", dns.TypeToString[qtype], "rule", d.Rule(),
		"upstream", server, "answer", trouble}
	if held > 0 {
		args = append(args, "repeated", held)
	}
	s.cfg.Log.Warn("allowed name does not resolve", args...)
}

// errorUpstream logs that no upstream gave a usable answer for an allowed
// name: a failure of the gateway's resolution, not a refusal.
func (s *Server) errorUpstream(d policy.Decision, qtype uint16, err error) {
	ok, held := s.notices.due(d.Name, troubleUpstreamFailed, s.now())
	if !ok {
		return
	}
	upstream, why := "", err.Error()
	var ue *UpstreamError
	if errors.As(err, &ue) {
		upstream = strings.Join(ue.Servers(), ",")
		if len(ue.Failures) == 1 {
			why = ue.Failures[0].Why()
		}
	}
	args := []any{"agent", s.cfg.Agent, "name", d.Name, "qtype", dns.TypeToString[qtype], "rule", d.Rule()}
	if upstream != "" {
		args = append(args, "upstream", upstream)
	}
	args = append(args, "err", why)
	if held > 0 {
		args = append(args, "repeated", held)
	}
	s.cfg.Log.Error("upstream failed", args...)
}
