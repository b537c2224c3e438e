// Package tlsinspect is sluice's transparent proxy for TLS and HTTP. A
// connection the agent opens to port 443 (or 80) is redirected to it; it
// reads the ClientHello (or the request head) the way a server does, checks
// the name against the policy and the original destination against the
// addresses the resolver handed this agent for that name, and only then
// dials the destination, replays what it read and splices both ways.
package tlsinspect

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
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

	exts [24]uint16 // Extensions' room, enough for the hellos of browsers and Go
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

// errAmbiguous marks the refusals of hellos that a Go TLS server would
// take: each has a reading in which the server the proxy dials for the
// agent, or a middlebox on the way, could see another name or message
// than the proxy checked. The differential fuzz target lets these, and
// only these, differ from crypto/tls.
var errAmbiguous = errors.New("ambiguous")

// TLS framing and the limits crypto/tls holds a ClientHello to: past them
// it fails, so the proxy refuses too rather than wait for more bytes.
const (
	recordHeader        = 5
	recordTypeAlert     = 0x15
	recordTypeHandshake = 0x16
	typeClientHello     = 1
	maxPlaintext        = 16384 // a record's payload, unencrypted
	maxHandshake        = 65536 // a handshake message's body
)

// CheckHello decides on what a client has sent so far (b, at most max
// bytes kept): the parsed hello, a refusal (ErrNotTLS, ErrHelloTooBig),
// or neither when the hello is not complete yet and more may come. A
// client that ends its side with neither is refused as ErrNotTLS.
//
// The parser is strict: it takes what crypto/tls's server takes, as far
// as the proxy reads it (records split across segments, hellos split
// across records, GREASE, post-quantum key shares), and refuses the
// same malformed input, checked against crypto/tls by a differential
// fuzz target; beyond that it refuses what is ambiguous (errAmbiguous).
// The whole of b is the replay.
//
// CheckHello reads b from its start; a HelloReader, given b as it grows,
// reads each byte once.
func CheckHello(b []byte, max int) (*Hello, error) {
	var r HelloReader
	return r.Check(b, max)
}

// HelloReader reads a ClientHello as its bytes arrive: each call to Check
// takes the bytes received so far (the earlier ones unchanged) and reads
// only the records completed since the last call, so that a hello sent
// in one-byte records, one byte at a time, costs no more than one sent
// whole. Its zero value is ready; one reader reads one connection's hello.
type HelloReader struct {
	off    int    // the whole records of b read so far
	msg    []byte // their handshake bytes: b's own while in one record
	joined bool   // msg is a copy, over several records
	hello  Hello  // what Check returns: the reader's, not one made per hello
}

// Check is CheckHello for b, which begins with what the earlier calls
// were given. The Hello it returns is r's own (the proxy keeps a reader
// in each connection's state, so a hello costs no allocation of its own).
func (r *HelloReader) Check(b []byte, max int) (*Hello, error) {
	msg, err := r.message(b)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrNotTLS, err)
	case msg == nil && len(b) >= max:
		return nil, ErrHelloTooBig
	case msg == nil:
		return nil, nil
	}
	h := &r.hello
	*h = Hello{Raw: b}
	if err := h.parse(msg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotTLS, err)
	}
	return h, nil
}

