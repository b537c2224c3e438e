package firewall

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlRecorder stands in for the kernel's netlink socket
// (nftables.WithTestDial): it keeps every message the Manager sends and
// acknowledges nothing, which the nftables library takes as success.
type nlRecorder struct {
	mu   sync.Mutex
	msgs []netlink.Message
}

func (r *nlRecorder) dial(req []netlink.Message) ([]netlink.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range req {
		m.Data = bytes.Clone(m.Data)
		r.msgs = append(r.msgs, m)
	}
	return nil, nil
}

// take returns the messages sent since the last take.
func (r *nlRecorder) take() []netlink.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs := r.msgs
	r.msgs = nil
	return msgs
}

// nlDecoder turns captured nftables messages into one line each. Set IDs
// are allocated by a counter global to the nftables package, so they are
// shown as the name of the set that was created with them.
type nlDecoder struct {
	t       testing.TB
	setName map[uint32]string
}

// nlaTypeMask clears the nested and byte-order flags of an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

func newDecoder(t testing.TB) *nlDecoder { return &nlDecoder{t: t, setName: map[uint32]string{}} }

func (d *nlDecoder) lines(msgs []netlink.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, d.message(m))
	}
	return out
}

var nftMsgNames = map[int]string{
	unix.NFT_MSG_NEWTABLE: "newtable", unix.NFT_MSG_DELTABLE: "deltable",
	unix.NFT_MSG_NEWCHAIN: "newchain", unix.NFT_MSG_DELCHAIN: "delchain",
	unix.NFT_MSG_NEWRULE: "newrule", unix.NFT_MSG_DELRULE: "delrule",
	unix.NFT_MSG_NEWSET: "newset", unix.NFT_MSG_DELSET: "delset",
	unix.NFT_MSG_NEWSETELEM: "newsetelem", unix.NFT_MSG_DELSETELEM: "delsetelem",
}

var familyNames = map[byte]string{
	unix.NFPROTO_UNSPEC: "unspec", unix.NFPROTO_INET: "inet", unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6",
}

// message renders the header (type, family, flags but the request flag
// every message has) and then every attribute.
func (d *nlDecoder) message(m netlink.Message) string {
	if len(m.Data) < 4 {
		d.t.Errorf("message of %d bytes has no nfgenmsg header", len(m.Data))
		return "short " + hex.EncodeToString(m.Data)
	}
	fam, resID, body := m.Data[0], binary.BigEndian.Uint16(m.Data[2:4]), m.Data[4:]
	typ := int(m.Header.Type)
	switch typ {
	case unix.NFNL_MSG_BATCH_BEGIN, unix.NFNL_MSG_BATCH_END:
		name := map[int]string{unix.NFNL_MSG_BATCH_BEGIN: "batch-begin", unix.NFNL_MSG_BATCH_END: "batch-end"}[typ]
		return fmt.Sprintf("%s subsys=%d%s", name, resID, hexIfAny(" body=", body))
	}
	name, ok := nftMsgNames[typ&0xff]
	if typ>>8 != unix.NFNL_SUBSYS_NFTABLES || !ok {
		name = fmt.Sprintf("type=%#x", typ)
	}
	parts := []string{name, familyNames[fam] + headerFlags(m.Header.Flags)}
	if resID != 0 {
		parts = append(parts, fmt.Sprintf("res_id=%d", resID))
	}
	attrs := d.attrs(body)
	var set string
	for _, a := range attrs {
		switch a.Type & nlaTypeMask {
		case unix.NFTA_SET_NAME:
			if typ&0xff == unix.NFT_MSG_NEWSET {
				set = cstring(a.Data)
			}
		}
	}
	for _, a := range attrs {
		parts = append(parts, d.attr(typ&0xff, a, set))
	}
	return strings.Join(parts, " ")
}

func headerFlags(f netlink.HeaderFlags) string {
	var names []string
	for _, b := range []struct {
		bit  netlink.HeaderFlags
		name string
	}{{netlink.Acknowledge, "ack"}, {netlink.Echo, "echo"}, {netlink.Replace, "replace"},
		{netlink.Excl, "excl"}, {netlink.Create, "create"}, {netlink.Append, "append"}} {
		if f&b.bit != 0 {
			names = append(names, b.name)
			f &^= b.bit
		}
	}
	if f &^= netlink.Request; f != 0 {
		names = append(names, fmt.Sprintf("%#x", uint16(f)))
	}
	if len(names) == 0 {
		return ""
	}
	return "[" + strings.Join(names, ",") + "]"
}

