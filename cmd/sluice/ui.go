package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/webui"
)

// uiToken is SLUICE_UI_TOKEN, taken out of the environment before
// anything starts: the agent inherits sluice's environment, and must not
// find the token there.
var uiToken = takeEnv("SLUICE_UI_TOKEN")

func takeEnv(key string) string {
	v := os.Getenv(key)
	os.Unsetenv(key)
	return v
}

// serveUI serves the web UI on addr until stop is called, and prints the
// URL that logs a browser in, once, on stderr. ctl is nil for a journal
// served alone.
func serveUI(addr string, j webui.Journal, changed func() <-chan struct{}, ctl webui.Control, log *slog.Logger) (stop func(), err error) {
	ui, err := webui.New(webui.Config{Journal: j, Changed: changed, Control: ctl, Durations: gateway.Durations,
		Token: uiToken, Log: log})
	if err != nil {
		return nil, err
	}
	login, stop, err := ui.Listen(addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "sluice: web UI at %s\n", login)
	return stop, nil
}

// uiCmd is `sluice ui`: a journal's records served alone; with
// --policy, refusals can be allowed "always" in that file.
func uiCmd(args []string) error {
	fs := newFlags("ui", help{
		usage: "sluice ui [--journal FILE] [--listen ADDR] [--policy FILE]",
		about: `Serves the review UI for a journal alone, after or beside a run: what was
refused and why. Read-only unless --policy names the file that "allow
always" may write to. The login URL is printed once on stderr.`,
		examples: "  sudo sluice ui --listen 127.0.0.1:8099\n  sudo sluice ui --policy agent.yaml",
	})
	path := fs.String("journal", journal.DefaultPath, "the journal `file`")
	addr := fs.String("listen", "127.0.0.1:8099", "serve on this `address`")
	file := fs.String("policy", "", "the policy `file` allowances are written to (none: read-only)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("ui", fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var j webui.Journal
	var ctl webui.Control
	if *file == "" {
		r, err := journal.Open(*path)
		if err != nil {
			return err
		}
		defer r.Close()
		j = r
	} else {
		store, err := journal.OpenStore(journal.StoreConfig{Path: *path, Log: log})
		if err != nil {
			return err
		}
		defer store.Close()
		j, ctl = store, &gateway.FileControl{File: *file, Journal: store}
	}
	stop, err := serveUI(*addr, j, nil, ctl, log)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	<-ctx.Done()
	stop()
	return nil
}
