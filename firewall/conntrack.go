package firewall

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/sluicegw/sluice/policy"
	"golang.org/x/sys/unix"
)

// ctnetlink message types and attributes (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctMsgGet    = 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig = 1  // CTA_TUPLE_ORIG
	ctaZone      = 18 // CTA_ZONE
	ctaTupleIP   = 1  // CTA_TUPLE_IP, in a tuple
	ctaTupleProt = 2  // CTA_TUPLE_PROTO, in a tuple
	ctaIPv4Src   = 1  // CTA_IP_V4_SRC, in CTA_TUPLE_IP
	ctaIPv4Dst   = 2  // CTA_IP_V4_DST
	ctaIPv6Src   = 3  // CTA_IP_V6_SRC
	ctaIPv6Dst   = 4  // CTA_IP_V6_DST
	ctaProtoNum  = 1  // CTA_PROTO_NUM, in CTA_TUPLE_PROTO
	ctaDstPort   = 3  // CTA_PROTO_DST_PORT
)

// ForgetFlows deletes the connection-tracking entries of every flow started
// from an address in prefixes (an agent's subnets), in the namespace
// netnsFd (-1: the calling thread's), and says how many it deleted.
//
// An entry outlives the agent that made it (a closed TCP flow for seconds,
// an established one for days), and a later agent on the same addresses
// that happens to reuse a source port inherits it: a SYN that meets an
// entry closed by the other side's reset is not treated as new, so it
// keeps that entry's verdict and address translation. It would be let
// through as established, past the sets of the new policy, or redirected
// to the port of a proxy that is gone (a connection refused, or a
// connection to whatever listens there now). So the entries of an agent's
// subnets are deleted before its command starts and after it ends.
//
// The table is read as a stream and only each entry's original source is
// looked at: a gateway may track hundreds of thousands of flows, and
// decoding them all would cost far more than the few it deletes. Each is
// deleted by the tuple (and zone) the kernel itself sent.
func ForgetFlows(netnsFd int, prefixes []netip.Prefix) (int, error) {
	return forgetFlows(netnsFd, func(f flow) bool { return policy.InPrefixes(prefixes, f.src) })
}

// ForgetFlowsExcept is ForgetFlows for the flows started from an address
// in prefixes and in none of except.
func ForgetFlowsExcept(netnsFd int, prefixes, except []netip.Prefix) (int, error) {
	return forgetFlows(netnsFd, func(f flow) bool {
		return policy.InPrefixes(prefixes, f.src) && !policy.InPrefixes(except, f.src)
	})
}

// forgetFlows deletes the entries of the flows that match.
func forgetFlows(netnsFd int, match func(flow) bool) (int, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	// A dump that runs while the table is resized can miss entries, and
	// the kernel does not say so: after deleting, look again, until a pass
	// finds nothing (at setup no new flow of the agent can appear).
	n := 0
	for range 3 {
		doomed, err := matchingEntries(c, match)
		if err != nil {
			return n, fmt.Errorf("conntrack dump: %w", err)
		}
		if len(doomed) == 0 {
			return n, nil
		}
		for len(doomed) > 0 {
			chunk := doomed[:min(len(doomed), deleteBatch)]
			doomed = doomed[len(chunk):]
			if err := deleteEntries(c, chunk); err != nil {
				return n, fmt.Errorf("conntrack delete: %w", err)
			}
			n += len(chunk)
		}
	}
	return n, errors.New("conntrack: flows from the agent's addresses keep appearing")
}

// deleteBatch is how many deletions go to the kernel in one write: a
// hundred dead agents can leave tens of thousands of flows (each DNS
// question is one), and a round trip each costs more than the deletion.
const deleteBatch = 256

// deleteEntries deletes the entries whose delete bodies are doomed, sent
// in one write. Only the last asks for an acknowledgement: the kernel
// answers in order, so once it comes every other deletion was done, and
// those that failed said so before it. An entry that ended by itself
// meanwhile (ENOENT) is gone as asked.
func deleteEntries(c *netlink.Conn, doomed [][]byte) error {
	msgs := make([]netlink.Message, len(doomed))
	for i, d := range doomed {
		msgs[i] = netlink.Message{Header: netlink.Header{Type: ctType(ctMsgDelete), Flags: netlink.Request}, Data: d}
	}
	msgs[len(msgs)-1].Header.Flags |= netlink.Acknowledge
	sent, err := c.SendMessages(msgs)
	if err != nil {
		return err
	}
	last := sent[len(sent)-1].Header.Sequence
	first := sent[0].Header.Sequence
	var failed error
	err = eachReply(c, func(m syscall.NetlinkMessage) bool {
		if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq-first > last-first { // not ours (wrap-safe)
			return false
		}
		if errno := replyErrno(m); errno != 0 && errno != unix.ENOENT && failed == nil {
			failed = errno
		}
		return m.Header.Seq == last
	})
	return cmp.Or(err, failed)
}

