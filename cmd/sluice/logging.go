package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// logFormat picks how sluice logs: JSON when asked, a short human form
// when the log goes to a terminal, key=value otherwise (a file, a pipe,
// journald).
func logFormat(w io.Writer, asJSON bool) string {
	switch {
	case asJSON:
		return "json"
	case isTerminal(w):
		return "human"
	}
	return "text"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	// A character device on stderr is a terminal in practice (or
	// /dev/null, where the format does not matter).
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newHandler makes a handler of the format on w. keepAgent keeps the
// agent's name on human lines: serve's lines are of many agents.
func newHandler(w io.Writer, format string, level slog.Level, keepAgent bool) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "json":
		return slog.NewJSONHandler(w, opts)
	case "human":
		return &humanHandler{w: w, level: level, mu: &sync.Mutex{}, keepAgent: keepAgent}
	}
	return slog.NewTextHandler(w, opts)
}

// openLogFile opens --log-file for appending. The file stays root's
// (0644: the person reads it without sudo): the command runs as the user
// who ran sudo and must not be able to rewrite or empty the log. A
// symbolic link, a FIFO, a device or a file with other names (hard links)
// is refused, so that the path cannot aim root's writes elsewhere nor
// hold the start forever. The file's directory should not be one the
// agent can write, or the agent can remove the file (the log goes on
// into the removed file).
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o644)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("--log-file %s: a symbolic link; give the file's own path", path)
		}
		if errors.Is(err, syscall.ENXIO) { // a FIFO without a reader
			return nil, fmt.Errorf("--log-file %s: not a regular file", path)
		}
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
		f.Close()
		return nil, fmt.Errorf("--log-file %s: not a regular file", path)
	case st.Nlink != 1:
		f.Close()
		return nil, fmt.Errorf("--log-file %s: the file has %d names (hard links); give a file of its own", path, st.Nlink)
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		// A file the command's user may write (one of theirs, such as an
		// agent.log left in their directory) is a log the agent could
		// rewrite or empty.
		f.Close()
		return nil, fmt.Errorf("--log-file %s: owned by uid %d with mode %o, which the command could rewrite; give a new file, or one root owns that only root may write", path, st.Uid, st.Mode&0o777)
	}
	return f, nil
}

// humanHandler writes one short line per record for a person at a
// terminal: "14:02:11 refused dns name=other.test reason=name_not_allowed".
// The agent's name and the policy hash, the same on every line of a run,
// are left to the journal.
type humanHandler struct {
	keepAgent bool
	w         io.Writer
	level     slog.Level
	attrs     []slog.Attr
	mu        *sync.Mutex
}

func (h *humanHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *humanHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("sluice ")
	b.WriteString(r.Time.Format("15:04:05"))
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString(" ERROR")
	case r.Level >= slog.LevelWarn:
		b.WriteString(" WARN")
	case r.Level < slog.LevelInfo:
		b.WriteString(" debug")
	}
	b.WriteByte(' ')
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		switch {
		case a.Key == "policy", a.Key == "agent" && !h.keepAgent:
			return true
		}
		switch a.Key {
		case "layer":
			b.WriteByte(' ')
			b.WriteString(a.Value.String())
			return true
		}
		v := a.Value.Resolve().String()
		if v == "" {
			return true
		}
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteByte('=')
		v = quoteValue(v)
		b.WriteString(v)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *humanHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

// WithGroup flattens groups: sluice's log has none worth a prefix.
func (h *humanHandler) WithGroup(string) slog.Handler { return h }

// quoteValue quotes v when it has a space, a quote, '=' or any rune that
// is not printable, so that what an agent sends (a Host header, a name)
// cannot move the cursor, recolour or reverse the person's terminal: C1
// controls and bidirectional overrides are escaped too.
func quoteValue(v string) string {
	for _, r := range v {
		if r == ' ' || r == '"' || r == '=' || r == '\\' || !strconv.IsPrint(r) {
			return strconv.Quote(v)
		}
	}
	return v
}
