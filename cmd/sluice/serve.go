package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/webui"
)

var serveHelp = help{
	usage: "sluice serve --config FILE [-v] [--log-json] [--log-file FILE]",
	about: `Runs the gateway for every agent the config names, in the network
namespace it is started in, until SIGINT or SIGTERM. Each agent gets a
namespace of its own behind its policy. SIGHUP, or a change to the config
or to a policy file, reloads: a policy changed is put in force at once,
an agent added starts, an agent removed is torn down; a file with errors
keeps what is in force for the agents it concerns. 'sluice check FILE'
checks a config and every policy it names. Needs root.`,
	examples: `  # the config: agents, each a name and a policy file (relative to the config)
  #   agents:
  #     - name: alpha
  #       policy: alpha.yaml
  sudo sluice serve --config /etc/sluice/sluice.yaml --log-file /var/log/sluice.log
  # reload at once (a changed file is seen within a second anyway)
  sudo kill -HUP "$(pgrep -f 'sluice serve')"`,
}

func serveCmd(args []string) error {
	o := &runOptions{manyAgents: true} // the log's flags, as sluice run's
	fs := newFlags("serve", serveHelp)
	config := fs.String("config", "", "the serve config `file` (YAML: upstream, journal, ui, agents)")
	fs.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines (default: short lines on a terminal, key=value otherwise)")
	fs.StringVar(&o.logFile, "log-file", "", "write sluice's log to this `file` (appended) instead of stderr")
	fs.BoolVar(&o.verbose, "v", false, "log what sluice sets up and tears down")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("serve", fmt.Sprintf("unexpected argument %q; the config is given with --config FILE", fs.Arg(0)))
	}
	if *config == "" {
		return usageError("serve", "no config: sluice serve --config FILE")
	}
	if os.Geteuid() != 0 {
		return errors.New("serve needs root to create network namespaces and nftables rules; try sudo (or the systemd unit)")
	}
	log, started, closeLog, err := newLogger(o)
	if err != nil {
		return err
	}
	defer closeLog()
	gateway.RaiseFileLimit(log)
	// Signals are caught before the agents exist, so that none is lost.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := gateway.NewServer(gateway.ServerConfig{File: *config, Log: log,
		UI: func(j *journal.Store, addr string) (http.Handler, error) {
			// Read-only: the UI steers one policy, and serve has one per agent.
			ui, err := webui.New(webui.Config{Journal: j, Changed: j.Changed, Durations: gateway.Durations, Token: uiToken, Log: log})
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stderr, "sluice: web UI at %s (metrics at http://%s/metrics)\n", ui.LoginURL(addr), addr)
			return ui.Handler(), nil
		}})
	if err != nil {
		return err
	}
	started()
	go func() {
		for range hup {
			srv.Reload()
		}
	}()
	err = srv.Run(ctx)
	if cerr := srv.Close(); cerr != nil {
		log.Error("cleanup incomplete", "err", cerr)
		err = errors.Join(err, cerr)
	}
	return err
}
