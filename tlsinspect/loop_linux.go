package tlsinspect

import (
	"container/heap"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The TLS proxy runs as event loops, not as a goroutine per connection.
// A connection's life is a handful of system calls (accept, read the
// hello, connect, write it, then a read and a write per exchange); the
// goroutine model added a poller registration and removal per socket, an
// EAGAIN read before each wait and a goroutine stack or two per
// connection, idle or not: about 16 KiB per idle connection against
// about 2 KiB here, and 27 system calls per short connection against 18.
// A loop owns an epoll instance; its goroutine parks in Go's own poller
// on that instance, so that it is an ordinary goroutine that costs
// nothing while idle, and when woken it takes every ready event at once.

// loop is one event loop: its epoll instance, the connections registered
// in it and their deadlines. Everything but queue is touched only by the
// loop's goroutine.
type loop struct {
	px    *Proxy
	ep    *os.File        // the epoll instance
	poll  syscall.RawConn // ep, as Go's poller waits on it
	epfd  int
	wake  int // eventfd: work queued for the loop, or stop
	conns map[int32]*conn
	lns   map[int32]uint16 // listening sockets accepted from, and their ports
	timer deadlineHeap
	now   time.Time
	armed time.Time // the deadline set on ep
	// pausedUntil is when accepting resumes after running out of
	// descriptors (zero when not paused).
	pausedUntil time.Time
	warned      time.Time // when accepting last failed aloud
	buf         []byte    // a read before the flow is known to be bulk
	pipes       []*pipe   // empty pipes, kept for the next bulk burst
	serial      uint32
	stopping    bool
	// backlog: a listener had more queued than one batch took. It stays
	// ready in the loop's instance, but that signals Go's poller no new
	// edge, so the loop polls its instance again before it parks.
	backlog bool

	mu      sync.Mutex
	queue   []func()
	closing bool // no more work is taken
	done    chan struct{}
}

// maxFreePipes bounds the pipes a loop keeps for reuse.
const maxFreePipes = 64

func newLoop(px *Proxy) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile hands the instance to Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	l := &loop{px: px, epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"),
		conns: map[int32]*conn{}, lns: map[int32]uint16{}, buf: make([]byte, readChunk), done: make(chan struct{})}
	// Without Go's poller behind it, the instance would take no deadline:
	// hello, dial and idle timeouts would never fire. Refuse to run so.
	if err := l.ep.SetReadDeadline(time.Time{}); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("tlsinspect: epoll instance not pollable: %w", err)
	}
	if l.poll, err = l.ep.SyscallConn(); err != nil {
		l.ep.Close()
		return nil, err
	}
	if l.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.ep.Close()
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := l.add(l.wake, unix.EPOLLIN, 0); err != nil {
		unix.Close(l.wake)
		l.ep.Close()
		return nil, err
	}
	go l.run()
	return l, nil
}

func (l *loop) add(fd int, events uint32, serial uint32) error {
	return l.ctl(unix.EPOLL_CTL_ADD, fd, events, serial)
}

// ctl adds fd to the loop's instance or changes its registration (op),
// for events; serial tells its connection from an earlier one that had
// the same descriptor.
func (l *loop) ctl(op, fd int, events uint32, serial uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(serial)}
	return os.NewSyscallError("epoll_ctl", rawEpollCtl(l.epfd, op, fd, &ev))
}

// do runs f on the loop's goroutine. It reports false, without running
// f, when the loop is stopping.
func (l *loop) do(f func()) bool {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, f)
	// Under the lock: once closing is set, the eventfd may be closed and
	// its number reused.
	one := [8]byte{1}
	_, _ = rawWrite(l.wake, one[:]) // fails only when the counter is full: already woken
	l.mu.Unlock()
	return true
}

// call runs f on the loop and waits for it (for setup and tests).
func (l *loop) call(f func()) bool {
	ran := make(chan struct{})
	if !l.do(func() { f(); close(ran) }) {
		return false
	}
	select {
	case <-ran:
		return true
	case <-l.done:
		return false
	}
}

// stop cuts every connection and ends the loop; it returns once the
// loop's goroutine has.
func (l *loop) stop() {
	l.do(func() { l.stopping = true })
	<-l.done
}

func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	l.now = time.Now()
	for !l.stopping {
		if l.arm(); l.stopping {
			break
		}
		err := l.poll.Read(func(uintptr) bool {
			for {
				n, err := rawEpollPoll(l.epfd, events)
				if err != nil && !errors.Is(err, unix.EINTR) {
					// Only a bug of the loop's own (a closed or invalid
					// instance) fails this; a proxy without its loop would
					// leave new connections hanging unaccepted, so the
					// gateway ends instead, which cuts the agent off.
					l.fail(fmt.Errorf("tlsinspect: event loop: %w", err))
					return true
				}
				if n <= 0 || l.stopping {
					return l.stopping
				}
				l.now, l.backlog = time.Now(), false
				for _, e := range events[:n] {
					l.dispatch(e)
				}
				l.expire()
				if l.stopping {
					return true
				}
				// Fewer events than room: the instance was drained, and
				// anything newer wakes Go's poller again.
				if n < len(events) && !l.backlog {
					l.arm()
					return false
				}
			}
		})
		l.now = time.Now()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.fail(fmt.Errorf("tlsinspect: event loop: %w", err)) // as above
		}
		l.expire()
	}
	l.shutdown()
}

// fail stops the loop (cutting its connections) and reports err to the
// proxy's Run, whose owner must end the gateway: an impossible state, not
// a decision.
func (l *loop) fail(err error) {
	l.stopping = true
	select {
	case l.px.failed <- err:
	default: // one failure is enough
	}
}

