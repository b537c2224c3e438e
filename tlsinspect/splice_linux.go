package tlsinspect

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Go's own io.Copy between TCP connections uses splice(2) too, but holds a
// pipe (two descriptors) for as long as the copy lasts, idle or not: a
// proxy with thousands of idle connections would spend most of its
// descriptors on empty pipes. pump takes a pipe only while bulk data is in
// flight, and reads small exchanges into a pooled buffer instead.

// spliceChunk is how much one splice call moves at most, and the capacity
// asked of each pipe (the default is 64 KiB; the kernel allows up to
// fs.pipe-max-size, 1 MiB by default, and falls back silently).
const spliceChunk = 256 << 10

type pipe struct{ r, w int }

// pipes is a bounded pool: a pipe left over beyond it is closed, never
// dropped (which would leak its descriptors).
var pipes = make(chan *pipe, 256)

func getPipe() (*pipe, error) {
	select {
	case p := <-pipes:
		return p, nil
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, spliceChunk)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe returns an empty pipe to the pool; a pipe that may still hold
// data is closed instead.
func putPipe(p *pipe, empty bool) {
	if empty {
		select {
		case pipes <- p:
			return
		default:
		}
	}
	unix.Close(p.r)
	unix.Close(p.w)
}

// readChunk is the buffer a pump reads into before it knows whether a
// flow is bulk: a read that fills it switches the pump to splice(2) until
// the socket is empty again. Small exchanges (a TLS handshake, a request
// and its answer) then cost one read and one write, as in any proxy.
const readChunk = 16 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// idleTimer remembers when either direction of a connection last moved
// data; a connection idle both ways for longer than idle is closed.
type idleTimer struct {
	idle time.Duration
	last atomic.Int64 // UnixNano
}

func newIdleTimer(idle time.Duration) *idleTimer {
	if idle <= 0 {
		return nil
	}
	t := &idleTimer{idle: idle}
	t.touch()
	return t
}

func (t *idleTimer) touch() {
	if t != nil {
		t.last.Store(time.Now().UnixNano())
	}
}

func (t *idleTimer) deadline() time.Time {
	if t == nil {
		return time.Time{}
	}
	return time.Unix(0, t.last.Load()).Add(t.idle)
}

// errIdle ends a connection idle both ways for longer than its timeout.
var errIdle = errors.New("idle timeout")

// waitErr turns a wait that hit the read deadline into errIdle when the
// whole connection was idle, and into nil (wait again) when the other
// direction moved data meanwhile.
func (t *idleTimer) waitErr(err error) error {
	if t == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if time.Now().Before(t.deadline()) {
		return nil
	}
	return errIdle
}

// deadlines holds one direction's idle deadline: on src's reads and on
// dst's writes (a peer that stops reading must not hold a connection
// forever). It is armed once, not at every transfer: when it fires on a
// connection that moved data meanwhile, retry re-arms it and the caller
// waits again, with nothing lost.
type deadlines struct {
	src, dst stream
	idle     *idleTimer
}

func (d deadlines) arm() {
	if d.idle == nil {
		return
	}
	t := d.idle.deadline()
	_ = d.src.SetReadDeadline(t)
	_ = d.dst.SetWriteDeadline(t)
}

// retry returns nil when err is a deadline that fired on a connection
// that is not idle (after re-arming it), and err otherwise.
func (d deadlines) retry(err error) error {
	if err = d.idle.waitErr(err); err != nil {
		return err
	}
	d.arm()
	return nil
}

// pump copies src to dst until src's EOF (returning nil) or an error. An
// idle pump holds neither a buffer nor a pipe: both are taken only once
// data has arrived. A flow that fills the buffer is bulk: it is spliced,
// and stays spliced while its bursts stay large.
func pump(dst, src stream, idle *idleTimer) error {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	dl := deadlines{src: src, dst: dst, idle: idle}
	dl.arm()
	bulk := false
	for {
		if bulk {
			if err := waitReadable(srcRaw); err != nil {
				if err = dl.retry(err); err != nil {
					return err
				}
				continue
			}
		} else {
			n, full, err := copyRead(dstRaw, srcRaw, dl.retry)
			if err != nil {
				return err
			}
			if n == 0 { // the peer finished sending
				return nil
			}
			idle.touch()
			if !full {
				continue
			}
		}
		p, err := getPipe()
		if err != nil {
			return err
		}
		moved, eof, err := drainAndPump(srcRaw, dstRaw, p, dl.retry)
		putPipe(p, err == nil)
		if err != nil || eof {
			return err
		}
		if moved > 0 {
			idle.touch()
		}
		bulk = moved >= readChunk
	}
}

// copyRead waits for data on src, holding nothing, and copies what one
// read returns to dst, whole. full says the read filled the buffer. Its
// errors are final: deadlines on a connection that is not idle are
// retried here.
func copyRead(dstRaw, srcRaw rawConn, retry func(error) error) (n int, full bool, err error) {
	var buf *[]byte // taken only once data is there: a waiting pump holds none
	for {
		var rerr error
		err = srcRaw.Read(func(fd uintptr) bool {
			buf = readBufs.Get().(*[]byte)
			n, rerr = unix.Read(int(fd), *buf)
			if errors.Is(rerr, unix.EAGAIN) {
				readBufs.Put(buf)
				buf = nil
				return false // wait for data
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err == nil {
			break
		}
		if buf != nil {
			readBufs.Put(buf)
			buf = nil
		}
		if err = retry(err); err != nil {
			return 0, false, err
		}
	}
	defer readBufs.Put(buf)
	if n <= 0 {
		return 0, false, nil
	}
	return n, n == readChunk, writeAll(dstRaw, (*buf)[:n], retry)
}

// waitReadable waits until src has data or has ended, holding nothing.
func waitReadable(srcRaw rawConn) error {
	var peek [1]byte
	var perr error
	err := srcRaw.Read(func(fd uintptr) bool {
		_, _, perr = unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(perr, unix.EAGAIN)
	})
	if err == nil {
		err = perr
	}
	return err
}

// writeAll writes b whole to dst; a write deadline that fires on a
// connection that is not idle is re-armed by retry and the write goes on.
func writeAll(dstRaw rawConn, b []byte, retry func(error) error) error {
	for len(b) > 0 {
		var n int
		var werr error
		err := dstRaw.Write(func(fd uintptr) bool {
			n, werr = unix.Write(int(fd), b)
			return !errors.Is(werr, unix.EAGAIN)
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			if err = retry(err); err != nil {
				return err
			}
			continue
		}
		b = b[n:]
	}
	return nil
}

// drainAndPump moves what src has, chunk by chunk, until src would block
// (eof false) or ends (eof true), and says how much it moved.
func drainAndPump(srcRaw, dstRaw rawConn, p *pipe, retry func(error) error) (moved int64, eof bool, err error) {
	for {
		var n int64
		var serr error
		rerr := srcRaw.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return true // never wait here: an empty socket means go back to peeking
		})
		if rerr != nil { // only a deadline, before anything was read
			if rerr = retry(rerr); rerr != nil {
				return moved, false, rerr
			}
			continue
		}
		switch {
		case errors.Is(serr, unix.EAGAIN):
			return moved, false, nil
		case serr != nil:
			return moved, false, serr
		case n == 0:
			return moved, true, nil
		}
		if err := pumpOut(dstRaw, p, n, retry); err != nil {
			return moved, false, err
		}
		moved += n
	}
}

// pumpOut moves n bytes from the pipe to dst, waiting while dst is full
// (a write deadline on a connection that is not idle is re-armed by retry).
func pumpOut(dstRaw rawConn, p *pipe, n int64, retry func(error) error) error {
	for n > 0 {
		var m int64
		var serr error
		werr := dstRaw.Write(func(fd uintptr) bool {
			m, serr = unix.Splice(p.r, nil, int(fd), nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return !errors.Is(serr, unix.EAGAIN)
		})
		if werr != nil {
			if werr = retry(werr); werr != nil {
				return werr
			}
			continue
		}
		if serr != nil {
			return serr
		}
		if m == 0 {
			return io.ErrShortWrite
		}
		n -= m
	}
	return nil
}

// rawConn is what pump needs of syscall.RawConn.
type rawConn interface {
	Read(func(fd uintptr) bool) error
	Write(func(fd uintptr) bool) error
}
