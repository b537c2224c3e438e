package tlsinspect

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/sluicegw/sluice/testing/fakenet"
)

// feed gives b to a HelloReader in pieces of at most chunk bytes, as a
// loop does when they arrive, until it decides; a client that sent all
// of b undecided is refused when it ends.
func feed(t testing.TB, b []byte, chunk int, max int) (*Hello, error) {
	t.Helper()
	var got []byte
	var r HelloReader
	for len(b) > 0 {
		n := min(chunk, len(b), max-len(got))
		got, b = append(got, b[:n]...), b[n:]
		hello, err := r.Check(got, max)
		if hello != nil || err != nil {
			return hello, err
		}
	}
	return nil, ErrNotTLS
}

func goHello(t testing.TB, sni string) []byte {
	t.Helper()
	h, err := fakenet.CaptureHello(&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCheckHelloFraming(t *testing.T) {
	h := goHello(t, "Allowed.Test")
	if len(h) < 1400 {
		t.Logf("note: Go's default hello is %d bytes (no post-quantum share?)", len(h))
	}
	tests := []struct {
		name  string
		bytes []byte
		chunk int
	}{
		{"one write", h, len(h)},
		{"one-byte segments", h, 1},
		{"one-byte records", fakenet.Reframe(h, 1), 64},
		{"seven-byte records", fakenet.Reframe(h, 7), 1500},
		{"100-byte records in 3-byte writes", fakenet.Reframe(h, 100), 3},
	}
	for _, tt := range tests {
		got, err := feed(t, tt.bytes, tt.chunk, DefaultMaxHello)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.ServerName != "Allowed.Test" {
			t.Errorf("%s: SNI %q", tt.name, got.ServerName)
		}
		if !bytes.Equal(got.Raw, tt.bytes) {
			t.Errorf("%s: recorded %d bytes, sent %d; the replay must be exact", tt.name, len(got.Raw), len(tt.bytes))
		}
	}
}

func TestCheckHelloRefusals(t *testing.T) {
	h := goHello(t, "allowed.test")
	padded, err := fakenet.AddExtension(h, 21, make([]byte, 20000)) // padding: spans two records
	if err != nil {
		t.Fatal(err)
	}
	// A well-formed outer ECH extension: type outer, HPKE suite, config id,
	// a 32-byte encapsulated key and a payload.
	echOuter := append([]byte{0, 0, 1, 0, 1, 5, 0, 32}, make([]byte, 32)...)
	echOuter = append(echOuter, append([]byte{0, 16}, make([]byte, 16)...)...)
	ech, _ := fakenet.AddExtension(h, extECH, echOuter)
	bigMsg := append([]byte{1, 0, 0xfd, 0xe8}, bytes.Repeat([]byte{0x41}, 65000)...)
	esni, _ := fakenet.AddExtension(h, extESNI, []byte{1, 2, 3})
	tests := []struct {
		name    string
		bytes   []byte
		max     int
		wantErr error
		wantECH bool
	}{
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"), DefaultMaxHello, ErrNotTLS, false},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.2\r\n"), DefaultMaxHello, ErrNotTLS, false},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15, 0, 0, 0, 0x10}, DefaultMaxHello, ErrNotTLS, false},
		{"alert first", []byte{0x15, 3, 1, 0, 2, 2, 40}, DefaultMaxHello, ErrNotTLS, false},
		{"handshake claiming 16 MiB", append([]byte{0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x41}, 1<<20)...), DefaultMaxHello, ErrNotTLS, false},
		{"64 KB of handshake garbage over the cap", fakenet.Record(bigMsg), 16 * 1024, ErrHelloTooBig, false},
		{"64 KB of handshake garbage", fakenet.Record(bigMsg), DefaultMaxHello, ErrNotTLS, false},
		{"padded hello over the cap", fakenet.Record(padded), 16 * 1024, ErrHelloTooBig, false},
		{"padded hello under the cap", fakenet.Record(padded), DefaultMaxHello, nil, false},
		{"ECH", fakenet.Record(ech), DefaultMaxHello, nil, true},
		{"ESNI", fakenet.Record(esni), DefaultMaxHello, nil, true},
	}
	for _, tt := range tests {
		got, err := feed(t, tt.bytes, 4096, tt.max)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: err %v, want %v", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.HasECH() != tt.wantECH {
			t.Errorf("%s: HasECH = %v", tt.name, got.HasECH())
		}
	}
}

