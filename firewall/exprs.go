package firewall

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders for nftables expressions, so rules read like the nft
// syntax they stand for. Register 1 is the 16-byte NFT_REG_1; concatenated
// keys continue in the 4-byte registers that follow it (9, and 12 after a
// 16-byte address).

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// meta is `meta KEY == DATA` (or `!=`).
func meta(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// th is `th @OFFSET == DATA`: bytes of the transport header.
func th(offset uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// iif is `iifname NAME` (or `iifname != NAME`).
func iif(name string, eq bool) []expr.Any {
	return meta(expr.MetaKeyIIFNAME, cmpOp(eq), ifname(name))
}

// oif is `oifname NAME` (or `oifname != NAME`).
func oif(name string, eq bool) []expr.Any {
	return meta(expr.MetaKeyOIFNAME, cmpOp(eq), ifname(name))
}

func cmpOp(eq bool) expr.CmpOp {
	if eq {
		return expr.CmpOpEq
	}
	return expr.CmpOpNeq
}

// nfproto is `meta nfproto ipv4|ipv6`.
func nfproto(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return meta(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{p})
}

// l4proto is `meta l4proto PROTO`.
func l4proto(proto byte) []expr.Any {
	return meta(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{proto})
}

// dport is `th dport PORT`; use it after l4proto tcp or udp.
func dport(port uint16) []expr.Any {
	return th(2, binaryutil.BigEndian.PutUint16(port))
}

// sport is `th sport PORT`; use it after l4proto tcp or udp.
func sport(port uint16) []expr.Any {
	return th(0, binaryutil.BigEndian.PutUint16(port))
}

// ctState is `ct state STATES` for a mask of expr.CtStateBit* values.
func ctState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ctDNAT is `ct status dnat`: the packet's destination was rewritten by a
// redirect, so it did not address this port itself.
func ctDNAT() []expr.Any {
	const ipsDstNAT = 1 << 5
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// addrField locates the source or destination address in the network header.
func addrField(v6, src bool) (offset, length uint32) {
	switch {
	case v6 && src:
		return 8, 16
	case v6:
		return 24, 16
	case src:
		return 12, 4
	default:
		return 16, 4
	}
}

// addrIn is `ip[6] saddr|daddr PREFIX` (or `!=`).
func addrIn(p netip.Prefix, src, eq bool) []expr.Any {
	v6 := p.Addr().Is6()
	off, n := addrField(v6, src)
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: cmpOp(eq), Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// daddrPortIn is `ip[6] daddr . th dport @set`.
func daddrPortIn(set string, v6 bool) []expr.Any { return addrPortIn(set, v6, false) }

// addrPortIn is `ip saddr . th sport @set` (src) or the destination's,
// for a set of address . port concatenations.
func addrPortIn(set string, v6, src bool) []expr.Any {
	off, n := addrField(v6, src)
	portReg := uint32(9)
	if v6 {
		portReg = 12
	}
	portOff := uint32(2)
	if src {
		portOff = 0
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

// notInSet is `KEY != @set` for a constant 4-byte key: it matches when the
// key is absent, which is how the dead-man switch is read.
func notInSet(set string, key uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint32(nil, key)},
		&expr.Lookup{SourceRegister: 1, SetName: set, Invert: true},
	}
}

// logTo is `log group GROUP prefix PREFIX`.
func logTo(group uint16, prefix string) expr.Any {
	return &expr.Log{
		Key:   1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX,
		Group: group,
		Data:  []byte(prefix),
	}
}

// notLocal is `fib daddr type != local`.
func notLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func pktType(t byte) []expr.Any { return meta(expr.MetaKeyPKTTYPE, expr.CmpOpEq, []byte{t}) }

func icmp6Type(t byte) []expr.Any { return th(0, []byte{t}) }

// redirectTo is `redirect to :PORT`.
func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

// rejectTCP answers with a TCP reset; rejectAdmin with ICMP(v6)
// administratively prohibited.
func rejectTCP() expr.Any { return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST} }

func rejectAdmin() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}
}

// rejectPort answers with ICMP(v6) port unreachable, as a closed UDP port does.
func rejectPort() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

func rule(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case expr.Any:
			out = append(out, p)
		case []expr.Any:
			out = append(out, p...)
		case nil:
		default:
			panic("firewall: rule part of unknown type")
		}
	}
	return out
}
