package tlsinspect

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/policy"
)

// TestSetPolicyCutsRevoked: a relayed connection whose name the new
// policy no longer allows is reset both ways and journaled as revoked;
// one whose name it still allows keeps relaying.
func TestSetPolicyCutsRevoked(t *testing.T) {
	px, journal := loopProxy(t, Config{})
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
	if n := px.SetPolicy(p); n != 1 {
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
	if ev := journal.Last(); ev.Reason != ReasonRevoked || ev.Name != "gone.test" || ev.PolicyHash != p.Hash() {
		t.Errorf("journal: %+v, want the revocation of gone.test under the new policy", ev)
	}
}
