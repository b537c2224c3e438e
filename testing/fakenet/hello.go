package fakenet

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"
)

// This file crafts ClientHellos for tests of the TLS proxy: a real hello
// captured from Go's client, then re-framed or edited byte by byte (every
// enclosing length fixed up), as an attacker would.

// CaptureHello returns the first flight of a Go TLS client: one TLS record
// holding the ClientHello.
func CaptureHello(cfg *tls.Config) ([]byte, error) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, cfg).Handshake()
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(server, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
	if _, err := io.ReadFull(server, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// HandshakeOf returns the handshake message carried by a one-record hello.
func HandshakeOf(rec []byte) []byte { return rec[5:] }

// Reframe splits the handshake message of a one-record hello into records
// of at most size bytes each, as RFC 8446 §5.1 allows.
func Reframe(rec []byte, size int) []byte {
	msg := HandshakeOf(rec)
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, rec[1], rec[2], byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// Record wraps a handshake message into records of at most 16 KiB.
func Record(msg []byte) []byte {
	return Reframe(append([]byte{0x16, 3, 1, 0, 0}, msg...), 1<<14)
}

// extensions locates the extensions block of a handshake message.
func extensions(msg []byte) (start int, err error) {
	p := 4 + 2 + 32 // handshake header, legacy_version, random
	if len(msg) < p+1 {
		return 0, errors.New("short hello")
	}
	p += 1 + int(msg[p]) // session id
	if len(msg) < p+2 {
		return 0, errors.New("short hello")
	}
	p += 2 + int(binary.BigEndian.Uint16(msg[p:])) // cipher suites
	if len(msg) < p+1 {
		return 0, errors.New("short hello")
	}
	p += 1 + int(msg[p]) // compression methods
	if len(msg) < p+2 {
		return 0, errors.New("short hello")
	}
	return p, nil
}

// editExtensions rebuilds a handshake message with its extension list
// passed through edit, fixing every length.
func editExtensions(msg []byte, edit func(exts [][]byte) [][]byte) ([]byte, error) {
	p, err := extensions(msg)
	if err != nil {
		return nil, err
	}
	block := msg[p+2:]
	var exts [][]byte
	for len(block) >= 4 {
		n := 4 + int(binary.BigEndian.Uint16(block[2:4]))
		if n > len(block) {
			return nil, errors.New("bad extension length")
		}
		exts = append(exts, block[:n])
		block = block[n:]
	}
	exts = edit(exts)
	var body []byte
	for _, e := range exts {
		body = append(body, e...)
	}
	out := append([]byte{}, msg[:p]...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(body)))
	out = append(out, body...)
	n := len(out) - 4
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	return out, nil
}

func extension(typ uint16, data []byte) []byte {
	e := binary.BigEndian.AppendUint16(nil, typ)
	e = binary.BigEndian.AppendUint16(e, uint16(len(data)))
	return append(e, data...)
}

// AddExtension returns the hello's handshake message with one more
// extension, placed first (pre_shared_key, if any, must stay last).
func AddExtension(rec []byte, typ uint16, data []byte) ([]byte, error) {
	return editExtensions(HandshakeOf(rec), func(exts [][]byte) [][]byte {
		return append([][]byte{extension(typ, data)}, exts...)
	})
}

// SetSNI returns the hello's handshake message with its server_name
// extension carrying name (any bytes), or without one when name is "".
func SetSNI(rec []byte, name string) ([]byte, error) {
	return editExtensions(HandshakeOf(rec), func(exts [][]byte) [][]byte {
		var out [][]byte
		for _, e := range exts {
			if binary.BigEndian.Uint16(e) != 0 { // server_name
				out = append(out, e)
			}
		}
		if name == "" {
			return out
		}
		list := append([]byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
		list = append(list, name...)
		data := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
		return append([][]byte{extension(0, append(data, list...))}, out...)
	})
}
