package fakenet

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
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
func (s *Sink) ListenTCP(ln net.Listener) {
	s.accept(ln, func(c net.Conn, _ int) { c.Close() })
}

// ListenSilent records every connection accepted on ln and then holds it
// open without reading or writing: an upstream that never answers.
func (s *Sink) ListenSilent(ln net.Listener) {
	s.accept(ln, func(c net.Conn, _ int) { s.track(c.Close) })
}

// ListenDrain records every connection accepted on ln, writes one byte
// ("k", so the client knows the path is up), reads until the peer ends the
// stream and records how (Contact.End). A connection still open when the
// sink closes gets no End.
func (s *Sink) ListenDrain(ln net.Listener) {
	s.accept(ln, func(c net.Conn, i int) {
		s.track(c.Close)
		go s.drain(c, i)
	})
}

func (s *Sink) drain(c net.Conn, i int) {
	defer c.Close()
	if _, err := c.Write([]byte("k")); err != nil {
		return
	}
	_, err := io.Copy(io.Discard, c)
	end := "eof"
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		end = "reset"
	case errors.Is(err, net.ErrClosed):
		return
	case err != nil:
		end = err.Error()
	}
	s.mu.Lock()
	s.contacts[i].End = end
	s.mu.Unlock()
}

// accept records every connection accepted on ln and hands it to serve
// with the index of its record.
func (s *Sink) accept(ln net.Listener, serve func(c net.Conn, i int)) {
	s.track(ln.Close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c, s.record(Contact{Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String()}))
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

// record adds c and returns its index.
func (s *Sink) record(c Contact) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contacts = append(s.contacts, c)
	return len(s.contacts) - 1
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
