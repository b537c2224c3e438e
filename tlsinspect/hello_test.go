package tlsinspect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/sluicegw/sluice/testing/fakenet"
)

// feed gives b to CheckHello in pieces of at most chunk bytes, as a loop
// does when they arrive, until it decides; a client that sent all of b
// undecided is refused when it ends.
func feed(t testing.TB, b []byte, chunk int, max int) (*Hello, error) {
	t.Helper()
	var got []byte
	for len(b) > 0 {
		n := min(chunk, len(b), max-len(got))
		got, b = append(got, b[:n]...), b[n:]
		hello, err := CheckHello(got, max)
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
