package gateway

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// lockedBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refusingResolver serves DNS on a loopback port, answering REFUSED to
// everything: an answer all the same.
func refusingResolver(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// closedResolver is a loopback port where nothing listens.
func closedResolver(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	return ap
}

// TestProbeUpstreams: at start each upstream that does not answer is a
// warning naming it and why, and when none answers an error says that
// allowed names will not resolve; an answer of any rcode counts.
func TestProbeUpstreams(t *testing.T) {
	answers, closed := refusingResolver(t), closedResolver(t)
	for _, tc := range []struct {
		name      string
		upstreams []netip.AddrPort
		warned    []netip.AddrPort
		none      bool
	}{
		{"answers", []netip.AddrPort{answers}, nil, false},
		{"one of two", []netip.AddrPort{closed, answers}, []netip.AddrPort{closed}, false},
		{"none", []netip.AddrPort{closed}, []netip.AddrPort{closed}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log lockedBuffer
			probeUpstreams(tc.upstreams, slog.New(slog.NewTextHandler(&log, nil)), "--upstream")()
			out := log.String()
			if n := strings.Count(out, `msg="upstream resolver does not answer"`); n != len(tc.warned) {
				t.Errorf("%d warnings, want %d:\n%s", n, len(tc.warned), out)
			}
			for _, u := range tc.warned {
				if !strings.Contains(out, "level=WARN msg=\"upstream resolver does not answer\" upstream="+u.String()+" err=\"refused") {
					t.Errorf("no warning that %s refuses:\n%s", u, out)
				}
			}
			if got := strings.Contains(out, `level=ERROR msg="no upstream resolver answers`); got != tc.none {
				t.Errorf("error that none answers logged: %v, want %v:\n%s", got, tc.none, out)
			}
		})
	}
}
