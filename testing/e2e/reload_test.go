package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the reload watcher that runs in the agent
// (SLUICE_E2E_WATCH=1 ready-file seconds): it holds three connections,
// uses each every 50 ms and prints, for each, "ok" or when (unix
// nanoseconds) and how it was cut.
const watchEnv = "SLUICE_E2E_WATCH"

func init() {
	if os.Getenv(watchEnv) == "" {
		return
	}
	if err := reloadWatch(os.Args[1:]); err != nil {
		fmt.Printf("watch_error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		os.Exit(1)
	}
	os.Exit(0)
}

// watched is one held connection and the step that uses it.
type watched struct {
	name string
	use  func() error
	cut  time.Time
	how  string
}

func reloadWatch(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: READY SECONDS")
	}
	secs, err := strconv.ParseFloat(args[1], 64)
	if err != nil {
		return err
	}
	revoked, err := keptAliveHTTPS(allowedAddr+":443", "allowed.test")
	if err != nil {
		return fmt.Errorf("revoked_tls: %w", err)
	}
	kept, err := keptAliveHTTPS(allowedAddr+":443", "www.allowed.test")
	if err != nil {
		return fmt.Errorf("kept_tls: %w", err)
	}
	fwd, err := net.DialTimeout("tcp", allowedAddr+":9443", 3*time.Second)
	if err != nil {
		return fmt.Errorf("revoked_fwd: %w", err)
	}
	fwd.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(fwd, make([]byte, 1)); err != nil { // the sink's greeting
		return fmt.Errorf("revoked_fwd: %w", err)
	}
	conns := []*watched{
		{name: "revoked_tls", use: revoked},
		{name: "kept_tls", use: kept},
		{name: "revoked_fwd", use: func() error {
			// The drain sink never answers: a write that meets a reset
			// fails at the next write or read.
			fwd.SetDeadline(time.Now().Add(time.Second))
			if _, err := fwd.Write([]byte("x")); err != nil {
				return err
			}
			fwd.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := fwd.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			if err == nil {
				return errors.New("the drain sink answered")
			}
			return err
		}},
	}
	for _, c := range conns {
		if err := c.use(); err != nil {
			return fmt.Errorf("%s before the reload: %w", c.name, err)
		}
	}
	if err := os.WriteFile(args[0], nil, 0o644); err != nil {
		return err
	}
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	for time.Now().Before(end) {
		for _, c := range conns {
			if c.how != "" {
				continue
			}
			if err := c.use(); err != nil {
				c.cut, c.how = time.Now(), howCut(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range conns {
		if c.how == "" {
			fmt.Printf("%s=ok\n", c.name)
		} else {
			fmt.Printf("%s=%s\n%s_at=%d\n", c.name, c.how, c.name, c.cut.UnixNano())
		}
	}
	return nil
}

func howCut(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNREFUSED):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "other:" + strings.ReplaceAll(err.Error(), " ", "_")
}

// keptAliveHTTPS opens a TLS connection for sni and returns a step that
// asks for / on it, keeping it alive.
func keptAliveHTTPS(addr, sni string) (func() error, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	r := bufio.NewReader(tc)
	return func() error {
		tc.SetDeadline(time.Now().Add(time.Second))
		if _, err := fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", sni); err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}, nil
}

// TestReloadOnSIGHUP: a policy changed under a running agent takes effect
// at once. A host added works; a host removed is refused to new
// connections and its open connections are cut within a second, the
// proxied (TLS) and the forwarded (TCP on a port the proxy does not
// take); a connection to a host that did not change keeps working; a
// broken file keeps the policy in force and says why.
func TestReloadOnSIGHUP(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	write := func(entries string) {
		t.Helper()
		if err := os.WriteFile(policyPath, []byte("version: 1\nallow:\n"+entries), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("  - host: allowed.test\n    ports: [443, 9443]\n  - host: www.allowed.test\n    ports: [443]\n")
	ready, goBroken, done := filepath.Join(dir, "ready"), filepath.Join(dir, "go-broken"), filepath.Join(dir, "done")
	exe, _ := os.Executable()
	c := w.curl()
	script := prelude + `
try added_before ` + c + ` https://chain.allowed.test/
try removed_before ` + c + ` https://allowed.test/
try kept_before ` + c + ` https://www.allowed.test/
` + watchEnv + `=1 GORACE=atexit_sleep_ms=0 ` + exe + ` ` + ready + ` 3
try added_after ` + c + ` https://chain.allowed.test/
try removed_after ` + c + ` https://allowed.test/
try removed_by_addr ` + c + ` --resolve allowed.test:443:` + allowedAddr + ` https://allowed.test/
try removed_fwd nc -z -w 2 ` + allowedAddr + ` 9443
touch ` + goBroken + `
while [ ! -e ` + done + ` ]; do sleep 0.05; done
try after_broken ` + c + ` https://chain.allowed.test/
`
	a := startAgent(t, w, []string{"--policy", policyPath}, script)
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	write("  - host: chain.allowed.test\n    ports: [443]\n  - host: www.allowed.test\n    ports: [443]\n")
	reloaded := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(goBroken); return err == nil })
	write("  - host: chain.allowed.test\n    ports: [99999]\n")
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(a.logged(), "policy.yaml:4:") })
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := a.wait(t)
	w.assertClean(t)

	expect(t, r, map[string]string{
		"added_before": "6", "removed_before": ok, "kept_before": ok, // the controls
		"revoked_tls": "reset", "revoked_fwd": "reset", "kept_tls": "ok",
		"added_after": ok, "removed_after": "6", "removed_by_addr": "refused", "removed_fwd": "1",
		"after_broken": ok,
	})
	v := r.values()
	for _, name := range []string{"revoked_tls", "revoked_fwd"} {
		at, err := strconv.ParseInt(v[name+"_at"], 10, 64)
		if err != nil {
			continue // reported above
		}
		// The watcher uses each connection every 50 ms.
		if d := time.Unix(0, at).Sub(reloaded); d > time.Second+100*time.Millisecond {
			t.Errorf("%s was cut %s after the reload, want within a second", name, d.Round(time.Millisecond))
		}
	}
	for _, want := range []string{"policy reloaded", "policy.yaml:4: allow[0].ports[0]", "keeping the policy in force"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// TestReloadPrivateTakenAway: an entry that loses private: true stops
// handing out its private address at once, and the address it opened is
// revoked, while the entry itself stays allowed.
func TestReloadPrivateTakenAway(t *testing.T) {
	w := newWorld(t)
	err := w.inet.Do(func() error {
		ln, err := net.Listen("tcp", "10.0.0.1:2222")
		if err != nil {
			return err
		}
		w.sink.ListenTCP(ln)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	write := func(private string) {
		t.Helper()
		entry := "version: 1\nallow:\n  - host: private.allowed.test\n    ports: [2222]\n" + private
		if err := os.WriteFile(policyPath, []byte(entry), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("    private: true\n")
	ready, goOn := filepath.Join(dir, "ready"), filepath.Join(dir, "go")
	script := prelude + `echo "before=$(dig +short @` + gwAddr + ` private.allowed.test A)"
try by_addr_before nc -z -w 2 10.0.0.1 2222
touch ` + ready + `
while [ ! -e ` + goOn + ` ]; do sleep 0.02; done
echo "after=$(dig +short @` + gwAddr + ` private.allowed.test A)"
try by_addr_after nc -z -w 2 10.0.0.1 2222
`
	a := startAgent(t, w, []string{"--policy", policyPath}, script)
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	write("")
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(a.logged(), "policy reloaded") })
	if err := os.WriteFile(goOn, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := a.wait(t)
	expect(t, r, map[string]string{"before": "10.0.0.1", "by_addr_before": "0", "after": "", "by_addr_after": "1"})
	w.assertClean(t)
}
