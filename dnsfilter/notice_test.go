package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
)

// logLine is one record of a logRecorder: its level, message and attributes.
type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l logLine) String() string {
	return fmt.Sprintf("%s %q %v", l.level, l.msg, l.attrs)
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]logLine
}

func newLogRecorder() logRecorder { return logRecorder{mu: &sync.Mutex{}, lines: new([]logLine)} }

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r logRecorder) WithGroup(string) slog.Handler            { return r }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	l := logLine{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.lines = append(*r.lines, l)
	return nil
}

// with returns the lines whose message is msg.
func (r logRecorder) with(msg string) []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range *r.lines {
		if l.msg == msg {
			out = append(out, l)
		}
	}
	return out
}

const msgUnresolved = "allowed name does not resolve"

// TestAllowedNameThatDoesNotResolveWarns: an allowed name the upstream
// answers with NXDOMAIN, a failure rcode or no address is a warning that
// names the name, the entry that allowed it, the upstream and its answer;
// the journal's record is an allowed one that says what the upstream
// answered, never a refusal. Names that resolve, AAAA questions without
// records, and answers whose addresses sluice itself dropped (which have
// their own notice) are no such warning.
func TestAllowedNameThatDoesNotResolveWarns(t *testing.T) {
	rcodeAnswer := func(rcode int) func(q *dns.Msg) *dns.Msg {
		return func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetRcode(q, rcode)
			return r
		}
	}
	for _, tc := range []struct {
		name   string
		raw    func(q *dns.Msg) *dns.Msg // the upstream's answer; nil: the test zone
		qname  string
		qtype  uint16
		rcode  int            // what the agent gets
		answer string         // the warning's answer, "" for none
		reason journal.Reason // of the journal record
		detail string
	}{
		{name: "nxdomain", qname: "nx.allowed.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			answer: "NXDOMAIN", reason: journal.ReasonAllowed, detail: fakeServer + " answered NXDOMAIN"},
		{name: "nxdomain https", qname: "nx.allowed.test.", qtype: dns.TypeHTTPS, rcode: dns.RcodeNameError,
			answer: "NXDOMAIN", reason: journal.ReasonAllowed, detail: fakeServer + " answered NXDOMAIN"},
		{name: "servfail", raw: rcodeAnswer(dns.RcodeServerFailure), qname: "allowed.test.", qtype: dns.TypeA,
			rcode: dns.RcodeServerFailure, answer: "SERVFAIL", reason: journal.ReasonUpstreamFailed, detail: fakeServer + " answered SERVFAIL"},
		{name: "refused", raw: rcodeAnswer(dns.RcodeRefused), qname: "allowed.test.", qtype: dns.TypeAAAA,
			rcode: dns.RcodeServerFailure, answer: "REFUSED", reason: journal.ReasonUpstreamFailed, detail: fakeServer + " answered REFUSED"},
		{name: "no A records", qname: "v6.allowed.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			answer: "no A records", reason: journal.ReasonAllowed, detail: fakeServer + " answered no A records"},
		{name: "resolves", qname: "allowed.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, reason: journal.ReasonAllowed},
		{name: "chain resolves", qname: "chain.allowed.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, reason: journal.ReasonAllowed},
		{name: "no AAAA records", qname: "allowed.test.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess,
			reason: journal.ReasonAllowed, detail: fakeServer + " answered no AAAA records"},
		{name: "addresses dropped", qname: "internal.allowed.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess,
			reason: journal.ReasonAddrsDropped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newLogRecorder()
			f := newFixtureWith(t, func(c *Config) { c.Log = slog.New(rec) }, "*.allowed.test", "allowed.test")
			f.up.raw = tc.raw
			r := f.ask(t, tc.qname, tc.qtype)
			if r.Rcode != tc.rcode {
				t.Errorf("the agent got %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			ev := f.log.Last()
			if ev.Kind == journal.Refused || ev.Reason != tc.reason || ev.Detail != tc.detail {
				t.Errorf("journaled %s %s detail %q, want reason %s detail %q (no refusal)", ev.Kind, ev.Reason, ev.Detail, tc.reason, tc.detail)
			}
			warns := rec.with(msgUnresolved)
			if tc.answer == "" {
				if len(warns) != 0 {
					t.Errorf("warned %v, want no warning", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("warned %v, want one warning", warns)
			}
			w := warns[0]
			name := strings.TrimSuffix(tc.qname, ".")
			rule := "--allow *.allowed.test *.allowed.test ports 80,443"
			if name == "allowed.test" {
				rule = "--allow allowed.test allowed.test ports 80,443"
			}
			want := map[string]string{"name": name, "rule": rule, "upstream": fakeServer, "answer": tc.answer,
				"qtype": dns.TypeToString[tc.qtype], "agent": "test"}
			if w.level != slog.LevelWarn {
				t.Errorf("level %s, want WARN", w.level)
			}
			for k, v := range want {
				if w.attrs[k] != v {
					t.Errorf("warning's %s = %q, want %q (%v)", k, w.attrs[k], v, w)
				}
			}
			if errs := rec.with("upstream failed"); len(errs) != 0 {
				t.Errorf("an answer logged as an upstream failure: %v", errs)
			}
		})
	}
}

// TestUnresolvedWarningRateLimited: a client that asks again and again
// for an allowed name that does not resolve gets one warning per name and
// kind of answer in noticeEvery; the next one says how many were held
// back. The journal records every answer all the same.
func TestUnresolvedWarningRateLimited(t *testing.T) {
	rec := newLogRecorder()
	f := newFixtureWith(t, func(c *Config) { c.Log = slog.New(rec); c.CacheSize = -1 }, "*.allowed.test")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.srv.now = func() time.Time { return now }
	count := func() int { return len(rec.with(msgUnresolved)) }
	for range 5 {
		f.ask(t, "nx.allowed.test.", dns.TypeA)
		f.ask(t, "nx.allowed.test.", dns.TypeAAAA)
	}
	if got := count(); got != 1 {
		t.Fatalf("%d warnings for ten questions about one name, want 1", got)
	}
	if n := len(f.log.Events()); n != 10 {
		t.Errorf("%d journal records, want one per answer, 10", n)
	}
	f.ask(t, "nx2.allowed.test.", dns.TypeA) // another name
	f.ask(t, "v6.allowed.test.", dns.TypeA)  // another name, another answer
	if got := count(); got != 3 {
		t.Fatalf("%d warnings, want another for each other name (3)", got)
	}
	f.up.raw = func(q *dns.Msg) *dns.Msg { r := new(dns.Msg); r.SetRcode(q, dns.RcodeServerFailure); return r }
	f.ask(t, "nx.allowed.test.", dns.TypeA) // the same name, another answer
	if got := count(); got != 4 {
		t.Fatalf("%d warnings, want another for another answer about the same name (4)", got)
	}
	f.up.raw = nil
	now = now.Add(noticeEvery - time.Second)
	f.ask(t, "nx.allowed.test.", dns.TypeA)
	if got := count(); got != 4 {
		t.Fatalf("%d warnings, want still 4 before the quiet spell ends", got)
	}
	now = now.Add(time.Second)
	f.ask(t, "nx.allowed.test.", dns.TypeA)
	warns := rec.with(msgUnresolved)
	if len(warns) != 5 {
		t.Fatalf("%d warnings, want a fifth once the quiet spell is over", len(warns))
	}
	if got := warns[4].attrs["repeated"]; got != "10" {
		t.Errorf("repeated = %q, want the 10 held back", got)
	}
}

func TestNoticesBounded(t *testing.T) {
	n := newNotices()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range maxNotices + 10 {
		if ok, _ := n.due(fmt.Sprintf("n%d.test", i), "NXDOMAIN", now.Add(time.Duration(i)*time.Millisecond)); !ok {
			t.Fatalf("first notice about n%d held back", i)
		}
	}
	if len(n.seen) > maxNotices {
		t.Errorf("%d names remembered, want at most %d", len(n.seen), maxNotices)
	}
	if ok, _ := n.due(fmt.Sprintf("n%d.test", maxNotices+9), "NXDOMAIN", now.Add(time.Second)); ok {
		t.Errorf("the latest name's notice was forgotten, want the oldest ones to go")
	}
}

// closedPort returns a loopback UDP address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentPort returns a loopback UDP address that never answers.
func silentPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// answering returns a loopback server that answers every question with rcode.
func answering(t *testing.T, rcode int) string {
	return serveLoopback(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		w.WriteMsg(m)
	})
}

// mismatching returns a loopback server that answers another question.
func mismatching(t *testing.T) string {
	return serveLoopback(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetQuestion("other.test.", dns.TypeA)
		m.Id, m.Response = r.Id, true
		w.WriteMsg(m)
	})
}

// TestUpstreamFailureIsAnError: when no upstream gives an answer (nothing
// listens, none comes in time, or it answers another question), the
// agent gets SERVFAIL, the log has an error that names the name, the
// entry, each upstream and why, and the journal's record is an allowed
// decision with the reason upstream_failed: the policy refused nothing.
func TestUpstreamFailureIsAnError(t *testing.T) {
	closed, silent, bad := closedPort(t), silentPort(t), mismatching(t)
	for _, tc := range []struct {
		name    string
		servers []string
		why     []string // in the error's err, in order
	}{
		{"closed", []string{closed}, []string{"refused: nothing listens on its port"}},
		{"silent", []string{silent}, []string{"timeout: no answer within 100ms"}},
		{"bad answer", []string{bad}, []string{"bad answer: upstream answered other.test. A, not allowed.test. A"}},
		{"all", []string{closed, silent, bad}, []string{closed + ": refused", silent + ": timeout", bad + ": bad answer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newLogRecorder()
			fwd := &Forwarder{Servers: tc.servers, Timeout: 100 * time.Millisecond}
			t.Cleanup(fwd.Close)
			f := newFixtureWith(t, func(c *Config) { c.Log = slog.New(rec); c.Upstream = fwd }, "allowed.test")
			if r := f.ask(t, "allowed.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
				t.Errorf("the agent got %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
			}
			ev := f.log.Last()
			if ev.Kind != journal.Allowed || ev.Reason != journal.ReasonUpstreamFailed {
				t.Errorf("journaled %s %s, want allowed upstream_failed (not a refusal)", ev.Kind, ev.Reason)
			}
			for _, s := range tc.servers {
				if !strings.Contains(ev.Detail, s+": ") {
					t.Errorf("journal detail %q does not name %s", ev.Detail, s)
				}
			}
			errs := rec.with("upstream failed")
			if len(errs) != 1 || errs[0].level != slog.LevelError {
				t.Fatalf("logged %v, want one error", errs)
			}
			e := errs[0]
			if e.attrs["name"] != "allowed.test" || e.attrs["rule"] != "--allow allowed.test allowed.test ports 80,443" ||
				e.attrs["upstream"] != strings.Join(tc.servers, ",") {
				t.Errorf("error %v lacks the name, the rule or the upstreams", e)
			}
			rest := e.attrs["err"]
			for _, w := range tc.why {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error's err %q lacks %q (in order)", e.attrs["err"], w)
				}
				rest = rest[i+len(w):]
			}
			if w := rec.with(msgUnresolved); len(w) != 0 {
				t.Errorf("a failure logged as an answer: %v", w)
			}
			f.ask(t, "allowed.test.", dns.TypeA)
			if n := len(rec.with("upstream failed")); n != 1 {
				t.Errorf("%d errors after asking again at once, want still 1", n)
			}
		})
	}
}

// TestWhy names the failures that the kernel reports for a UDP exchange.
func TestWhy(t *testing.T) {
	op := func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", errno)}
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{op(syscall.ECONNREFUSED), "refused: nothing listens on its port (ICMP port unreachable)"},
		{op(syscall.EHOSTUNREACH), "host unreachable"},
		{op(syscall.ENETUNREACH), "network unreachable: no route to it"},
		{&net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}, "timeout: no answer within 2s"},
		{context.DeadlineExceeded, "timeout: no answer within 2s"},
		{&badAnswerError{"upstream sent a query, not a response"}, "bad answer: upstream sent a query, not a response"},
		{errors.New("dns: overflow unpacking uint16"), "dns: overflow unpacking uint16"},
	} {
		if got := (ServerFailure{Err: tc.err, Timeout: 2 * time.Second}).Why(); got != tc.want {
			t.Errorf("Why(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestProbe: each upstream is asked once, at once; an answer of any rcode
// counts, and the ones that give none are named with why.
func TestProbe(t *testing.T) {
	refusing, nx := answering(t, dns.RcodeRefused), answering(t, dns.RcodeNameError)
	closed, silent := closedPort(t), silentPort(t)
	fwd := &Forwarder{Servers: []string{refusing, closed, nx, silent}, Timeout: 100 * time.Millisecond}
	got := fwd.Probe(context.Background())
	var names []string
	for _, sf := range got {
		names = append(names, sf.Server+" "+sf.Why())
	}
	want := []string{closed + " refused: nothing listens on its port (ICMP port unreachable)", silent + " timeout: no answer within 100ms"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("Probe = %q, want %q", names, want)
	}
	if got := (&Forwarder{Servers: []string{nx}}).Probe(context.Background()); len(got) != 0 {
		t.Errorf("Probe of an answering server = %v, want no failures", got)
	}
}
