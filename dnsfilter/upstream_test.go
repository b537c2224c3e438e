package dnsfilter

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serveLoopback runs handler on a UDP and a TCP socket of one loopback
// port and returns the address.
func serveLoopback(t *testing.T, handler dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

func TestForwarderRetriesTruncatedOverTCP(t *testing.T) {
	addr := serveLoopback(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			m.Answer = []dns.RR{mustRR("big.test. 60 IN A 198.18.2.10")}
		}
		w.WriteMsg(m)
	})
	f := &Forwarder{Servers: []string{addr}, Timeout: time.Second}
	defer f.Close()
	q := new(dns.Msg)
	q.SetQuestion("big.test.", dns.TypeA)
	r, _, err := f.Exchange(context.Background(), q)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("got %v, %v; want the TCP answer", r, err)
	}
}

func TestForwarderRejectsMismatchAndFailsOver(t *testing.T) {
	bad := serveLoopback(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetQuestion("other.test.", dns.TypeA) // same ID, another question
		m.Id, m.Response = r.Id, true
		m.Answer = []dns.RR{mustRR("other.test. 60 IN A 192.0.2.66")}
		w.WriteMsg(m)
	})
	good := serveLoopback(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR("a.test. 60 IN A 198.18.2.10")}
		w.WriteMsg(m)
	})
	f := &Forwarder{Servers: []string{bad, good}, Timeout: time.Second}
	defer f.Close()
	q := new(dns.Msg)
	q.SetQuestion("a.test.", dns.TypeA)
	for range 3 { // again on reused sockets
		r, server, err := f.Exchange(context.Background(), q)
		if err != nil || r.Answer[0].(*dns.A).A.String() != "198.18.2.10" || server != good {
			t.Fatalf("got %v, %v; want the second server's matching answer", r, err)
		}
	}
	f2 := &Forwarder{Servers: []string{bad}, Timeout: time.Second}
	if _, _, err := f2.Exchange(context.Background(), q); err == nil {
		t.Fatal("a mismatched answer was accepted")
	}
}