// arm sets the loop's wake-up for its earliest deadline.
func (l *loop) arm() {
	var next time.Time
	if len(l.timer) > 0 {
		next = l.timer[0].deadline
	}
	if !l.pausedUntil.IsZero() && (next.IsZero() || l.pausedUntil.Before(next)) {
		next = l.pausedUntil
	}
	if !next.Equal(l.armed) {
		l.armed = next
		if err := l.ep.SetReadDeadline(next); err != nil {
			// newLoop made sure the instance takes deadlines, so only a
			// closed one fails here; without its wake-up no hello, dial or
			// idle timeout would fire, so the gateway ends (as in run).
			l.fail(fmt.Errorf("tlsinspect: event loop deadline: %w", err))
		}
	}
}

func (l *loop) dispatch(e unix.EpollEvent) {
	fd := e.Fd
	switch {
	case int(fd) == l.wake:
		var b [8]byte
		_, _ = rawRead(l.wake, b[:])
		l.mu.Lock()
		q := l.queue
		l.queue = nil
		l.mu.Unlock()
		for _, f := range q {
			f()
		}
	default:
		if port, ok := l.lns[fd]; ok {
			l.accept(int(fd), port)
		} else if c := l.conns[fd]; c != nil && c.serial == uint32(e.Pad) {
			c.event(int(fd), e.Events)
		}
	}
}

// listen starts accepting TLS connections from the listening socket fd,
// which the proxy owns. One loop accepts from it and hands the
// connections out to all loops in turn: nested in Go's poller, epoll
// cannot wake just one of several loops waiting on a listener
// (EPOLLEXCLUSIVE applies only to threads blocked in epoll_wait), and
// every new connection would wake them all.
func (l *loop) listen(fd int) error {
	local, ok := localAddr(fd)
	if !ok || local.Port() == 0 {
		return errors.New("tlsinspect: the listener has no port")
	}
	var err error
	if !l.call(func() {
		if err = l.add(fd, unix.EPOLLIN, 0); err == nil {
			l.lns[int32(fd)] = local.Port()
		}
	}) {
		return net.ErrClosed
	}
	return err
}

// acceptBatch bounds the connections taken from the listener per
// readiness: enough to keep its queue short under a burst, few enough
// that the established connections' events are not starved by it. The
// listener is level-triggered, so the loop's next wait reports it again
// while more are queued (see loop.backlog).
const acceptBatch = 16

func (l *loop) accept(lnfd int, port uint16) {
	for range acceptBatch {
		fd, errno := rawAccept(lnfd)
		switch errno {
		case 0:
			l.handOut(fd, port)
			continue
		case unix.ECONNABORTED, unix.EINTR, unix.EPERM, unix.EPROTO:
			continue // that connection is gone (or a netfilter rule refused it)
		case unix.EAGAIN:
		default:
			// Out of descriptors or memory: stop accepting for a moment
			// and let connections close, instead of spinning on a
			// listener that stays ready.
			if l.now.Sub(l.warned) >= time.Second { // at most once a second
				l.warned = l.now
				l.px.cfg.Log.Warn("proxy accept", "err", errno)
			}
			for fd := range l.lns {
				_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(fd), &unix.EpollEvent{})
			}
			l.pausedUntil = l.now.Add(10 * time.Millisecond)
			l.px.acceptPauses.Add(1)
		}
		return
	}
	l.backlog = true
}

// handOut opens an accepted connection, from the listener on port, on
// the next loop in turn.
func (l *loop) handOut(fd int, port uint16) {
	loops := l.px.loops
	next := loops[int(l.px.next.Add(1))%len(loops)]
	if next == l || !next.do(func() { next.open(fd, port) }) {
		l.open(fd, port)
	}
}

// expire acts on every deadline that has passed, and resumes accepting
// after a pause.
func (l *loop) expire() {
	if !l.pausedUntil.IsZero() && !l.now.Before(l.pausedUntil) {
		l.pausedUntil = time.Time{}
		for fd := range l.lns {
			if err := l.add(int(fd), unix.EPOLLIN, 0); err != nil {
				l.px.cfg.Log.Error("proxy accept: resuming", "err", err)
			}
		}
	}
	for len(l.timer) > 0 && !l.now.Before(l.timer[0].deadline) {
		l.timer[0].expired()
	}
}

// shutdown cuts every connection and releases the loop's descriptors
// (the listening sockets are the proxy's). Work queued before it runs
// first, so that what it holds (a connection handed over) is cut too.
func (l *loop) shutdown() {
	l.mu.Lock()
	l.closing = true
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
	for _, c := range l.conns {
		if c.phase != phaseClosed {
			c.cut()
		}
	}
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	rawClose(l.wake)
	l.ep.Close()
	close(l.done)
}

// deadlineHeap orders connections by their next deadline.
type deadlineHeap []*conn

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot, h[j].slot = i, j
}
func (h *deadlineHeap) Push(x any) {
	c := x.(*conn)
	c.slot = len(*h)
	*h = append(*h, c)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.slot = -1
	return c
}

// setDeadline (re)schedules c; a zero time removes it.
func (l *loop) setDeadline(c *conn, t time.Time) {
	c.deadline = t
	switch {
	case t.IsZero() && c.slot >= 0:
		heap.Remove(&l.timer, c.slot)
	case t.IsZero():
	case c.slot >= 0:
		heap.Fix(&l.timer, c.slot)
	default:
		heap.Push(&l.timer, c)
	}
}
