package tlsinspect

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return tcpPairOn(t, ln)
}

// tcpPairOn returns the client and the accepted end of a connection to ln.
func tcpPairOn(t *testing.T, ln net.Listener) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestSpliceBothWays: bytes arrive intact both ways, each direction's end
// reaches the other side as EOF (half-close), and the proxy's side is
// torn down once both are done.
func TestSpliceBothWays(t *testing.T) {
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	done := make(chan struct{})
	go func() { splice(proxyIn, proxyOut, 0); close(done) }()

	up := make([]byte, 8<<20)
	down := make([]byte, 3<<20)
	rand.Read(up)
	rand.Read(down)
	go func() {
		client.Write(up)
		client.CloseWrite()
	}()
	gotUp, err := io.ReadAll(server) // ends at the client's half-close
	if err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("upstream got %d bytes (err %v), want %d intact", len(gotUp), err, len(up))
	}
	server.Write(down)
	server.CloseWrite()
	gotDown, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("client got %d bytes (err %v), want %d intact", len(gotDown), err, len(down))
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("splice did not finish after both sides ended")
	}
}

// TestSpliceResetTearsDown: a reset on one side reaches the other as a
// reset, not as the end of a complete stream.
func TestSpliceResetTearsDown(t *testing.T) {
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	done := make(chan struct{})
	go func() { splice(proxyIn, proxyOut, 0); close(done) }()
	client.Write([]byte("partial upload"))
	client.SetLinger(0)
	client.Close()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read %q then %v, want a reset", got, err)
	}
	<-done
}

// TestIdlePumpHoldsNoPipe: after a bulk transfer, a pump waiting for data
// has returned its pipe.
func TestIdlePumpHoldsNoPipe(t *testing.T) {
	for len(pipes) > 0 { // start from an empty pool
		putPipe(<-pipes, false)
	}
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	go splice(proxyIn, proxyOut, 0)
	go client.Write(make([]byte, 1<<20)) // fills the read buffer: the pump splices
	if _, err := io.ReadFull(server, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	// Both pumps are idle now; their pipes are back in the pool.
	deadline := time.Now().Add(2 * time.Second)
	for len(pipes) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(pipes) == 0 {
		t.Error("no pipe returned to the pool by an idle pump")
	}
}

// TestSpliceIdleTimeout: traffic in one direction keeps the connection
// open however long the other is silent; silence both ways closes it.
func TestSpliceIdleTimeout(t *testing.T) {
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	done := make(chan struct{})
	go func() { splice(proxyIn, proxyOut, 300*time.Millisecond); close(done) }()
	buf := make([]byte, 1)
	for range 10 { // 1 s of one-way traffic, every 100 ms
		if _, err := client.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, buf); err != nil {
			t.Fatalf("one-way traffic was cut: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection silent both ways was not closed")
	}
	server.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := server.Read(buf); err == nil {
		t.Error("the server side stayed open after the idle timeout")
	}
}

// TestSpliceStalledReaderLosesNothing: a side that stops reading for
// longer than the idle timeout, while the other direction keeps the
// connection alive, gets every byte once it reads again.
func TestSpliceStalledReaderLosesNothing(t *testing.T) {
	client, proxyIn := tcpPair(t)
	proxyOut, server := tcpPair(t)
	go splice(proxyIn, proxyOut, 200*time.Millisecond)
	up := make([]byte, 16<<20) // more than the socket buffers hold: writes stall
	rand.Read(up)
	go func() {
		client.Write(up)
		client.CloseWrite()
	}()
	stop := make(chan struct{})
	go func() { // the other direction moves a byte every 50 ms meanwhile
		buf := make([]byte, 1)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			server.Write([]byte{'k'})
			client.Read(buf)
		}
	}()
	time.Sleep(time.Second) // the server reads nothing for five idle timeouts
	got, err := io.ReadAll(server)
	close(stop)
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("server got %d bytes (err %v), want %d intact", len(got), err, len(up))
	}
}

// TestSpliceToUpstream: the same through an upstream made by dialSend, as
// the proxy uses it.
func TestSpliceToUpstream(t *testing.T) {
	client, proxyIn := tcpPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hello := []byte("replayed hello")
	up, err := dialSend(ln.Addr().(*net.TCPAddr).AddrPort(), hello, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go splice(proxyIn, up, time.Minute)
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	go func() {
		client.Write(payload)
		client.CloseWrite()
	}()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, append(hello, payload...)) {
		t.Fatalf("server got %d bytes (err %v), want %d intact", len(got), err, len(hello)+len(payload))
	}
	server.Write([]byte("answer"))
	server.(*net.TCPConn).CloseWrite()
	back, err := io.ReadAll(client)
	if err != nil || string(back) != "answer" {
		t.Fatalf("client got %q (err %v)", back, err)
	}
}
