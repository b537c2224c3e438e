package gateway

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// RaiseFileLimit lets the proxy hold many connections: each spliced one
// takes two sockets and, while data flows, two pipes. Where the hard limit
// cannot be raised, the soft one is raised to it; the proxy bounds its
// connections by what is left (tlsinspect.DefaultMaxConns).
func RaiseFileLimit(log *slog.Logger) {
	const want = 1 << 20
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	raised := unix.Rlimit{Cur: max(lim.Cur, want), Max: max(lim.Max, want)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
		log.Debug("cannot raise the open files limit", "err", err, "hard", lim.Max)
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}
