package tlsinspect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// TestSetPolicyCutsRevoked: a relayed connection whose name the new
// policy no longer allows is reset both ways and journaled as revoked;
// one whose name it still allows keeps relaying.
func TestSetPolicyCutsRevoked(t *testing.T) {
	px, rec := loopProxy(t, Config{})
	goneClient, goneServer := relayed(t, px)
	keptClient, keptServer := relayed(t, px)
	ping(t, goneClient, goneServer)
	ping(t, keptClient, keptServer)
	names := map[uint16]string{
		uint16(goneServer.LocalAddr().(*net.TCPAddr).Port): "gone.test",
		uint16(keptServer.LocalAddr().(*net.TCPAddr).Port): "kept.test",
	}
	onLoops(px, func(l *loop) {
		for _, c := range l.conns {
			c.name = names[c.dst.Port()]
		}
	})
	e, err := policy.ParseAllowFlag(fmt.Sprintf("kept.test:%d", keptServer.LocalAddr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New([]policy.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	if n := px.SetPolicy(p, nil); n != 1 {
		t.Errorf("SetPolicy cut %d connections, want 1", n)
	}
	for _, c := range []*net.TCPConn{goneClient, goneServer} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s of the revoked connection: read %v, want a reset", c.LocalAddr(), err)
		}
	}
	ping(t, keptClient, keptServer)
	ping(t, keptServer, keptClient)
	if ev := rec.Last(); ev.Reason != "revoked" || ev.Name != "gone.test" || ev.PolicyHash != p.Hash() {
		t.Errorf("journal: %+v, want the revocation of gone.test under the new policy", ev)
	}
}

// TestLoopFailureIsFatal: a loop that can no longer poll stops, cuts its
// connections and tells the proxy's owner, instead of panicking.
func TestLoopFailureIsFatal(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	fatal := make(chan error, 1)
	go func() { fatal <- px.Run(context.Background()) }()
	client, _ := relayed(t, px)
	l := px.loops[0]
	if len(px.loops) > 1 {
		// The relayed connection may be on any loop: break the one it is on.
		onLoops(px, func(x *loop) {
			if len(x.conns) > 0 {
				l = x
			}
		})
	}
	// The next poll fails with EBADF, once there is something to poll for.
	l.call(func() { l.epfd = -1 })
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fatal:
		if err == nil {
			t.Error("Run ended with no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a loop that cannot poll did not report it")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection of the failed loop: read %v, want a reset", err)
	}
}

// TestDecisionOvertakenByChange: a connection decided under a policy that
// was replaced before it reached its loop is refused there when the new
// policy does not allow it.
func TestDecisionOvertakenByChange(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	old := px.policy.Load()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	e, err := policy.ParseAllowFlag(fmt.Sprintf("198.51.100.0/24:%d", dst.Port()))
	if err != nil {
		t.Fatal(err)
	}
	e.Prefix, e.Private = netip.MustParsePrefix("127.0.0.1/32"), true // loopback stands in for a destination
	allowing, err := policy.New([]policy.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		now    *policy.Policy
		refuse bool
	}{{"the new policy allows it too", allowing, false}, {"the new policy does not", old, true}} {
		px.SetPolicy(tc.now, nil)
		client, proxyIn := tcpPair(t)
		fd, err := dupFd(proxyIn)
		if err != nil {
			t.Fatal(err)
		}
		proxyIn.Close()
		px.conns.Add(1)
		ev := journal.Event{Layer: journal.LayerTLS, Dst: dst, PolicyHash: "sha256:decided-before"}
		l, err := px.anyLoop()
		if err != nil {
			t.Fatal(err)
		}
		l.do(func() { l.adopt(fd, dst, nil, ev) })
		if !tc.refuse {
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			s, err := ln.Accept()
			if err != nil {
				t.Fatalf("%s: not relayed to the destination: %v", tc.name, err)
			}
			s.Close()
			continue
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: read %v, want a reset", tc.name, err)
		}
	}
}

// TestStillAllowedWhenRulesCome: once a host has git or http rules, a
// connection spliced or proxied as plain HTTP before is no longer allowed
// (its requests would go unchecked), while an intercepted one is (its
// next request is decided under the rules). Without rules both stay.
func TestStillAllowedWhenRulesCome(t *testing.T) {
	parse := func(y string) *policy.Policy {
		t.Helper()
		entries, err := policy.ParseFile("p.yaml", []byte("version: 1\nallow:\n  - host: git.test\n"+y))
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.New(entries)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain, ruled := parse(""), parse("    git: {fetch: ['*']}\n")
	dst := netip.MustParseAddrPort("198.18.2.20:443")
	for _, tc := range []struct {
		p           *policy.Policy
		intercepted bool
		want        bool
	}{{plain, false, true}, {plain, true, true}, {ruled, false, false}, {ruled, true, true}} {
		if got := stillAllowed(tc.p, nil, "git.test", dst, tc.intercepted); got != tc.want {
			t.Errorf("rules %t, intercepted %t: still allowed %t, want %t", tc.p == ruled, tc.intercepted, got, tc.want)
		}
	}
}
