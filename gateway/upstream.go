package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/sluicegw/sluice/dnsfilter"
)

// probeUpstreams asks each upstream resolver one question in the
// background while the gateway starts (or, in sluice serve, while all
// its agents do), and returns report, which waits for the answers (at
// most dnsfilter.DefaultTimeout from now) and logs a warning for each
// resolver that gave none, and an error when none did. An upstream that
// does not answer fails nothing: it may come up later. The probe is the
// gateway's own traffic: it opens no set and is no decision about an
// agent, so the journal does not see it. setting names where the
// upstreams were chosen, for the error.
func probeUpstreams(upstreams []netip.AddrPort, log *slog.Logger, setting string) (report func()) {
	servers := make([]string, len(upstreams))
	for i, u := range upstreams {
		servers[i] = u.String()
	}
	done := make(chan []dnsfilter.ServerFailure, 1)
	go func() {
		fwd := &dnsfilter.Forwarder{Servers: servers}
		done <- fwd.Probe(context.Background())
	}()
	return func() {
		failed := <-done
		for _, f := range failed {
			log.Warn("upstream resolver does not answer", "upstream", f.Server, "err", f.Why())
		}
		if len(failed) > 0 && len(failed) == len(servers) {
			log.Error("no upstream resolver answers: allowed names will not resolve; check "+setting, "upstream", strings.Join(servers, ","))
		}
	}
}
