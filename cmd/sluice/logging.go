package main

import (
	"context"
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

func newHandler(w io.Writer, format string, level slog.Level) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "json":
		return slog.NewJSONHandler(w, opts)
	case "human":
		return &humanHandler{w: w, level: level, mu: &sync.Mutex{}}
	}
	return slog.NewTextHandler(w, opts)
}

// openLogFile opens --log-file for appending. A file sluice creates under
// sudo belongs to the user who ran sudo, who asked for it; an existing
// file keeps its owner, and a symbolic link is refused, so that the path
// cannot aim root's writes at another file.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		if uid, gid, ok := sudoIDs(); ok {
			_ = f.Chown(uid, gid)
		}
		return f, nil
	}
	if !os.IsExist(err) {
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	return f, nil
}

func sudoIDs() (uid, gid int, ok bool) {
	u, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	g, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	return u, g, err1 == nil && err2 == nil && os.Geteuid() == 0
}

// humanHandler writes one short line per record for a person at a
// terminal: "14:02:11 refused dns name=other.test reason=name_not_allowed".
// The agent's name and the policy hash, the same on every line of a run,
// are left to the journal.
type humanHandler struct {
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
	mu    *sync.Mutex
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
		switch a.Key {
		case "agent", "policy":
			return true
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
		if strings.ContainsAny(v, " \t\n\"=") {
			v = strconv.Quote(v)
		}
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