// message returns the ClientHello message (its 4-byte header included)
// from the handshake records at the start of b: nil when it is not
// complete yet, an error when the records cannot hold one. A message in
// one record is b's own bytes; one over several is copied as its records
// come.
func (r *HelloReader) message(b []byte) ([]byte, error) {
	for {
		rest := b[r.off:]
		if len(rest) < recordHeader {
			if len(rest) > 0 && rest[0] != recordTypeHandshake {
				return nil, recordTypeError(rest[0])
			}
			return nil, nil
		}
		typ, vers, n := rest[0], int(rest[1])<<8|int(rest[2]), int(rest[3])<<8|int(rest[4])
		switch {
		case typ != recordTypeHandshake:
			return nil, recordTypeError(typ)
		case vers >= 0x1000:
			return nil, fmt.Errorf("record version %#04x", vers)
		case n > maxPlaintext: // crypto/tls takes no more before decryption
			return nil, fmt.Errorf("record of %d bytes", n)
		case len(rest) < recordHeader+n:
			return nil, nil
		case n == 0:
			return nil, errors.New("empty handshake record")
		}
		frag := rest[recordHeader : recordHeader+n]
		r.off += recordHeader + n
		switch {
		case r.msg == nil:
			r.msg = frag
		case !r.joined:
			r.msg, r.joined = append(slices.Clip(slices.Clone(r.msg)), frag...), true
		default:
			r.msg = append(r.msg, frag...)
		}
		msg := r.msg
		if len(msg) < 4 {
			continue
		}
		size := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		switch {
		case msg[0] != typeClientHello:
			return nil, fmt.Errorf("handshake message of type %d", msg[0])
		case size > maxHandshake:
			return nil, fmt.Errorf("handshake message of %d bytes", size)
		case len(msg) < 4+size:
			continue
		case len(msg) > 4+size:
			// The record that ends the hello goes on with more handshake
			// bytes: a Go server leaves them for later, another server
			// may not.
			return nil, fmt.Errorf("%w: %d handshake bytes after the ClientHello", errAmbiguous, len(msg)-4-size)
		}
		return msg, nil
	}
}

func recordTypeError(typ byte) error {
	if typ == recordTypeAlert {
		// crypto/tls skips warning alerts before the hello; nothing sends
		// them there, and whether the dialled server does is its own.
		return fmt.Errorf("%w: an alert before the ClientHello", errAmbiguous)
	}
	return fmt.Errorf("record type %d", typ)
}

// Extension code points that crypto/tls's server checks the contents of.
const (
	extServerName          = 0
	extStatusRequest       = 5
	extSupportedGroups     = 10
	extECPointFormats      = 11
	extSignatureAlgorithms = 13
	extALPN                = 16
	extSCT                 = 18
	extExtendedMasterSec   = 23
	extSessionTicket       = 35
	extPreSharedKey        = 41
	extEarlyData           = 42
	extSupportedVersions   = 43
	extCookie              = 44
	extPSKModes            = 45
	extSignatureAlgsCert   = 50
	extKeyShare            = 51
	extQUICTransportParams = 57
	extRenegotiationInfo   = 0xff01
)

// parse reads the ClientHello message msg (header included) into h,
// accepting and refusing what crypto/tls's server does up to its
// GetConfigForClient (clientHelloMsg.unmarshal, then the check of an ECH
// extension), and refusing a server_name list with a name of another
// type than host_name (errAmbiguous).
func (h *Hello) parse(msg []byte) error {
	s := cryptobyte.String(msg[4:])
	var vers uint16
	var skip, suites cryptobyte.String
	if !s.ReadUint16(&vers) || !s.Skip(32) || !s.ReadUint8LengthPrefixed(&skip) ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&skip) {
		return errors.New("malformed ClientHello")
	}
	h.Extensions = h.exts[:0]
	if s.Empty() {
		return nil // a hello without extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return errors.New("malformed extensions")
	}
	var set map[uint16]bool
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return errors.New("malformed extensions")
		}
		if h.seen(typ, &set) {
			return fmt.Errorf("extension %d twice", typ)
		}
		h.Extensions = append(h.Extensions, typ)
		ok := true
		switch typ {
		case extServerName:
			if err := h.readServerName(&data); err != nil {
				return err
			}
		case extStatusRequest:
			ok = data.Skip(1) && skipUint16Prefixed(&data) && skipUint16Prefixed(&data)
		case extSupportedGroups, extSignatureAlgorithms, extSignatureAlgsCert:
			var list cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&list) && !list.Empty() && len(list)%2 == 0
		case extECPointFormats:
			var list cryptobyte.String
			ok = data.ReadUint8LengthPrefixed(&list) && !list.Empty()
		case extSessionTicket:
			data = nil // any ticket
		case extRenegotiationInfo, extPSKModes:
			ok = data.ReadUint8LengthPrefixed(&skip)
		case extExtendedMasterSec, extSCT, extEarlyData:
			// no contents: checked below
		case extALPN:
			ok = readNonEmptyList(&data, func(l *cryptobyte.String) bool {
				var p cryptobyte.String
				return l.ReadUint8LengthPrefixed(&p) && !p.Empty()
			})
		case extSupportedVersions:
			var list cryptobyte.String
			ok = data.ReadUint8LengthPrefixed(&list) && !list.Empty() && len(list)%2 == 0
		case extCookie:
			var c cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&c) && !c.Empty()
		case extKeyShare:
			var shares cryptobyte.String
			ok = data.ReadUint16LengthPrefixed(&shares)
			for ok && !shares.Empty() {
				var key cryptobyte.String
				ok = shares.Skip(2) && shares.ReadUint16LengthPrefixed(&key) && !key.Empty()
			}
		case extQUICTransportParams:
			data = nil // opaque
		case extPreSharedKey:
			ok = exts.Empty() && readNonEmptyList(&data, func(l *cryptobyte.String) bool {
				var label cryptobyte.String
				return l.ReadUint16LengthPrefixed(&label) && !label.Empty() && l.Skip(4)
			}) && readNonEmptyList(&data, func(l *cryptobyte.String) bool {
				var binder cryptobyte.String
				return l.ReadUint8LengthPrefixed(&binder) && !binder.Empty()
			})
		case extECH:
			ok = echWellFormed(data)
			data = nil
		default:
			continue // unknown extensions are not read
		}
		if !ok || !data.Empty() {
			return fmt.Errorf("malformed extension %d", typ)
		}
	}
	return nil
}