// eachReply reads the socket's messages and gives each to f until f says
// it was the last.
func eachReply(c *netlink.Conn, f func(m syscall.NetlinkMessage) (last bool)) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		}); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if f(m) {
				return nil
			}
		}
	}
}

// replyErrno is the error an NLMSG_ERROR message carries (0 for an ack).
func replyErrno(m syscall.NetlinkMessage) unix.Errno {
	if len(m.Data) < 4 {
		return 0
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
}

func ctType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | msg)
}

// matchingEntries dumps the table and returns, for each entry that
// matches, the body of the message that deletes it: its family header,
// original tuple and zone as the kernel encoded them.
func matchingEntries(c *netlink.Conn, match func(flow) bool) ([][]byte, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: ctType(ctMsgGet), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	sent, err := c.Send(req)
	if err != nil {
		return nil, err
	}
	var doomed [][]byte
	var failed error
	err = eachReply(c, func(m syscall.NetlinkMessage) bool {
		if m.Header.Seq != sent.Header.Sequence {
			return false
		}
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true
		case unix.NLMSG_ERROR:
			if errno := replyErrno(m); errno != 0 {
				failed = errno
			}
			return true
		}
		if d := deleteBodyIf(m.Data, match); d != nil {
			doomed = append(doomed, d)
		}
		return false
	})
	if err == nil {
		err = failed
	}
	if err != nil {
		return nil, err
	}
	return doomed, nil
}

// deleteBody returns the body of a delete message for the entry in msg (a
// ctnetlink message body: family header, then attributes) when its
// original source is in prefixes, and nil otherwise.
func deleteBody(msg []byte, prefixes []netip.Prefix) []byte {
	return deleteBodyIf(msg, func(f flow) bool { return policy.InPrefixes(prefixes, f.src) })
}

// deleteBodyIf is deleteBody for the entries whose original tuple matches.
func deleteBodyIf(msg []byte, match func(flow) bool) []byte {
	if len(msg) < 4 {
		return nil
	}
	var tuple, zone []byte
	eachAttr(msg[4:], func(typ uint16, whole, payload []byte) {
		switch typ {
		case ctaTupleOrig:
			tuple = whole
		case ctaZone:
			zone = whole
		}
	})
	if tuple == nil || !match(tupleFlow(tuple[4:])) {
		return nil
	}
	d := make([]byte, 0, 4+len(tuple)+len(zone))
	d = append(d, msg[:4]...)
	d = append(d, tuple...)
	return append(d, zone...)
}

// flow is what a tuple says of a tracked flow.
type flow struct {
	src, dst netip.Addr // unmapped
	proto    uint8
	dport    uint16
}

// tupleFlow reads a CTA_TUPLE_* payload.
func tupleFlow(tuple []byte) flow {
	var f flow
	eachAttr(tuple, func(typ uint16, _, nested []byte) {
		switch typ {
		case ctaTupleIP:
			eachAttr(nested, func(typ uint16, _, a []byte) {
				switch {
				case typ == ctaIPv4Src && len(a) == 4:
					f.src = netip.AddrFrom4([4]byte(a))
				case typ == ctaIPv4Dst && len(a) == 4:
					f.dst = netip.AddrFrom4([4]byte(a))
				case typ == ctaIPv6Src && len(a) == 16:
					f.src = netip.AddrFrom16([16]byte(a)).Unmap()
				case typ == ctaIPv6Dst && len(a) == 16:
					f.dst = netip.AddrFrom16([16]byte(a)).Unmap()
				}
			})
		case ctaTupleProt:
			eachAttr(nested, func(typ uint16, _, a []byte) {
				switch {
				case typ == ctaProtoNum && len(a) == 1:
					f.proto = a[0]
				case typ == ctaDstPort && len(a) == 2:
					f.dport = binary.BigEndian.Uint16(a)
				}
			})
		}
	})
	return f
}

// eachAttr calls fn with the type (flags cleared), the whole attribute
// (header and padding included) and the payload of each netlink attribute
// in b; it stops at the first malformed one.
func eachAttr(b []byte, fn func(typ uint16, whole, payload []byte)) {
	for len(b) >= unix.SizeofNlAttr {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(b) {
			return
		}
		next := min((l+3)&^3, len(b))
		fn(typ, b[:next], b[unix.SizeofNlAttr:l])
		b = b[next:]
	}
}
