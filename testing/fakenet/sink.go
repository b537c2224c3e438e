package fakenet

import (
	"net"
	"sync"
)

// Sink accepts TCP connections and UDP datagrams on any number of sockets
// and records each contact: an attacker's endpoint, which a passing test
// leaves untouched.
type Sink struct {
	mu       sync.Mutex
	contacts []Contact
	closers  []func() error
}

// ListenTCP records every connection accepted on ln (and closes it).
func (s *Sink) ListenTCP(ln net.Listener) { s.accept(ln, false) }

// ListenSilent records every connection accepted on ln and then holds it
// open without reading or writing: an upstream that never answers.
func (s *Sink) ListenSilent(ln net.Listener) { s.accept(ln, true) }

func (s *Sink) accept(ln net.Listener, hold bool) {
	s.track(ln.Close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.record(Contact{Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String()})
			if hold {
				s.track(c.Close)
			} else {
				c.Close()
			}
		}
	}()
}

// ListenUDP records every datagram that arrives on pc.
func (s *Sink) ListenUDP(pc net.PacketConn) {
	s.track(pc.Close)
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.record(Contact{Local: pc.LocalAddr().String(), Remote: from.String()})
		}
	}()
}

func (s *Sink) track(f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, f)
}

func (s *Sink) record(c Contact) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contacts = append(s.contacts, c)
}

// Contacts returns everything recorded so far.
func (s *Sink) Contacts() []Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Contact(nil), s.contacts...)
}

// Close stops listening.
func (s *Sink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.closers {
		_ = f()
	}
}