func (d *nlDecoder) attrs(b []byte) []netlink.Attribute {
	attrs, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		d.t.Errorf("attributes %x: %v", b, err)
	}
	return attrs
}

// attr renders one top-level attribute of a message of type msg. Those it
// does not know are shown in hex, so nothing sent goes unseen.
func (d *nlDecoder) attr(msg int, a netlink.Attribute, newSet string) string {
	typ, data := a.Type&nlaTypeMask, a.Data
	u32 := func() uint32 { return d.u32(data) }
	switch msg {
	case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE:
		switch typ {
		case unix.NFTA_TABLE_NAME:
			return "table=" + cstring(data)
		case unix.NFTA_TABLE_FLAGS:
			return fmt.Sprintf("flags=%#x", u32())
		}
	case unix.NFT_MSG_NEWCHAIN:
		switch typ {
		case unix.NFTA_CHAIN_TABLE:
			return "table=" + cstring(data)
		case unix.NFTA_CHAIN_NAME:
			return "chain=" + cstring(data)
		case unix.NFTA_CHAIN_HOOK:
			return d.hook(data)
		case unix.NFTA_CHAIN_POLICY:
			return "policy=" + map[uint32]string{0: "drop", 1: "accept"}[u32()]
		case unix.NFTA_CHAIN_TYPE:
			return "type=" + cstring(data)
		}
	case unix.NFT_MSG_NEWRULE:
		switch typ {
		case unix.NFTA_RULE_TABLE:
			return "table=" + cstring(data)
		case unix.NFTA_RULE_CHAIN:
			return "chain=" + cstring(data)
		case unix.NFTA_RULE_EXPRESSIONS:
			return d.exprs(data)
		}
	case unix.NFT_MSG_NEWSET:
		switch typ {
		case unix.NFTA_SET_TABLE:
			return "table=" + cstring(data)
		case unix.NFTA_SET_NAME:
			return "set=" + cstring(data)
		case unix.NFTA_SET_FLAGS:
			return "flags=" + setFlags(u32())
		case unix.NFTA_SET_KEY_TYPE:
			return fmt.Sprintf("key_type=%#x", u32())
		case unix.NFTA_SET_KEY_LEN:
			return fmt.Sprintf("key_len=%d", u32())
		case unix.NFTA_SET_ID:
			d.setName[u32()] = newSet
			return "id=" + newSet
		case unix.NFTA_SET_DESC:
			return d.setDesc(data)
		case unix.NFTA_SET_USERDATA:
			return "userdata=" + hex.EncodeToString(data)
		}
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		switch typ {
		case unix.NFTA_SET_ELEM_LIST_TABLE:
			return "table=" + cstring(data)
		case unix.NFTA_SET_ELEM_LIST_SET:
			return "set=" + cstring(data)
		case unix.NFTA_SET_ELEM_LIST_SET_ID:
			return "id=" + d.idName(u32())
		case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			return d.elems(data)
		}
	}
	return fmt.Sprintf("attr%d=%x", typ, data)
}

