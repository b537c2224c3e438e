package tlsinspect

import (
	"bufio"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

type fakePins map[string][]netip.Addr

func (f fakePins) Pinned(name string, addr netip.Addr) bool {
	for _, a := range f[name] {
		if a == addr {
			return true
		}
	}
	return false
}

func testProxy(t testing.TB, allow ...string) *Proxy {
	t.Helper()
	var entries []policy.Entry
	for _, a := range allow {
		e, err := policy.ParseAllowFlag(a)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	p, err := policy.New(entries)
	if err != nil {
		t.Fatal(err)
	}
	pins := fakePins{
		"allowed.test":       {netip.MustParseAddr("198.18.2.10")},
		"cust-evil.cdn.test": {netip.MustParseAddr("198.18.2.10")},
		"other.test":         {netip.MustParseAddr("198.18.2.11")},
	}
	px, err := New(Config{Pins: pins, Journal: journal.Discard{}}, p)
	if err != nil {
		t.Fatal(err)
	}
	return px
}

func TestDecideName(t *testing.T) {
	px := testProxy(t, "allowed.test:443", "other.test")
	shared := netip.MustParseAddrPort("198.18.2.10:443")
	tests := []struct {
		sni  string
		dst  netip.AddrPort
		want journal.Reason
	}{
		{"allowed.test", shared, ""},
		{"ALLOWED.Test", shared, ""},
		{"", shared, journal.ReasonNoSNI},
		{"198.18.2.10", shared, journal.ReasonIPLiteralSNI},
		{"2001:db8::1", shared, journal.ReasonIPLiteralSNI},
		{"evil.test\x00allowed.test", shared, journal.ReasonInvalidSNI},
		{"cust-evil.cdn.test", shared, journal.ReasonSNINotAllowed},                           // unlisted name on a shared address
		{"allowed.test", netip.MustParseAddrPort("192.0.2.66:443"), journal.ReasonNotPinned},  // spoofed destination
		{"allowed.test", netip.MustParseAddrPort("198.18.2.11:443"), journal.ReasonNotPinned}, // another allowed name's address
		{"allowed.test", netip.MustParseAddrPort("198.18.2.10:8443"), journal.ReasonPortNotAllowed},
		{"other.test", netip.MustParseAddrPort("198.18.2.11:443"), ""},
	}
	for _, tt := range tests {
		var ev journal.Event
		got, _ := px.decideName(tt.sni, tt.dst, &ev)
		if got != tt.want {
			t.Errorf("decideName(%q, %s) = %q, want %q", tt.sni, tt.dst, got, tt.want)
		}
		if ev.PolicyHash == "" {
			t.Errorf("decision without a policy hash")
		}
	}
}

func TestRequestHost(t *testing.T) {
	tests := []struct {
		head     string
		wantHost string
		want     journal.Reason
	}{
		{"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "allowed.test", ""},
		{"GET / HTTP/1.1\r\nHost: allowed.test:80\r\n\r\n", "allowed.test", ""},
		{"GET / HTTP/1.1\r\nHost: allowed.test:22\r\n\r\n", "allowed.test:22", journal.ReasonConflictingHost},
		{"GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "evil.test", ""}, // the URI wins, and is what gets checked
		{"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", "evil.test:443", journal.ReasonConnect},
		{"GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n", "allowed.test", journal.ReasonH2C},
		{"GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket, H2C\r\n\r\n", "allowed.test", journal.ReasonH2C},
		{"GET / HTTP/1.0\r\n\r\n", "", journal.ReasonNoHost},
	}
	for _, tt := range tests {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tt.head)))
		if err != nil {
			t.Errorf("%q: %v", tt.head, err)
			continue
		}
		host, got := requestHost(req, 80)
		if got != tt.want || (tt.want == "" && host != tt.wantHost) {
			t.Errorf("%q: host %q reason %q, want %q %q", tt.head, host, got, tt.wantHost, tt.want)
		}
	}
	// Go's reader refuses these before requestHost sees them.
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err == nil {
			if _, reason := requestHost(req, 80); reason == "" {
				t.Errorf("%q passed", head)
			}
		}
	}
}

// FuzzRequestHead: request heads are the agent's bytes; a head that passes
// must name one canonical, allowed-looking host and nothing else.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	f.Add("GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	f.Add("CONNECT x:1 HTTP/1.1\r\n\r\n")
	px := testProxy(f, "allowed.test")
	f.Fuzz(func(t *testing.T, head string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			return
		}
		host, reason := requestHost(req, 80)
		if reason != "" {
			return
		}
		var ev journal.Event
		if r, _ := px.decideName(host, netip.MustParseAddrPort("198.18.2.10:80"), &ev); r == "" && ev.Name != "allowed.test" {
			t.Fatalf("head %q passed as %q", head, ev.Name)
		}
	})
}

// TestInternalDecodesEmbeddedIPv4: the NAT64 and 6to4 forms of the
// gateway's address and of loopback are as internal as the addresses.
func TestInternalDecodesEmbeddedIPv4(t *testing.T) {
	px, err := New(Config{Pins: fakePins{}, Journal: journal.Discard{}, Internal: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/32")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"198.18.0.1", true},
		{"64:ff9b::c612:1", true},   // NAT64 form of 198.18.0.1
		{"2002:c612:1::1", true},    // 6to4 form of 198.18.0.1
		{"64:ff9b::7f00:1", true},   // NAT64 form of 127.0.0.1
		{"2002:7f00:1::", true},     // 6to4 form of 127.0.0.1
		{"::ffff:198.18.0.1", true}, // mapped
		{"198.18.2.10", false},
		{"64:ff9b::c612:20a", false}, // NAT64 form of 198.18.2.10
		{"2001:db8::1", false},
	} {
		if got := px.internal(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("internal(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
