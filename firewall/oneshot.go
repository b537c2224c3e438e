package firewall

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// The package's one-off transactions (the forwarding guard, a dead run's
// table) share a lasting nftables connection in the process's own network
// namespace. A connection per transaction pays for closing its netlink
// socket, which costs the kernel about 10 ms on a small VM, against about
// 0.1 ms for the transaction itself; sluice serve makes a few for every
// agent it starts, under the records' lock. In any other namespace (a
// thread that entered one) a connection is made and closed each time:
// a lasting one would keep that namespace, and its links, alive.
var oneShot struct {
	mu   sync.Mutex // one transaction at a time on conn
	home uint64     // the inode of the process's network namespace
	conn *nftables.Conn
}

func init() {
	oneShot.home = netnsInode()
}

// netnsInode is the inode of the calling thread's network namespace, 0
// when unknown.
func netnsInode() uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/net", &st) != nil {
		return 0
	}
	return st.Ino
}

// withConn runs f, which builds and flushes transactions on c, with a
// connection to the calling thread's network namespace.
func withConn(f func(c *nftables.Conn) error) error {
	if ino := netnsInode(); ino == 0 || ino != oneShot.home {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return fmt.Errorf("firewall: open nftables connection: %w", err)
		}
		defer c.CloseLasting()
		return f(c)
	}
	oneShot.mu.Lock()
	defer oneShot.mu.Unlock()
	if oneShot.conn == nil {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return fmt.Errorf("firewall: open nftables connection: %w", err)
		}
		oneShot.conn = c
	}
	err := f(oneShot.conn)
	if err != nil {
		// A transaction that failed may have left messages queued on the
		// connection (nftables sends them with the next Flush) or replies
		// unread on its socket: the next one gets a connection of its own.
		_ = oneShot.conn.CloseLasting()
		oneShot.conn = nil
	}
	return err
}
