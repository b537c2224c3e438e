// Command dnsproto is the benchmark's upstream: an authoritative server
// that answers every name with one A record derived from a hash of the
// name (inside -net, TTL -ttl), so uncached runs fill the firewall sets
// with distinct addresses.
package main

import (
	"encoding/binary"
	"flag"
	"hash/fnv"
	"log"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("addr", "198.18.1.2:53", "listen address")
	network := flag.String("net", "198.18.128.0/17", "answer addresses from this prefix")
	ttl := flag.Uint("ttl", 300, "TTL of every answer")
	accept := flag.String("accept", "", "also accept (and close) TCP connections on this address, for dnsload -connect")
	flag.Parse()
	if *accept != "" {
		ln, err := net.Listen("tcp", *accept)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	pfx := netip.MustParsePrefix(*network).Masked()
	hosts := uint32(1) << (32 - pfx.Bits())
	base4 := pfx.Addr().As4()
	base := binary.BigEndian.Uint32(base4[:])
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			h := fnv.New32a()
			h.Write([]byte(strings.ToLower(r.Question[0].Name)))
			n := h.Sum32()%(hosts-2) + 1
			ip := binary.BigEndian.AppendUint32(nil, base+n) // inside pfx: n < hosts
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: uint32(*ttl)}, A: ip}}
		}
		_ = w.WriteMsg(m)
	})
	errc := make(chan error, 2)
	for _, n := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *addr, Net: n, Handler: handler}
		go func() { errc <- srv.ListenAndServe() }()
	}
	log.Fatal(<-errc)
}
