package dnsfilter

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpWorkers bounds how many UDP queries are answered at once. Each worker
// reads the socket and answers in place, upstream exchange included, so
// this is also the bound on concurrent upstream queries from UDP, and a
// flood of cache misses queues in the socket instead of spawning
// goroutines. Fixed workers keep their grown stacks, where a goroutine per
// packet pays for growing a fresh one every time.
const udpWorkers = 128

// serveUDP answers queries on conn with a fixed set of workers until conn
// is closed. Replies leave from the address each query was sent to.
func (s *Server) serveUDP(conn *net.UDPConn) {
	// Ask for each datagram's destination address (both families, as on a
	// dual-stack socket either may arrive); one of the two may fail.
	err6 := ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	err4 := ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	if err4 != nil && err6 != nil {
		s.cfg.Log.Warn("no destination control messages on the resolver socket; replies use the default source", "err", err4)
	}
	for range udpWorkers {
		go s.udpWorker(conn)
	}
}

func (s *Server) udpWorker(conn *net.UDPConn) {
	buf := make([]byte, dns.MaxMsgSize)
	ctx := context.Background()
	for {
		n, session, err := dns.ReadFromSessionUDP(conn, buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req := new(dns.Msg)
		if req.Unpack(buf[:n]) != nil {
			continue // not a DNS message: no answer, as a server would
		}
		src, _ := netip.AddrFromSlice(session.RemoteAddr().(*net.UDPAddr).IP)
		resp := s.Answer(ctx, src.Unmap(), req)
		if resp == nil {
			continue
		}
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
		out, err := resp.PackBuffer(buf)
		if err != nil {
			s.cfg.Log.Debug("pack dns answer", "err", err)
			continue
		}
		if _, err := dns.WriteToSessionUDP(conn, out, session); err != nil {
			s.cfg.Log.Debug("write dns answer", "err", err)
		}
	}
}