func (d *nlDecoder) u32(b []byte) uint32 {
	if len(b) != 4 {
		d.t.Errorf("attribute of %d bytes where 4 were expected: %x", len(b), b)
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *nlDecoder) idName(id uint32) string {
	if name, ok := d.setName[id]; ok {
		return name
	}
	return fmt.Sprintf("unknown(%d)", id)
}

func (d *nlDecoder) hook(b []byte) string {
	parts := []string{}
	for _, a := range d.attrs(b) {
		switch a.Type & nlaTypeMask {
		case unix.NFTA_HOOK_HOOKNUM:
			n := d.u32(a.Data)
			name, ok := map[uint32]string{unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input",
				unix.NF_INET_FORWARD: "forward", unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting"}[n]
			if !ok {
				name = fmt.Sprint(n)
			}
			parts = append(parts, "hook="+name)
		case unix.NFTA_HOOK_PRIORITY:
			parts = append(parts, fmt.Sprintf("prio=%d", int32(d.u32(a.Data))))
		default:
			parts = append(parts, fmt.Sprintf("hook_attr%d=%x", a.Type&nlaTypeMask, a.Data))
		}
	}
	return strings.Join(parts, " ")
}

func setFlags(f uint32) string {
	var names []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{unix.NFT_SET_ANONYMOUS, "anonymous"}, {unix.NFT_SET_CONSTANT, "constant"}, {unix.NFT_SET_INTERVAL, "interval"},
		{unix.NFT_SET_MAP, "map"}, {unix.NFT_SET_TIMEOUT, "timeout"}, {unix.NFT_SET_EVAL, "eval"},
		{unix.NFT_SET_OBJECT, "object"}, {nftables.NFT_SET_CONCAT, "concat"}} {
		if f&b.bit != 0 {
			names = append(names, b.name)
			f &^= b.bit
		}
	}
	if f != 0 || len(names) == 0 {
		names = append(names, fmt.Sprintf("%#x", f))
	}
	return strings.Join(names, ",")
}

// setDesc renders the set's size and the lengths of a concatenation's fields.
func (d *nlDecoder) setDesc(b []byte) string {
	parts := []string{}
	for _, a := range d.attrs(b) {
		switch a.Type & nlaTypeMask {
		case unix.NFTA_SET_DESC_SIZE:
			parts = append(parts, fmt.Sprintf("size=%d", d.u32(a.Data)))
		case nftables.NFTA_SET_DESC_CONCAT:
			var lens []string
			for _, f := range d.attrs(a.Data) {
				for _, v := range d.attrs(f.Data) {
					lens = append(lens, fmt.Sprint(d.u32(v.Data)))
				}
			}
			parts = append(parts, "concat="+strings.Join(lens, "."))
		default:
			parts = append(parts, fmt.Sprintf("desc_attr%d=%x", a.Type&nlaTypeMask, a.Data))
		}
	}
	return strings.Join(parts, " ")
}

// elems renders set elements as {key timeout}, keys of our sets as
// address . port.
func (d *nlDecoder) elems(b []byte) string {
	var out []string
	for _, el := range d.attrs(b) {
		var parts []string
		for _, a := range d.attrs(el.Data) {
			switch a.Type & nlaTypeMask {
			case unix.NFTA_SET_ELEM_KEY:
				for _, v := range d.attrs(a.Data) {
					parts = append(parts, elemKeyString(v.Data))
				}
			case unix.NFTA_SET_ELEM_TIMEOUT:
				parts = append(parts, "timeout="+(time.Duration(binary.BigEndian.Uint64(a.Data))*time.Millisecond).String())
			default:
				parts = append(parts, fmt.Sprintf("elem_attr%d=%x", a.Type&nlaTypeMask, a.Data))
			}
		}
		out = append(out, "{"+strings.Join(parts, " ")+"}")
	}
	return strings.Join(out, " ")
}

// elemKeyString shows a concatenation of an address and a port, padded to
// 4 bytes, as ADDR.PORT; any other key in hex.
func elemKeyString(b []byte) string {
	if (len(b) == 8 || len(b) == 20) && b[len(b)-1] == 0 && b[len(b)-2] == 0 {
		addr, _ := netip.AddrFromSlice(b[:len(b)-4])
		return fmt.Sprintf("%s.%d", addr, binary.BigEndian.Uint16(b[len(b)-4:]))
	}
	return "0x" + hex.EncodeToString(b)
}

// exprs renders a rule's expressions, each as [name Field=value ...] with
// the fields the library decoded. An expression that does not encode back
// to the bytes sent fails the test: its line would hide a difference.
func (d *nlDecoder) exprs(b []byte) string {
	var out []string
	for _, el := range d.attrs(b) {
		var name string
		var data []byte
		for _, a := range d.attrs(el.Data) {
			switch a.Type & nlaTypeMask {
			case unix.NFTA_EXPR_NAME:
				name = cstring(a.Data)
			case unix.NFTA_EXPR_DATA:
				data = a.Data
			}
		}
		e := newExpr(name)
		if e == nil {
			d.t.Errorf("expression %q: no decoder", name)
			out = append(out, fmt.Sprintf("[%s %x]", name, data))
			continue
		}
		if err := expr.Unmarshal(unix.NFPROTO_INET, data, e); err != nil {
			d.t.Errorf("decode expression %q %x: %v", name, data, err)
		}
		if imm, ok := e.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT && len(imm.Data) == 0 {
			e = &expr.Verdict{}
			if err := expr.Unmarshal(unix.NFPROTO_INET, data, e); err != nil {
				d.t.Errorf("decode verdict %x: %v", data, err)
			}
		}
		if again, err := expr.Marshal(unix.NFPROTO_INET, e); err != nil || !bytes.Equal(again, el.Data) {
			d.t.Errorf("expression %q does not survive decoding: sent %x, decoded %+v (%v)", name, el.Data, e, err)
		}
		out = append(out, exprString(name, e))
	}
	return strings.Join(out, " ")
}

func newExpr(name string) expr.Any {
	switch name {
	case "meta":
		return &expr.Meta{}
	case "cmp":
		return &expr.Cmp{}
	case "payload":
		return &expr.Payload{}
	case "bitwise":
		return &expr.Bitwise{}
	case "ct":
		return &expr.Ct{}
	case "lookup":
		return &expr.Lookup{}
	case "immediate":
		return &expr.Immediate{}
	case "log":
		return &expr.Log{}
	case "limit":
		return &expr.Limit{}
	case "reject":
		return &expr.Reject{}
	case "redir":
		return &expr.Redir{}
	case "masq":
		return &expr.Masq{}
	case "fib":
		return &expr.Fib{}
	case "counter":
		return &expr.Counter{}
	}
	return nil
}

// exprString shows every field that is not zero, and the enumerations
// (keys, operators, verdicts) even when they are, since their zero value
// means something (eq, drop, ct state, meta len).
func exprString(name string, e expr.Any) string {
	v := reflect.ValueOf(e).Elem()
	if _, ok := e.(*expr.Verdict); ok {
		name = "verdict"
	}
	parts := []string{name}
	for i := range v.NumField() {
		f := v.Field(i)
		var enum bool
		switch f.Interface().(type) {
		case expr.MetaKey, expr.CmpOp, expr.PayloadBase, expr.CtKey, expr.VerdictKind:
			enum = true
		}
		if !v.Type().Field(i).IsExported() || f.IsZero() && !enum {
			continue
		}
		parts = append(parts, v.Type().Field(i).Name+"="+valueString(f.Interface()))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func valueString(v any) string {
	named := func(names map[any]string) string {
		if n, ok := names[v]; ok {
			return n
		}
		return fmt.Sprint(v)
	}
	switch v := v.(type) {
	case []byte:
		return bytesString(v)
	case expr.MetaKey:
		return named(map[any]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname",
			expr.MetaKeyNFPROTO: "nfproto", expr.MetaKeyL4PROTO: "l4proto", expr.MetaKeyPKTTYPE: "pkttype"})
	case expr.CmpOp:
		return named(map[any]string{expr.CmpOpEq: "eq", expr.CmpOpNeq: "neq"})
	case expr.PayloadBase:
		return named(map[any]string{expr.PayloadBaseLLHeader: "link", expr.PayloadBaseNetworkHeader: "network",
			expr.PayloadBaseTransportHeader: "transport"})
	case expr.CtKey:
		return named(map[any]string{expr.CtKeySTATE: "state", expr.CtKeySTATUS: "status"})
	case expr.VerdictKind:
		return named(map[any]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop", expr.VerdictJump: "jump",
			expr.VerdictGoto: "goto", expr.VerdictReturn: "return"})
	case expr.LimitType:
		return named(map[any]string{expr.LimitTypePkts: "pkts", expr.LimitTypePktBytes: "bytes"})
	case expr.LimitTime:
		return named(map[any]string{expr.LimitTimeSecond: "second", expr.LimitTimeMinute: "minute"})
	case string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprint(v)
}

// bytesString shows text (an interface name or a log prefix) quoted,
// followed by /N when NULs pad it to N bytes, and anything else in hex.
func bytesString(b []byte) string {
	text := bytes.TrimRight(b, "\x00")
	printable, letter := len(text) >= 3, false
	for _, c := range text {
		printable = printable && c >= 0x20 && c < 0x7f
		letter = letter || c >= 'a' && c <= 'z'
	}
	switch {
	case !printable || !letter:
		return "0x" + hex.EncodeToString(b)
	case len(text) < len(b):
		return fmt.Sprintf("%q/%d", text, len(b))
	}
	return fmt.Sprintf("%q", text)
}

func cstring(b []byte) string { return string(bytes.TrimSuffix(b, []byte{0})) }

func hexIfAny(label string, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return label + hex.EncodeToString(b)
}
