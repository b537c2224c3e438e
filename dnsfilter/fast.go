package dnsfilter

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// The fast path answers a UDP question from a reply packed before, for
// a question with the same name (in any case), type and use of EDNS:
// only the header and the question of the query are read, and the copy
// gets the query's ID, RD and CD bits, its question as written, and TTLs
// aged since the answer was cached. It serves exactly the bytes the slow
// path (unpack, Answer, Truncate, pack) would send for that query
// (TestFastAnswerEqualsSlow), and records the same journal event (its
// repeats folded as the journal's store would fold them: heldHits); it
// declines, leaving the query to the slow path, whenever anything could
// make them differ:
//
//   - the policy in force is not the one the answer was decided under
//     (a reload, a revocation);
//   - the answer has outlived its cache lifetime;
//   - the sets and pins the answer opened are not known to last as long
//     as the slow path would have them last for this answer (its TTL
//     left, at least MinTTL): a hit calls neither Allow nor Pin;
//   - a wildcard entry's name budget does not admit the name;
//   - the query is anything but a plain one (one question of class IN;
//     no answer or authority records; an additional section of at most
//     one OPT record of version 0, with NSID, COOKIE and PADDING options
//     at most; nothing after it), or the copy would not fit its UDP size
//     uncompressed.
//
// Only answers that the slow path journals as allowed (nothing dropped,
// no would-be refusal of report mode) are packed for it.
type fastCache struct {
	mu      sync.Mutex
	entries map[fastKey]*fastEntry
	max     int
}

// fastKey is the question's name in wire form, ASCII lower-cased, its
// type, and whether the query had an OPT record (the reply then has one).
type fastKey struct {
	name  string
	qtype uint16
	edns  bool
}

// fastEntry is a reply packed by the slow path, and what decides whether
// it may be served again.
type fastEntry struct {
	wire []byte // the reply, its ID, RD, CD and question to be replaced
	size int    // its length as Truncate reckons it (Msg.Len), at most
	// which the query's UDP size must allow, as it does for the slow path
	ttlAt    []int    // offsets of the answer and authority records' TTLs
	ttl0     []uint32 // those TTLs as first served (age 0)
	policy   *policy.Policy
	stored   time.Time     // when the answer was cached (age 0)
	lifetime time.Duration // how long the cache may serve it
	// open is until when the answer's addresses are known to be in the
	// sets and the pin table (zero time: it has none).
	open   time.Time
	budget *policy.Entry // a wildcard entry with a name budget, or nil
	name   string        // the canonical name, for the budget
	ev     journal.Event // the record of each answer, its time left to set
	held   held          // answers not yet recorded (heldHits)
}

func newFastCache(max int) *fastCache {
	return &fastCache{entries: map[fastKey]*fastEntry{}, max: max}
}

func (c *fastCache) get(k fastKey) *fastEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[k]
}

func (c *fastCache) put(k fastKey, e *fastEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	putBounded(c.entries, k, e, c.max)
}

func (c *fastCache) drop(k fastKey, e *fastEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[k] == e {
		delete(c.entries, k)
	}
}

// fastQuery is what the fast path reads of a query.
type fastQuery struct {
	key     fastKey
	id      uint16
	flags   uint16 // RD and CD
	qname   []byte // as written, in wire form
	udpSize int    // what the reply may take (udpSize)
}

const (
	flagQR = 1 << 15
	flagRD = 1 << 8
	flagCD = 1 << 4
)

// parseFastQuery reads a plain query (see fastCache), or says it is not
// one. lower is room for the lower-cased name.
func parseFastQuery(b []byte, lower *[255]byte) (fastQuery, bool) {
	var q fastQuery
	if len(b) < 12 {
		return q, false
	}
	flags := binary.BigEndian.Uint16(b[2:])
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if flags&flagQR != 0 || (flags>>11)&0xf != dns.OpcodeQuery || qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, false
	}
	q.id, q.flags = binary.BigEndian.Uint16(b), flags&(flagRD|flagCD)
	i := 12
	for {
		if i >= len(b) || i-12 >= 255 {
			return q, false // cut short, or a name too long
		}
		l := int(b[i])
		if l == 0 {
			i++
			break
		}
		if l > 63 {
			return q, false // a pointer (or a label type no one uses)
		}
		i += 1 + l
	}
	if i-12 > 255 {
		return q, false
	}
	q.qname = b[12:i]
	if i+4 > len(b) || binary.BigEndian.Uint16(b[i+2:]) != dns.ClassINET {
		return q, false
	}
	q.key.qtype = binary.BigEndian.Uint16(b[i:])
	i += 4
	q.udpSize = dns.MinMsgSize
	if ar == 1 {
		// OPT: the root name, type, UDP size, extended rcode, version,
		// flags, and options (those plainOptions lets through).
		if i+11 > len(b) || b[i] != 0 || binary.BigEndian.Uint16(b[i+1:]) != dns.TypeOPT || b[i+6] != 0 {
			return q, false
		}
		if size := int(binary.BigEndian.Uint16(b[i+3:])); size > dns.MinMsgSize {
			q.udpSize = size
		}
		end := i + 11 + int(binary.BigEndian.Uint16(b[i+9:]))
		if end > len(b) || !plainOptions(b[i+11:end]) {
			return q, false
		}
		i = end
		q.key.edns = true
	}
	if i != len(b) {
		return q, false // cut short, or bytes after the last record
	}
	n := copy(lower[:], q.qname)
	for j := range n {
		if c := lower[j]; 'A' <= c && c <= 'Z' {
			lower[j] = c + 'a' - 'A'
		}
	}
	q.key.name = string(lower[:n])
	return q, true
}

