package tlsinspect

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/tlsinspect/mitm"
	"golang.org/x/sys/unix"
)

// intercept hands a connection whose SNI names a host with rules over to
// the interceptor, on a goroutine of its own: it leaves the loop, and is
// tracked like an HTTP connection, so that a policy change that no longer
// allows its name cuts it, and Close ends it. replay is the ClientHello.
func (c *conn) intercept(replay []byte) {
	l, px := c.l, c.l.px
	if px.cfg.Interceptor == nil {
		c.ev.Detail = "no interceptor for a host with rules"
		c.refuse(journal.ReasonDialFailed)
		return
	}
	// Out of the loop: no more events, no deadline, no count here (the
	// goroutine below holds the connection's place in px.conns).
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.cfd, nil)
	delete(l.conns, int32(c.cfd))
	l.setDeadline(c, time.Time{})
	c.phase = phaseClosed
	f := os.NewFile(uintptr(c.cfd), "agent")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		px.conns.Add(-1)
		px.record(c.ev, journal.ReasonTooManyConns)
		return
	}
	tc := nc.(*net.TCPConn)
	ev, dst, name := c.ev, c.dst, c.ev.Name
	if !px.track(tc) {
		px.conns.Add(-1)
		return
	}
	if c.reported {
		ev.Kind = journal.WouldRefuse // journaled as such: nothing to revoke
	}
	ok, reported := px.noteHTTP(tc, ev, true)
	if !ok { // a policy change came between decision and here
		px.untrack(tc)
		px.conns.Add(-1)
		px.refuse(tc, ev, journal.ReasonRevoked)
		return
	}
	if !reported {
		px.allowed(ev)
	}
	go func() {
		defer px.conns.Add(-1)
		defer px.untrack(tc)
		defer tc.Close()
		px.cfg.Interceptor.Serve(mitm.Conn{
			Client: tc, Replay: replay, Name: name, Dst: dst, Event: ev,
			Dial: func(ctx context.Context) (net.Conn, error) {
				return px.dialer.DialContext(ctx, "tcp", dst.String())
			},
		})
	}()
}
