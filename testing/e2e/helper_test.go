package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/testing/fakenet"
)

// The test binary doubles as a client program run inside the agent
// namespace (as the command of `sluice run`), for what curl and openssl
// cannot do: ClientHellos split or edited on purpose, floods of stalled
// connections. `helper ARGS` in a script runs it.

const helperEnv = "SLUICE_E2E_HELPER"

func helperCmd() string {
	exe, _ := os.Executable()
	return helperEnv + "=1 " + exe
}

func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Println("result=usage")
		return 2
	}
	var err error
	switch args[0] {
	case "hello":
		err = helloClient(args[1:])
	case "slowloris":
		err = slowloris(args[1:])
	case "hangup":
		err = hangup(args[1:])
	case "hold":
		err = hold(args[1:])
	case "browser":
		err = browser(args[1:])
	default:
		err = fmt.Errorf("unknown helper %q", args[0])
	}
	if err != nil {
		fmt.Printf("result=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return 1
	}
	fmt.Println("result=ok")
	return 0
}

// firstFlight rewrites the client's first write (its ClientHello record)
// and sends it the way mode says; later writes pass unchanged.
type firstFlight struct {
	net.Conn
	mode string
	done bool
}

func (f *firstFlight) Write(p []byte) (int, error) {
	if f.done {
		return f.Conn.Write(p)
	}
	f.done = true
	out := p
	switch f.mode {
	case "records7":
		out = fakenet.Reframe(p, 7)
	case "ech", "esni":
		typ := uint16(0xfe0d)
		if f.mode == "esni" {
			typ = 0xffce
		}
		msg, err := fakenet.AddExtension(p, typ, append([]byte{0, 0, 1, 0, 1, 5, 0, 32}, make([]byte, 50)...))
		if err != nil {
			return 0, err
		}
		out = fakenet.Record(msg)
	case "nosni", "ipsni", "nulsni":
		name := map[string]string{"nosni": "", "ipsni": "198.18.2.10", "nulsni": "evil.test\x00allowed.test"}[f.mode]
		msg, err := fakenet.SetSNI(p, name)
		if err != nil {
			return 0, err
		}
		out = fakenet.Record(msg)
	case "huge":
		// 12 KB of padding in one-byte records: 80 KB on the wire, past
		// the proxy's cap although the message itself is legal.
		msg, err := fakenet.AddExtension(p, 21, make([]byte, 12000))
		if err != nil {
			return 0, err
		}
		out = fakenet.Reframe(fakenet.Record(msg), 1)
	}
	if f.mode == "segments1" {
		f.Conn.(*net.TCPConn).SetNoDelay(true)
		for i := range out {
			if _, err := f.Conn.Write(out[i : i+1]); err != nil {
				return 0, err
			}
			time.Sleep(50 * time.Microsecond) // one segment each (defeats autocorking)
		}
		return len(p), nil
	}
	if _, err := f.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// helloClient ADDR SNI MODE CAFILE: a TLS client whose hello is sent as
// MODE says, which then asks for / and reports the status.
func helloClient(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("hello ADDR SNI MODE CAFILE")
	}
	addr, sni, mode, caFile := args[0], args[1], args[2], args[3]
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(&firstFlight{Conn: c, mode: mode}, &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: mode != "plain" && mode != "segments1" && mode != "records7"})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", classify(err))
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return fmt.Errorf("response: %w", classify(err))
	}
	if !strings.Contains(line, " 200 ") {
		return fmt.Errorf("status %q", strings.TrimSpace(line))
	}
	return nil
}

// classify names how a connection failed: reset (refused fast) or timeout.
func classify(err error) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "reset"), strings.Contains(s, "EOF"), strings.Contains(s, "broken pipe"):
		return fmt.Errorf("reset")
	case strings.Contains(s, "timeout"):
		return fmt.Errorf("timeout")
	}
	return err
}

// hangup ADDR SNI HOW: sends a Go ClientHello for SNI, waits for the
// server's first byte, then ends the connection with a reset (HOW=reset),
// with a reset right behind 8 MiB of upload (HOW=bulkreset: the gateway
// still holds some of it then), or a FIN, reading on until the server
// closes too (HOW=fin), or waits
// for the gateway to cut it and reports how: "cut_by_reset",
// "cut_by_fin" or "timeout" (HOW=idle).
func hangup(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("hangup ADDR SNI reset|bulkreset|fin|idle")
	}
	hello, err := fakenet.CaptureHello(&tls.Config{ServerName: args[1], InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", args[0], 3*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", classify(err))
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Write(hello); err != nil {
		return fmt.Errorf("write: %w", classify(err))
	}
	if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
		return fmt.Errorf("first byte: %w", classify(err))
	}
	switch args[2] {
	case "reset":
		return tc.SetLinger(0) // the deferred Close sends the reset
	case "bulkreset":
		if _, err := tc.Write(make([]byte, 8<<20)); err != nil {
			return fmt.Errorf("upload: %w", classify(err))
		}
		return tc.SetLinger(0)
	case "idle":
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := tc.Read(make([]byte, 1))
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			return errors.New("cut_by_reset")
		case errors.Is(err, io.EOF):
			return errors.New("cut_by_fin")
		case err == nil:
			return errors.New("data")
		}
		return classify(err)
	}
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, tc); err != nil {
		return fmt.Errorf("after fin: %w", classify(err))
	}
	return nil
}

// slowloris ADDR N HOLD: N connections that each send three bytes of a
// hello and stall; reports how many the gateway cut within HOLD. They
// are opened 32 at a time: one after the other, on a loaded machine,
// the first reached the gateway's hello timeout before the last were
// open, and the cap on connections awaiting a hello was never reached.
func slowloris(args []string) error {
	n, _ := strconv.Atoi(args[1])
	hold, _ := time.ParseDuration(args[2])
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 32 {
		wg.Go(func() {
			for range next {
				c, err := net.DialTimeout("tcp", args[0], 2*time.Second)
				if err != nil {
					continue
				}
				c.Write([]byte{0x16, 3, 1})
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(hold)
	cut := 0
	for _, c := range conns {
		c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "timeout") {
			cut++
		}
		c.Close()
	}
	fmt.Printf("opened=%d\ncut=%d\n", len(conns), cut)
	return nil
}

// hold opens N connections to ADDR, one after the other, each sending a
// ClientHello for SNI and waiting for the first byte of the answer, and
// holds them all until it has tried every one. It prints how many were
// answered (held), reset, or neither within 3 s (other).
func hold(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("hold ADDR SNI N")
	}
	n, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	hello, err := fakenet.CaptureHello(&tls.Config{ServerName: args[1], InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	held, reset, other := 0, 0, 0
	for range n {
		c, err := net.DialTimeout("tcp", args[0], 3*time.Second)
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err = c.Write(hello); err == nil {
				_, err = io.ReadFull(c, make([]byte, 1))
			}
		}
		switch {
		case err == nil:
			held++
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			reset++ // at the connect, the write or the read, as it raced
		default:
			other++
		}
	}
	fmt.Printf("held=%d\nreset=%d\nother=%d\n", held, reset, other)
	return nil
}
