package tlsinspect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sluicegw/sluice/testing/fakenet"
)

// feed writes b to one end of a pipe, in writes of at most chunk bytes,
// and runs ReadHello on the other.
func feed(t testing.TB, b []byte, chunk int, max int) (*Hello, error) {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		for len(b) > 0 {
			n := min(chunk, len(b))
			if _, err := client.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		time.Sleep(time.Second) // hold the connection open like a waiting client
	}()
	return ReadHello(server, time.Now().Add(2*time.Second), max)
}

func goHello(t testing.TB, sni string) []byte {
	t.Helper()
	h, err := fakenet.CaptureHello(&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReadHelloFraming(t *testing.T) {
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

func TestReadHelloRefusals(t *testing.T) {
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

func TestReadHelloTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go client.Write([]byte{0x16, 3, 1}) // three bytes, then nothing
	_, err := ReadHello(server, time.Now().Add(100*time.Millisecond), DefaultMaxHello)
	if !errors.Is(err, ErrHelloTimeout) {
		t.Fatalf("err %v, want %v", err, ErrHelloTimeout)
	}
}

func TestReadHelloSNIVariants(t *testing.T) {
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

// FuzzReadHello: the hello is the agent's bytes. Whatever they are, the
// reader stops, and what it returns is exactly a prefix of what was sent.
func FuzzReadHello(f *testing.F) {
	h := goHello(f, "allowed.test")
	f.Add(h)
	f.Add(fakenet.Reframe(h, 7))
	ech, _ := fakenet.AddExtension(h, extECH, []byte{1})
	f.Add(fakenet.Record(ech))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		client, server := net.Pipe()
		go func() {
			client.Write(b)
			client.Close() // EOF: the reader must stop at once, whatever it got
		}()
		got, err := ReadHello(server, time.Now().Add(2*time.Second), 4096)
		server.Close()
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, got.Raw) {
			t.Fatalf("recorded bytes are not what was sent")
		}
	})
}

// memConn is a connection whose client has sent b and waits.
type memConn struct {
	net.Conn
	r bytes.Reader
}

func (c *memConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *memConn) SetReadDeadline(time.Time) error { return nil }

// BenchmarkReadHello is the proxy's own cost of a ClientHello as Go's TLS
// client sends it (X25519MLKEM768 key share included), without the socket.
func BenchmarkReadHello(b *testing.B) {
	hello := goHello(b, "allowed.bench.test")
	b.ReportAllocs()
	for b.Loop() {
		c := &memConn{}
		c.r.Reset(hello)
		if _, err := ReadHello(c, time.Time{}, DefaultMaxHello); err != nil {
			b.Fatal(err)
		}
	}
}