// seen reports whether typ is among h's extensions already: a scan for
// the usual count, a set past it (a hello may carry thousands, and a scan
// each would be quadratic).
func (h *Hello) seen(typ uint16, set *map[uint16]bool) bool {
	const scan = 32
	if len(h.Extensions) < scan {
		return slices.Contains(h.Extensions, typ)
	}
	if *set == nil {
		*set = make(map[uint16]bool, 2*scan)
		for _, t := range h.Extensions {
			(*set)[t] = true
		}
	}
	if (*set)[typ] {
		return true
	}
	(*set)[typ] = true
	return false
}

// readServerName reads the server_name extension: a non-empty list of
// names, of which crypto/tls takes the one of type host_name (a second
// one is an error) and skips the others. Here a name of another type
// is refused too: no type but host_name has ever been defined, and a
// server that reads one may take it for the name the proxy did not check.
func (h *Hello) readServerName(data *cryptobyte.String) error {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() {
		return errors.New("malformed server_name")
	}
	found := false
	for !list.Empty() {
		var typ uint8
		var name cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
			return errors.New("malformed server_name")
		}
		switch {
		case found && typ == 0:
			return errors.New("two host names in server_name")
		case typ != 0:
			return fmt.Errorf("%w: a server name of type %d", errAmbiguous, typ)
		case name[len(name)-1] == '.':
			return errors.New("server name with a trailing dot")
		}
		h.ServerName, found = string(name), true
	}
	if !data.Empty() {
		return errors.New("malformed server_name")
	}
	return nil
}

// readNonEmptyList reads a non-empty list with a 2-byte length whose
// items item reads.
func readNonEmptyList(s *cryptobyte.String, item func(*cryptobyte.String) bool) bool {
	var l cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&l) || l.Empty() {
		return false
	}
	for !l.Empty() {
		if !item(&l) {
			return false
		}
	}
	return true
}

func skipUint16Prefixed(s *cryptobyte.String) bool {
	var v cryptobyte.String
	return s.ReadUint16LengthPrefixed(&v)
}

// echWellFormed checks an encrypted_client_hello extension as crypto/tls's
// server does before anything else of the hello (parseECHExt): empty
// (then it is not read), the inner type alone, or the outer type with its
// cipher suite, config id, encapsulated key and payload. The proxy
// refuses a hello with one all the same (journal.ReasonECH): it hides
// the name the agent means.
func echWellFormed(data []byte) bool {
	if len(data) == 0 {
		return true
	}
	s := cryptobyte.String(data)
	var typ uint8
	if !s.ReadUint8(&typ) {
		return false
	}
	switch typ {
	case 1: // inner
		return s.Empty()
	case 0: // outer; what follows the payload is not read
		var v cryptobyte.String
		return s.Skip(5) && s.ReadUint16LengthPrefixed(&v) && s.ReadUint16LengthPrefixed(&v)
	}
	return false
}
