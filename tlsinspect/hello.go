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
	"fmt"
	"io"
	"net"
	"slices"
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

// Errors of CheckHello. The proxy refuses the connection for each, with
// the reason journal.ReasonNotTLS or journal.ReasonHelloTooLarge.
var (
	ErrNotTLS      = errors.New("not a TLS ClientHello")
	ErrHelloTooBig = errors.New("ClientHello past the size cap")
)

// TLS framing, as far as helloReady needs it.
const (
	recordHeader        = 5
	recordTypeHandshake = 0x16
	typeClientHello     = 1
	// maxRecord is crypto/tls's bound on a record before decryption, and
	// maxHandshake its bound on a handshake message: past them it fails
	// at once, so waiting for more bytes would only delay its answer.
	maxRecord    = 16384 + 2048
	maxHandshake = 65536
)

// CheckHello decides on what a client has sent so far (b, at most max
// bytes kept): the parsed hello, a refusal (ErrNotTLS, ErrHelloTooBig),
// or neither when the hello is not complete yet and more may come. A
// client that ends its side with neither is refused as ErrNotTLS.
//
// The decision on a complete hello is crypto/tls's own parser, so that
// records split across segments, hellos split across records, GREASE,
// post-quantum key shares and malformed input are handled exactly as a Go
// TLS server handles them. Only the framing is read here, to know when
// to ask it: a fixed-size peek would be wrong in both directions.
func CheckHello(b []byte, max int) (*Hello, error) {
	switch {
	case helloReady(b):
		return parseHello(b)
	case len(b) >= max:
		return nil, ErrHelloTooBig
	}
	return nil, nil
}

// helloReady reports whether b holds a whole ClientHello message, or
// framing so wrong that more bytes cannot help.
func helloReady(b []byte) bool {
	if len(b) > 0 && b[0] != recordTypeHandshake {
		return true
	}
	var head [4]byte // the handshake message's type and length
	have := 0        // handshake bytes in the complete records so far
	for len(b) >= recordHeader {
		n := int(b[3])<<8 | int(b[4])
		switch {
		case b[0] != recordTypeHandshake || n > maxRecord:
			return true
		case len(b) < recordHeader+n:
			return false
		}
		if have < len(head) {
			copy(head[have:], b[recordHeader:recordHeader+n])
		}
		have += n
		b = b[recordHeader+n:]
		if have >= len(head) {
			size := int(head[1])<<16 | int(head[2])<<8 | int(head[3])
			if head[0] != typeClientHello || size > maxHandshake || have >= len(head)+size {
				return true
			}
		}
	}
	return false
}

// helloConn is the client side of a hello as crypto/tls sees it: the
// bytes received, then EOF; writes (an alert) are discarded, so that
// nothing ever reaches the client. hello is set once the ClientHello has
// been parsed.
type helloConn struct {
	net.Conn
	b     []byte
	hello *Hello
}

func (c *helloConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.b)
	c.b = c.b[n:]
	return n, nil
}

func (c *helloConn) Write(p []byte) (int, error) { return len(p), nil }

var errGotHello = errors.New("got the client hello")

// helloConfig stops every handshake at the ClientHello: one Config for all
// connections, the hello going to the connection's own helloConn.
var helloConfig = &tls.Config{
	GetConfigForClient: func(info *tls.ClientHelloInfo) (*tls.Config, error) {
		info.Conn.(*helloConn).hello = &Hello{ServerName: info.ServerName, Extensions: slices.Clone(info.Extensions)}
		return nil, errGotHello
	},
}

// parseHello runs crypto/tls's server handshake over b until it has
// parsed the ClientHello. The whole of b is the replay.
func parseHello(b []byte) (*Hello, error) {
	c := &helloConn{b: b}
	// A context that is never done costs crypto/tls no watcher goroutine.
	err := tls.Server(c, helloConfig).HandshakeContext(context.Background())
	if c.hello == nil {
		return nil, fmt.Errorf("%w: %v", ErrNotTLS, err)
	}
	c.hello.Raw = b
	return c.hello, nil
}
