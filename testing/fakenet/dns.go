// Package fakenet is the fake internet of sluice's tests: an authoritative
// DNS server, HTTPS and HTTP servers for several names on several
// addresses under a test CA, and TCP/UDP sinks. Every server records every
// contact, so a test can assert that an attack reached nothing.
//
// Servers listen on sockets the caller opened (typically inside a test
// network namespace), so this package does not care where it runs.
package fakenet

import (
	"hash/fnv"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// DNS is an authoritative server for a zone given as RR strings. Names
// under a wildcard key ("*.evil.test.") get its records with the owner
// rewritten. Names under SynthZone get one A record each, a distinct
// address in SynthNet derived from the name. It records every question.
type DNS struct {
	mu     sync.Mutex
	zone   map[string][]dns.RR
	rcodes map[string]int // names answered with an rcode alone (SetRcode)
	asked  []string
	srvs   []*dns.Server
}

// SynthZone and SynthNet: every name under the zone answers with its own
// address in the prefix (TTL 300), for tests that need many addresses.
const (
	SynthZone = "synth.test."
	SynthNet  = "198.18.128.0/17"
)

func synthAddr(name string) net.IP {
	h := fnv.New32a()
	h.Write([]byte(name))
	n := h.Sum32()%32766 + 1
	return net.IPv4(198, 18, 128+byte(n>>8), byte(n))
}

// NewDNS parses rrs (in zone-file syntax) into a zone.
func NewDNS(rrs ...string) *DNS {
	d := &DNS{zone: map[string][]dns.RR{}}
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic("fakenet: bad RR " + s + ": " + err.Error())
		}
		name := strings.ToLower(rr.Header().Name)
		d.zone[name] = append(d.zone[name], rr)
	}
	return d
}

// SetRcode makes the server answer every question about name (fully
// qualified) with rcode and no records, as a failing resolver does
// (SERVFAIL, REFUSED).
func (d *DNS) SetRcode(name string, rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rcodes == nil {
		d.rcodes = map[string]int{}
	}
	d.rcodes[strings.ToLower(name)] = rcode
}

// Serve answers on pc and ln until Close.
func (d *DNS) Serve(pc net.PacketConn, ln net.Listener) {
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: d}, {Listener: ln, Handler: d}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		d.mu.Lock()
		d.srvs = append(d.srvs, srv)
		d.mu.Unlock()
		go func() { _ = srv.ActivateAndServe() }()
		<-started
	}
}

// Close stops the servers.
func (d *DNS) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.srvs {
		_ = s.Shutdown()
	}
}

// Asked returns every question so far as "name TYPE", names in lower case.
func (d *DNS) Asked() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

// AskedAbout returns the questions for names equal to or under suffix.
func (d *DNS) AskedAbout(suffix string) []string {
	var out []string
	for _, q := range d.Asked() {
		name := strings.Fields(q)[0]
		if name == suffix || strings.HasSuffix(name, "."+suffix) {
			out = append(out, q)
		}
	}
	return out
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	d.asked = append(d.asked, strings.TrimSuffix(name, ".")+" "+dns.TypeToString[q.Qtype])
	rcode, failing := d.rcodes[name]
	rrs, ok := d.zone[name]
	if !ok {
		if i := strings.IndexByte(name, '.'); i >= 0 {
			rrs, ok = d.zone["*"+name[i:]]
		}
	}
	d.mu.Unlock()
	if failing {
		m.Rcode = rcode
		_ = w.WriteMsg(m)
		return
	}
	if dns.IsSubDomain(SynthZone, name) && name != SynthZone {
		if q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: synthAddr(name)}}
		}
		_ = w.WriteMsg(m)
		return
	}
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	owner := name
	for range 8 { // follow CNAMEs inside the zone, as a real server does
		var next string
		for _, rr := range rrs {
			if rr.Header().Rrtype != q.Qtype && rr.Header().Rrtype != dns.TypeCNAME {
				continue
			}
			c := dns.Copy(rr)
			c.Header().Name = owner
			m.Answer = append(m.Answer, c)
			if cn, ok := rr.(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME {
				next = strings.ToLower(cn.Target)
			}
		}
		if next == "" {
			break
		}
		owner = next
		d.mu.Lock()
		rrs = d.zone[next]
		d.mu.Unlock()
	}
	_ = w.WriteMsg(m)
}