// plainOptions reports whether opts, an OPT record's data, holds only
// whole options of the kinds miekg/dns unpacks whatever their contents
// (NSID, COOKIE, PADDING; clients send cookies and padding): of any other
// kind, a malformed one makes the slow path drop the query, so the fast
// path leaves every other kind to it.
func plainOptions(opts []byte) bool {
	for len(opts) > 0 {
		if len(opts) < 4 {
			return false
		}
		code, n := binary.BigEndian.Uint16(opts), int(binary.BigEndian.Uint16(opts[2:]))
		if 4+n > len(opts) || code != dns.EDNS0NSID && code != dns.EDNS0COOKIE && code != dns.EDNS0PADDING {
			return false
		}
		opts = opts[4+n:]
	}
	return true
}

// fastAnswer answers the query b from src into out, and says whether it
// did: false leaves it to the slow path.
func (s *Server) fastAnswer(b []byte, src netip.Addr, out []byte) ([]byte, bool) {
	if s.fast == nil {
		return nil, false
	}
	var start time.Time
	if s.cfg.AnswerTime != nil {
		start = time.Now()
	}
	var lower [255]byte
	q, ok := parseFastQuery(b, &lower)
	if !ok {
		return nil, false
	}
	e := s.fast.get(q.key)
	if e == nil || e.size > q.udpSize || !policy.InPrefixes(s.cfg.Clients, src) {
		return nil, false
	}
	now := s.now()
	if e.policy != s.policy.Load() {
		s.fast.drop(q.key, e)
		return nil, false
	}
	age := now.Sub(e.stored)
	if age >= e.lifetime {
		s.fast.drop(q.key, e)
		return nil, false
	}
	if !e.open.IsZero() {
		// As long as the slow path would open them for: the TTL left,
		// bounded by MinTTL and MaxTTL. A TTL above MinTTL ends when the
		// answer's does, so every hit finds it; under MinTTL each answer
		// keeps the addresses open MinTTL from its own time, which only
		// the slow path does.
		need := min(max(e.lifetime-age, s.cfg.MinTTL), s.cfg.MaxTTL)
		if e.open.Before(now.Add(need)) {
			return nil, false
		}
	}
	if e.budget != nil && !s.budgets.admit(e.budget, e.name, now) {
		return nil, false
	}
	out = append(out[:0], e.wire...)
	binary.BigEndian.PutUint16(out, q.id)
	out[2] |= byte(q.flags >> 8) // RD
	out[3] |= byte(q.flags)      // CD
	copy(out[12:], q.qname)
	sec := uint32(age / time.Second)
	for i, at := range e.ttlAt {
		binary.BigEndian.PutUint32(out[at:], e.ttl0[i]-min(e.ttl0[i], sec))
	}
	s.held.record(e, now)
	if s.cfg.AnswerTime != nil { // answers only: a decline is timed by the slow path
		s.cfg.AnswerTime(time.Since(start))
	}
	return out, true
}

// fastInfo is what the slow path knows of an answer it gave from the
// cache (or the upstream) once its addresses are open, for the fast path.
type fastInfo struct {
	c      *cached
	p      *policy.Policy
	open   time.Time
	budget *policy.Entry
	name   string
}

// keepFast packs for the fast path the reply wire that the slow path sent
// for query, when it may serve it again (see fastCache).
func (s *Server) keepFast(query []byte, wire []byte, resp *dns.Msg, o *outcome) {
	f := o.fast
	if s.fast == nil || f == nil || resp.Compress || o.dropped != nil ||
		o.ev.Kind != journal.Allowed || o.ev.Reason != journal.ReasonAllowed {
		return
	}
	var lower [255]byte
	q, ok := parseFastQuery(query, &lower)
	if !ok || len(wire) < 12+len(q.qname)+4 {
		return
	}
	e := &fastEntry{wire: append([]byte(nil), wire...), size: max(resp.Len(), len(wire)), policy: f.p, stored: f.c.stored,
		lifetime: f.c.ttl, open: f.open, budget: f.budget, name: f.name, ev: o.ev}
	e.wire[2] &^= flagRD >> 8 // the query's own go in at each answer
	e.wire[3] &^= flagCD
	// The TTLs of the answer and authority records, in the order packed.
	at := 12 + len(q.qname) + 4
	for _, rr := range append(append([]dns.RR(nil), f.c.msg.Answer...), f.c.msg.Ns...) {
		end, ok := skipName(wire, at)
		if !ok || end+10 > len(wire) {
			return
		}
		e.ttlAt = append(e.ttlAt, end+4)
		e.ttl0 = append(e.ttl0, rr.Header().Ttl)
		at = end + 10 + int(binary.BigEndian.Uint16(wire[end+8:]))
	}
	if binary.BigEndian.Uint16(wire[6:])+binary.BigEndian.Uint16(wire[8:]) != uint16(len(e.ttlAt)) {
		return // truncated, or not the records cached
	}
	s.fast.put(q.key, e)
}

// skipName returns where the name at b[i:] ends, pointers followed by
// none (a compressed message is never kept).
func skipName(b []byte, i int) (int, bool) {
	for i < len(b) {
		l := int(b[i])
		switch {
		case l == 0:
			return i + 1, true
		case l > 63:
			return 0, false
		}
		i += 1 + l
	}
	return 0, false
}
