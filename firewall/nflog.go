package firewall

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	nflog "github.com/florianl/go-nflog/v2"

	"github.com/sluicegw/sluice/journal"
)

// Packet is what a refusal log needs of a packet's headers.
type Packet struct {
	Proto string
	Src   netip.Addr
	Dst   netip.AddrPort
}

// ParsePacket reads the IP header (and the ports of TCP and UDP) of a
// logged packet. The bytes come from the agent, so every length is checked.
func ParsePacket(b []byte) (Packet, bool) {
	if len(b) < 1 {
		return Packet{}, false
	}
	var p Packet
	var proto byte
	var rest []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return Packet{}, false
		}
		proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), 0)
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 { // first fragment: ports follow
			rest = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return Packet{}, false
		}
		proto = b[6]
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), 0)
		rest = b[40:]
	default:
		return Packet{}, false
	}
	switch proto {
	case 6, 17:
		p.Proto = map[byte]string{6: "tcp", 17: "udp"}[proto]
		if len(rest) >= 4 {
			p.Dst = netip.AddrPortFrom(p.Dst.Addr(), binary.BigEndian.Uint16(rest[2:4]))
		}
	case 1:
		p.Proto = "icmp"
	case 58:
		p.Proto = "icmpv6"
	default:
		p.Proto = fmt.Sprintf("ip-proto-%d", proto)
	}
	return p, true
}

// LogReaderConfig says which NFLOG group to read and where its events go.
type LogReaderConfig struct {
	// Group is the NFLOG group the ruleset logs to.
	Group uint16
	// Agent names the agent in events.
	Agent string
	// PolicyHash returns the version of the policy in force.
	PolicyHash func() string
	// Journal receives the events.
	Journal journal.Sink
	// Log reports read errors.
	Log *slog.Logger
}

// LogReader turns the kernel's NFLOG records of refused packets into
// journal events: NewLogReader binds the group, Run reads it, Close
// releases it.
type LogReader struct {
	cfg  LogReaderConfig
	nf   *nflog.Nflog
	last atomic.Int64 // when the last record arrived, in UnixNano
}

// NewLogReader subscribes to the group in the current network namespace.
// It fails when the group cannot be had (without it the gateway would
// refuse in silence).
func NewLogReader(cfg LogReaderConfig) (*LogReader, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	nf, err := nflog.Open(&nflog.Config{
		Group:    cfg.Group,
		Copymode: nflog.CopyPacket,
		Bufsize:  128, // headers are all we read
		QThresh:  1,   // hand each packet over at once
	})
	if err != nil {
		return nil, fmt.Errorf("firewall: open nflog group %d: %w", cfg.Group, err)
	}
	return &LogReader{cfg: cfg, nf: nf}, nil
}

// Run records events until ctx is done, then waits for the records of the
// last refusals still on their way (until the socket has been quiet for a
// moment, a second at most). It fails only if it cannot read at all.
func (r *LogReader) Run(ctx context.Context) error {
	readCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook := func(a nflog.Attribute) int {
		r.last.Store(time.Now().UnixNano())
		r.record(a)
		return 0
	}
	onErr := func(err error) int {
		if readCtx.Err() == nil {
			r.cfg.Log.Warn("nflog read failed; refusals may be missing from the log", "err", err)
		}
		return 0
	}
	if err := r.nf.RegisterWithErrorFunc(readCtx, hook, onErr); err != nil {
		return fmt.Errorf("firewall: subscribe to nflog group %d: %w", r.cfg.Group, err)
	}
	<-ctx.Done()
	const quiet = 50 * time.Millisecond
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if time.Since(time.Unix(0, r.last.Load())) > quiet {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(quiet)
	return nil
}

// Close releases the group.
func (r *LogReader) Close() error { return r.nf.Close() }

func (r *LogReader) record(a nflog.Attribute) {
	ev := journal.Event{Time: time.Now(), Agent: r.cfg.Agent, Layer: journal.LayerFirewall, PolicyHash: r.cfg.PolicyHash()}
	if a.Prefix != nil {
		ev.Kind, ev.Reason, ev.Detail = readPrefix(*a.Prefix)
	}
	if a.Payload != nil {
		if p, ok := ParsePacket(*a.Payload); ok {
			ev.Proto, ev.Dst = p.Proto, p.Dst
			if ev.Reason == ReasonSpoofed {
				ev.Detail = "source " + p.Src.String()
			}
		}
	}
	r.cfg.Journal.Record(ev)
}

// readPrefix reads a log prefix of the ruleset's: "sluice REASON" is a
// refusal, "sluice would_refuse REASON" a packet that report mode let
// through. A prefix that is not one of ours (someone else's rule logs
// to our group) is a refusal without a reason, its prefix in detail.
func readPrefix(prefix string) (kind journal.Kind, reason journal.Reason, detail string) {
	word := strings.TrimRight(prefix, "\x00")
	kind = journal.Refused
	if w, ok := strings.CutPrefix(word, reportPrefix); ok {
		word, kind = w, journal.WouldRefuse
	} else {
		word = strings.TrimPrefix(word, logPrefix)
	}
	if r := journal.Reason(word); r.Known() {
		return kind, r, ""
	}
	return journal.Refused, "", "log prefix " + word
}
