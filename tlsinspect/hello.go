// Package tlsinspect is sluice's transparent proxy for TLS and HTTP. A
// connection the agent opens to port 443 (or 80) is redirected to it; it
// reads the ClientHello (or the request head) the way a server does, checks
// the name against the policy and the original destination against the
// addresses the resolver handed this agent for that name, and only then
// dials the destination, replays what it read and splices both ways.
package tlsinspect

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"slices"
	"time"
)

// Extension code points a ClientHello that hides its real server name
// carries: Encrypted Client Hello and the legacy draft ESNI.
const (
	extECH  = 0xfe0d
	extESNI = 0xffce
)

// Hello is what the proxy needs of a ClientHello.
type Hello struct {
	// ServerName is the SNI exactly as sent (not yet canonical).
	ServerName string
	// Extensions are the extension types, in order.
	Extensions []uint16
	// Raw is every byte read from the client, to be replayed upstream.
	Raw []byte
}

// HasECH reports whether the hello carries Encrypted Client Hello or ESNI.
func (h *Hello) HasECH() bool {
	return slices.Contains(h.Extensions, extECH) || slices.Contains(h.Extensions, extESNI)
}

// Errors of ReadHello, each a refusal reason.
var (
	ErrNotTLS       = errors.New("not_tls")
	ErrHelloTimeout = errors.New("hello_timeout")
	ErrHelloTooBig  = errors.New("hello_too_large")
)

// recorder is the client side of the hello as crypto/tls sees it: reads
// are recorded (and capped), writes are discarded so that no alert or
// ServerHello ever reaches the client. hello is set once the ClientHello
// has been parsed.
type recorder struct {
	net.Conn
	buf   []byte // every byte read from the client
	off   int    // how much of buf crypto/tls has taken
	max   int
	hello *Hello
}

// helloBuf is the first read's room: Go's ClientHello with its
// post-quantum key share (about 1.5 KiB) takes one read instead of the
// two crypto/tls asks for (a record header, then the rest); larger hellos
// double it as they come.
const helloBuf = 2048

// Read hands crypto/tls what the client sent, reading from the
// connection only when all of it has been taken, and then as much as
// has arrived (up to the cap), not just what crypto/tls asked for.
func (r *recorder) Read(p []byte) (int, error) {
	if r.off == len(r.buf) {
		if len(r.buf) >= r.max {
			return 0, ErrHelloTooBig
		}
		if len(r.buf) == cap(r.buf) {
			r.buf = slices.Grow(r.buf, min(max(len(r.buf), helloBuf), r.max-len(r.buf)))
		}
		room := r.buf[len(r.buf):min(cap(r.buf), r.max)]
		n, err := r.Conn.Read(room)
		r.buf = r.buf[:len(r.buf)+n]
		if n == 0 {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

func (r *recorder) Write(p []byte) (int, error) { return len(p), nil }

var errGotHello = errors.New("got the client hello")

// helloConfig stops every handshake at the ClientHello: one Config for all
// connections, the hello going to the connection's own recorder.
var helloConfig = &tls.Config{
	GetConfigForClient: func(info *tls.ClientHelloInfo) (*tls.Config, error) {
		info.Conn.(*recorder).hello = &Hello{ServerName: info.ServerName, Extensions: slices.Clone(info.Extensions)}
		return nil, errGotHello
	},
}

// ReadHello reads one ClientHello from c with crypto/tls's own parser, so
// that records split across segments, hellos split across records,
// GREASE, post-quantum key shares and malformed input are handled exactly
// as a Go TLS server handles them. It reads at most max bytes and stops at
// deadline. It never writes to c.
func ReadHello(c net.Conn, deadline time.Time, max int) (*Hello, error) {
	rec := &recorder{Conn: c, max: max, buf: make([]byte, 0, min(helloBuf, max))}
	srv := tls.Server(rec, helloConfig)
	// The deadline on c bounds the read; a context with a deadline would
	// cost crypto/tls a watcher goroutine per connection for nothing.
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	err := srv.HandshakeContext(context.Background())
	if hello := rec.hello; hello != nil {
		hello.Raw = rec.buf
		return hello, nil
	}
	switch {
	case errors.Is(err, ErrHelloTooBig):
		return nil, ErrHelloTooBig
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, ErrHelloTimeout
	case len(rec.buf) > 0 && rec.buf[0] != 0x16:
		return nil, ErrNotTLS
	default:
		return nil, errors.Join(ErrNotTLS, err)
	}
}