// TestHelloWaitsForTheWhole: no prefix of a hello, however it is framed,
// is decided on; the whole is.
func TestHelloWaitsForTheWhole(t *testing.T) {
	h := goHello(t, "allowed.test")
	for _, b := range [][]byte{h, fakenet.Reframe(h, 1), fakenet.Reframe(h, 300)} {
		for i := range len(b) {
			if hello, err := CheckHello(b[:i], DefaultMaxHello); hello != nil || err != nil {
				t.Fatalf("decided on %d of %d bytes: %v", i, len(b), err)
			}
		}
		if hello, err := CheckHello(b, DefaultMaxHello); hello == nil || err != nil {
			t.Fatalf("whole hello: %v", err)
		}
	}
}

func TestCheckHelloSNIVariants(t *testing.T) {
	h := goHello(t, "allowed.test")
	for _, tt := range []struct {
		sni, want string
		ok        bool
	}{
		{"ALLOWED.test", "ALLOWED.test", true},
		{"198.18.2.10", "198.18.2.10", true}, // Go's parser lets IP literals through: the proxy refuses them
		{"", "", true},
		{"allowed.test.", "", false},                                     // RFC 6066 forbids the trailing dot; Go's parser refuses it
		{"evil.test\x00allowed.test", "evil.test\x00allowed.test", true}, // the name check refuses it
	} {
		msg, err := fakenet.SetSNI(h, tt.sni)
		if err != nil {
			t.Fatal(err)
		}
		got, err := feed(t, fakenet.Record(msg), 4096, DefaultMaxHello)
		if (err == nil) != tt.ok {
			t.Errorf("SNI %q: err %v", tt.sni, err)
			continue
		}
		if err == nil && got.ServerName != tt.want {
			t.Errorf("SNI %q: parsed %q", tt.sni, got.ServerName)
		}
	}
}

// FuzzCheckHello: the hello is the agent's bytes. Whatever they are and
// however they arrive, CheckHello decides by the time it has them all or
// they reach the cap, it decides the same on each longer prefix, and what
// it replays is exactly what was sent.
func FuzzCheckHello(f *testing.F) {
	h := goHello(f, "allowed.test")
	f.Add(h, uint16(4096))
	f.Add(fakenet.Reframe(h, 7), uint16(100))
	ech, _ := fakenet.AddExtension(h, extECH, []byte{1})
	f.Add(fakenet.Record(ech), uint16(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint16(3))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16) {
		const limit = 4096
		b = b[:min(len(b), limit)]
		got, err := feed(t, b, max(int(chunk), 1), limit)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, got.Raw) {
			t.Fatalf("recorded bytes are not what was sent")
		}
		if again, err := CheckHello(b, limit); err != nil || again.ServerName != got.ServerName {
			t.Fatalf("whole input decided %v, in pieces %q", err, got.ServerName)
		}
	})
}

// BenchmarkCheckHello is the proxy's own cost of a ClientHello as Go's TLS
// client sends it (X25519MLKEM768 key share included), without the socket.
func BenchmarkCheckHello(b *testing.B) {
	hello := goHello(b, "allowed.bench.test")
	b.ReportAllocs()
	for b.Loop() {
		if h, err := CheckHello(hello, DefaultMaxHello); h == nil || err != nil {
			b.Fatal(err)
		}
	}
}

// goHelloConn is the client side of a hello as crypto/tls sees it: the
// bytes received, then EOF; writes (an alert) are discarded.
type goHelloConn struct {
	net.Conn
	b    []byte
	info *tls.ClientHelloInfo
}

func (c *goHelloConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.b)
	c.b = c.b[n:]
	return n, nil
}

func (c *goHelloConn) Write(p []byte) (int, error) { return len(p), nil }

var errGotHello = errors.New("got the client hello")

// goParse is the oracle of the strict parser: crypto/tls's server reading
// b up to its GetConfigForClient, as the proxy did before it had a parser
// of its own. ok says it took the hello.
func goParse(b []byte) (name string, exts []uint16, ok bool) {
	c := &goHelloConn{b: b}
	cfg := &tls.Config{GetConfigForClient: func(info *tls.ClientHelloInfo) (*tls.Config, error) {
		c.info = info
		return nil, errGotHello
	}}
	_ = tls.Server(c, cfg).HandshakeContext(context.Background())
	if c.info == nil {
		return "", nil, false
	}
	return c.info.ServerName, c.info.Extensions, true
}

// realHellos are ClientHellos that real clients sent (testdata/hellos:
// curl with OpenSSL, Chromium, Python, wget with GnuTLS; captured as
// testdata/hellos/README says).
func realHellos(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/hellos/*.bin")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured hellos in testdata/hellos: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// TestHelloAgreesWithGo: on the hellos of Go and of real clients, and on
// edits of them a Go server takes or refuses, the strict parser decides
// as crypto/tls does and reads the same name and extensions; where it is
// stricter on purpose, it says so (errAmbiguous).
func TestHelloAgreesWithGo(t *testing.T) {
	h := goHello(t, "allowed.test")
	msg := fakenet.HandshakeOf(h)
	edit := func(typ uint16, data []byte) []byte { // the extension first
		m, err := fakenet.AddExtension(h, typ, data)
		if err != nil {
			t.Fatal(err)
		}
		return fakenet.Record(m)
	}
	psk := []byte{0, 7, 0, 1, 'x', 0, 0, 0, 0, 0, 2, 1, 9}
	noSNI, err := fakenet.SetSNI(h, "")
	if err != nil {
		t.Fatal(err)
	}
	names := func(list ...byte) []byte { // a server_name extension of list
		m, err := fakenet.AddExtension(fakenet.Record(noSNI), extServerName, append([]byte{0, byte(len(list))}, list...))
		if err != nil {
			t.Fatal(err)
		}
		return fakenet.Record(m)
	}
	cases := map[string]struct {
		b         []byte
		ambiguous bool
	}{
		"go":         {b: h},
		"go, no sni": {b: goHello(t, "")},
		"go, alpn": {b: func() []byte {
			b, err := fakenet.CaptureHello(&tls.Config{ServerName: "a.test", NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}()},
		"duplicate extension":      {b: edit(extSCT, nil)}, // Go's hello has SCT
		"sni":                      {b: names(0, 0, 1, 'a')},
		"sni of another type":      {b: names(0, 0, 1, 'a', 1, 0, 1, 'b'), ambiguous: true},
		"sni of another type only": {b: names(1, 0, 1, 'b'), ambiguous: true},
		"two host names":           {b: names(0, 0, 1, 'a', 0, 0, 1, 'b')},
		"sni with a trailing dot":  {b: names(0, 0, 2, 'a', '.')},
		"sni empty":                {b: names(0, 0, 0)},
		"sni list empty":           {b: names()},
		"unknown empty":            {b: edit(0x1234, nil)},
		"psk not last":             {b: edit(extPreSharedKey, psk)},
		"psk last":                 {b: fakenet.Record(appendExtension(msg, extPreSharedKey, psk))},
		"psk without binders":      {b: fakenet.Record(appendExtension(msg, extPreSharedKey, psk[:9]))},
		"unknown with data":        {b: edit(0x4a4a, []byte{1, 2, 3})},  // GREASE-like
		"ech inner":                {b: edit(extECH, []byte{1})},        // taken, refused later as ECH
		"ech inner with more":      {b: edit(extECH, []byte{1, 0})},     // malformed
		"ech of unknown type":      {b: edit(extECH, []byte{7})},        // malformed
		"ech empty":                {b: edit(extECH, nil)},              // not read
		"esni":                     {b: edit(extESNI, []byte{1, 2, 3})}, // unknown to Go
		"trailing byte in record":  {b: fakenet.Record(append(slices.Clone(msg), 0)), ambiguous: true},
		"hello in two records":     {b: fakenet.Reframe(h, 100)},
		"warning alert first":      {b: append([]byte{0x15, 3, 1, 0, 2, 1, 0}, h...), ambiguous: true},
		"fatal alert first":        {b: append([]byte{0x15, 3, 1, 0, 2, 2, 40}, h...), ambiguous: true},
		"ccs first":                {b: append([]byte{0x14, 3, 1, 0, 1, 1}, h...)},
		"empty record first":       {b: append([]byte{0x16, 3, 1, 0, 0}, h...)},
		"record version 0x1000":    {b: append([]byte{0x16, 0x10, 0}, h[3:]...)},
		"record version 0x0000":    {b: append([]byte{0x16, 0, 0}, h[3:]...)},
		"server hello type":        {b: fakenet.Record(append([]byte{2}, msg[1:]...))},
		"extensions length short":  {b: fakenet.Record(lengthOff(msg))},
		"truncated":                {b: h[:len(h)-1]},
	}
	for name, b := range realHellos(t) {
		cases[name] = struct {
			b         []byte
			ambiguous bool
		}{b: b}
	}
	for name, tc := range cases {
		ours, err := CheckHello(tc.b, DefaultMaxHello)
		goName, goExts, goOK := goParse(tc.b)
		switch {
		case errors.Is(err, errAmbiguous):
			if !tc.ambiguous {
				t.Errorf("%s: refused as ambiguous: %v", name, err)
			}
			continue
		case tc.ambiguous:
			t.Errorf("%s: not refused as ambiguous: %v", name, err)
			continue
		}
		if (ours != nil) != goOK {
			t.Errorf("%s: ours took it %v (%v), crypto/tls %v", name, ours != nil, err, goOK)
			continue
		}
		if ours != nil && (ours.ServerName != goName || !slices.Equal(ours.Extensions, goExts)) {
			t.Errorf("%s: ours read %q %v, crypto/tls %q %v", name, ours.ServerName, ours.Extensions, goName, goExts)
		}
	}
}

// appendExtension returns the ClientHello message msg with one more
// extension, placed last.
func appendExtension(msg []byte, typ uint16, data []byte) []byte {
	i := extensionsAt(msg)
	m := slices.Clone(msg)
	m = append(m, byte(typ>>8), byte(typ), byte(len(data)>>8), byte(len(data)))
	m = append(m, data...)
	n := len(m) - i - 2
	m[i], m[i+1] = byte(n>>8), byte(n)
	n = len(m) - 4
	m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
	return m
}

// extensionsAt is where the extensions' length is in msg.
func extensionsAt(msg []byte) int {
	i := 4 + 2 + 32
	i += 1 + int(msg[i])
	i += 2 + (int(msg[i])<<8 | int(msg[i+1]))
	return i + 1 + int(msg[i])
}

// lengthOff makes the extensions block of a ClientHello message claim
// one byte less than it has.
func lengthOff(msg []byte) []byte {
	m := slices.Clone(msg)
	i := extensionsAt(m)
	n := int(m[i])<<8 | int(m[i+1])
	m[i], m[i+1] = byte((n-1)>>8), byte(n-1)
	return m
}

// FuzzHelloDifferential: crypto/tls is the oracle of the strict parser.
// On any bytes, whole or cut short: what the parser takes, crypto/tls
// takes, with the same name and extensions; what crypto/tls takes, the
// parser takes, unless it refuses it as ambiguous on purpose. So the
// parser is never laxer than a Go server, and stricter only where it says
// so. With ext set, b is the contents of a hello's extensions block,
// wrapped in a well-formed hello: random bytes rarely get past the
// framing, and the extensions are where the parsers differ most.
func FuzzHelloDifferential(f *testing.F) {
	h := goHello(f, "allowed.test")
	f.Add(h, false)
	f.Add(fakenet.Reframe(h, 7), false)
	hellos := [][]byte{h}
	for _, b := range realHellos(f) {
		f.Add(b, false)
		hellos = append(hellos, b)
	}
	for _, b := range hellos {
		if msg, err := new(HelloReader).message(b); err == nil && msg != nil {
			i := extensionsAt(msg)
			f.Add(msg[i+2:], true)
		}
	}
	ech, _ := fakenet.AddExtension(h, extECH, []byte{1})
	f.Add(fakenet.Record(ech), false)
	f.Add(fakenet.Record(appendExtension(fakenet.HandshakeOf(h), extPreSharedKey, []byte{0, 7, 0, 1, 'x', 0, 0, 0, 0, 0, 2, 1, 9})), false)
	f.Add([]byte{0x15, 3, 1, 0, 2, 1, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, ext bool) {
		if ext {
			if len(b) > 0xffff {
				return
			}
			b = withExtensions(b)
		}
		ours, err := CheckHello(b, DefaultMaxHello)
		goName, goExts, goOK := goParse(b)
		switch {
		case ours != nil && !goOK:
			t.Fatalf("taken, and refused by crypto/tls: %q", ours.ServerName)
		case ours != nil && (ours.ServerName != goName || !slices.Equal(ours.Extensions, goExts)):
			t.Fatalf("read %q %v, crypto/tls %q %v", ours.ServerName, ours.Extensions, goName, goExts)
		case ours == nil && goOK && !errors.Is(err, errAmbiguous):
			t.Fatalf("refused (%v), taken by crypto/tls as %q", err, goName)
		}
	})
}

// withExtensions is a ClientHello, in records, whose extensions block
// holds exts.
func withExtensions(exts []byte) []byte {
	msg := []byte{typeClientHello, 0, 0, 0, 3, 3}
	msg = append(msg, make([]byte, 32)...)                 // random
	msg = append(msg, 0, 0, 2, 0x13, 0x01, 1, 0)           // no session id; a suite; null compression
	msg = append(msg, byte(len(exts)>>8), byte(len(exts))) // the extensions
	msg = append(msg, exts...)
	n := len(msg) - 4
	msg[1], msg[2], msg[3] = byte(n>>16), byte(n>>8), byte(n)
	return fakenet.Record(msg)
}

// TestHelloReaderLinear: a hello in one-byte records that arrives one
// byte at a time, up to the cap, costs the reader memory in proportion
// to its size: each record is read once, and joined once. (Read from the
// start at every byte, and joined anew each time, it took 1.5 GB and
// seconds of the loop's CPU.)
func TestHelloReaderLinear(t *testing.T) {
	msg := append([]byte{typeClientHello, 0, 0xfd, 0xe8}, bytes.Repeat([]byte{0x41}, 65000)...)
	b := fakenet.Reframe(fakenet.Record(msg), 1)[:DefaultMaxHello]
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var r HelloReader
	var err error
	for i := 1; i <= len(b); i++ {
		var h *Hello
		if h, err = r.Check(b[:i], DefaultMaxHello); h != nil || err != nil {
			break
		}
	}
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrHelloTooBig) {
		t.Errorf("got %v, want %v", err, ErrHelloTooBig)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("reading %d bytes of one-byte records allocated %d bytes", len(b), n)
	}
}
