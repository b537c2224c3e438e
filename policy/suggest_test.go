package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// loadSuggestion parses a suggestion as `sluice check` does (ParseFile,
// New, Lint) and returns its entries as Entry.String writes them.
func loadSuggestion(t *testing.T, data []byte) ([]string, []Warning) {
	t.Helper()
	entries, err := ParseFile("suggested.yaml", data)
	if err != nil {
		t.Fatalf("the suggestion does not parse: %v\n%s", err, data)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatalf("the suggestion is no policy: %v\n%s", err, data)
	}
	var out []string
	for _, e := range p.Entries() {
		out = append(out, e.String())
	}
	return out, Lint(p)
}

// dns is a DNS question for name, answered with addrs.
func dns(name string, addrs ...string) Seen {
	s := Seen{Name: name}
	for _, a := range addrs {
		s.Answer = append(s.Answer, netip.MustParseAddr(a))
	}
	return s
}

// conn is a connection to name on port (an SNI, a Host).
func conn(name string, port uint16) Seen { return Seen{Name: name, Port: port, Proto: "tcp"} }

// flow is a flow without a name to addr:port.
func flow(proto, addrPort string) Seen {
	ap := netip.MustParseAddrPort(addrPort)
	return Seen{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

// names are n names under base: n1.base, n2.base, ...
func names(n int, base string) []Seen {
	var out []Seen
	for i := range n {
		out = append(out, conn(fmt.Sprintf("n%d.%s", i+1, base), 443))
	}
	return out
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		name       string
		seen       []Seen
		opts       SuggestOptions
		want       []string // the entries, as Entry.String writes them, in Entries' order
		notes      []string // each in some note
		yaml       []string // each in the file
		wantNoYAML []string // none in the file
	}{
		{
			name: "names grouped, ports merged, a DNS question alone gets the default ports",
			seen: []Seen{dns("API.example.com."), conn("api.example.com", 443), conn("api.example.com", 8443),
				conn("api.example.com", 443), dns("dl.example.com"), conn("svc.example.org", 22)},
			want: []string{"api.example.com ports 443,8443", "dl.example.com ports 80,443", "svc.example.org ports 22"},
		},
		{
			name: "more siblings than the threshold make a wildcard",
			seen: slices.Concat(names(6, "pkg.example.com"), []Seen{conn("n1.pkg.example.com", 8443), conn("example.com", 443)}),
			opts: SuggestOptions{WildcardThreshold: 5},
			want: []string{"*.pkg.example.com ports 443,8443", "example.com ports 443"},
			yaml: []string{"# covers the 6 names seen under pkg.example.com: n1.pkg.example.com, n2.pkg.example.com, n3.pkg.example.com, n4.pkg.example.com, n5.pkg.example.com and 1 more"},
		},
		{
			name: "as many siblings as the threshold stay names",
			seen: names(5, "pkg.example.com"),
			opts: SuggestOptions{WildcardThreshold: 5},
			want: []string{"n1.pkg.example.com ports 443", "n2.pkg.example.com ports 443", "n3.pkg.example.com ports 443",
				"n4.pkg.example.com ports 443", "n5.pkg.example.com ports 443"},
		},
		{
			name: "threshold 0: no wildcards",
			seen: names(3, "pkg.example.com"),
			want: []string{"n1.pkg.example.com ports 443", "n2.pkg.example.com ports 443", "n3.pkg.example.com ports 443"},
		},
		{
			name: "an outer wildcard takes the names of an inner base",
			seen: slices.Concat(names(3, "a.example.com"), names(3, "example.com")),
			opts: SuggestOptions{WildcardThreshold: 2},
			want: []string{"*.example.com ports 443"},
			yaml: []string{"covers the 6 names seen under example.com"},
		},
		{
			name:  "never over a public suffix",
			seen:  slices.Concat(names(3, "github.io"), names(3, "co.uk"), names(3, "test")),
			opts:  SuggestOptions{WildcardThreshold: 2},
			want:  []string{"n1.co.uk ports 443", "n1.github.io ports 443", "n1.test ports 443", "n2.co.uk ports 443", "n2.github.io ports 443", "n2.test ports 443", "n3.co.uk ports 443", "n3.github.io ports 443", "n3.test ports 443"},
			notes: []string{"no wildcard over github.io (3 names seen under it): github.io is a public suffix", "no wildcard over co.uk", "no wildcard over test"},
		},
		{
			name: "never over a multi-tenant suffix, nor over a parent of one",
			seen: slices.Concat(names(3, "amazonaws.com"), names(3, "run.app"), names(3, "windows.net")),
			opts: SuggestOptions{WildcardThreshold: 2},
			want: []string{"n1.amazonaws.com ports 443", "n1.run.app ports 443", "n1.windows.net ports 443", "n2.amazonaws.com ports 443", "n2.run.app ports 443", "n2.windows.net ports 443", "n3.amazonaws.com ports 443", "n3.run.app ports 443", "n3.windows.net ports 443"},
			notes: []string{"no wildcard over amazonaws.com (3 names seen under it): sluice check would warn (multi-tenant)",
				"no wildcard over run.app", "no wildcard over windows.net"},
		},
		{
			name: "never over a git host, a local name or a DoH provider",
			seen: slices.Concat(names(3, "github.com"), names(3, "lan"), names(3, "cloudflare-dns.com")),
			opts: SuggestOptions{WildcardThreshold: 2},
			want: []string{"n1.cloudflare-dns.com ports 443", "n1.github.com ports 443", "n1.lan ports 443", "n2.cloudflare-dns.com ports 443",
				"n2.github.com ports 443", "n2.lan ports 443", "n3.cloudflare-dns.com ports 443", "n3.github.com ports 443", "n3.lan ports 443"},
			notes: []string{"no wildcard over github.com (3 names seen under it): sluice check would warn (git-push-risk)", "no wildcard over lan (3 names seen under it): lan is a local name", "no wildcard over cloudflare-dns.com (3 names seen under it): sluice check would warn (doh)"},
		},
		{
			name: "a name with git or http rules is left out, and keeps a wildcard off its base",
			seen: slices.Concat(names(3, "example.com"), []Seen{{Name: "git.example.com", Inspected: true}, conn("git.example.com", 443),
				{Name: "api.example.com", Port: 443, Proto: "tcp", Rule: "agent.yaml:9 api.example.com ports 80,443 http [GET] [/x]"}}),
			opts: SuggestOptions{WildcardThreshold: 2},
			want: []string{"n1.example.com ports 443", "n2.example.com ports 443", "n3.example.com ports 443"},
			notes: []string{"no wildcard over example.com (3 names seen under it): api.example.com under it has git or http rules",
				"git.example.com: left out, its requests were checked by git or http rules", "api.example.com: left out"},
			yaml: []string{"# git.example.com: left out; the policy in force checks its requests with git or http"},
		},
		{
			name: "flows without a name are cidr entries; to an answered address, the name's",
			seen: []Seen{flow("tcp", "198.51.100.7:22"), flow("tcp", "198.51.100.7:2222"), flow("tcp", "[2001:db8::7]:22"),
				dns("api.example.com", "192.0.2.10", "2001:db8::10"), conn("api.example.com", 443), flow("tcp", "192.0.2.10:8443"),
				flow("tcp", "[2001:db8::10]:9000")},
			want: []string{"api.example.com ports 443,8443,9000", "198.51.100.7/32 ports 22,2222", "2001:db8::7/128 ports 22"},
			yaml: []string{"  # reached without a name\n  - cidr: 198.51.100.7/32\n    ports: [22, 2222]\n"},
		},
		{
			name: "an address answered for two names is the last one's before the flow, else the first's after",
			seen: []Seen{flow("tcp", "192.0.2.10:22"), dns("a.example.com", "192.0.2.10"), conn("a.example.com", 443), dns("b.example.com", "192.0.2.10"),
				conn("b.example.com", 443), flow("tcp", "192.0.2.10:8443")},
			want: []string{"a.example.com ports 22,443", "b.example.com ports 443,8443"},
		},
		{
			name:  "what a policy cannot open is a note",
			seen:  []Seen{flow("udp", "192.0.2.66:53"), flow("icmp", "192.0.2.66:0"), conn("ok.example.com", 443)},
			want:  []string{"ok.example.com ports 443"},
			notes: []string{"flows a policy cannot open (it opens TCP ports only): icmp 192.0.2.66:0, udp 192.0.2.66:53"},
		},
		{
			name: "what is no host name is a note, never an entry",
			seen: []Seen{conn("192.0.2.9", 80), conn("*.evil.example", 443), conn("a..b", 443), conn("evil\n.example", 443),
				conn("3.0.0.0/8", 443), conn("ok.example.com", 443), conn("a..b", 80), conn("[::1]", 80)},
			want:  []string{"ok.example.com ports 443"},
			notes: []string{`left out, not host names: "*.evil.example", "192.0.2.9", "3.0.0.0/8", "a..b", "evil\n.example", and 1 more`},
		},
		{
			name: "the rule that allowed a name gives its ports, which flows through the firewall do not journal",
			seen: []Seen{{Name: "svc.example.com", Answer: []netip.Addr{netip.MustParseAddr("192.0.2.5")}, Rule: "agent.yaml:3 svc.example.com ports 22,443"},
				{Name: "x.pkg.example.com", Rule: "--allow-private *.pkg.example.com:8080 *.pkg.example.com ports 8080 private max_new_names 100"},
				{Addr: netip.MustParseAddr("198.51.100.9"), Port: 443, Proto: "tcp", Rule: "my ports 1.yaml:9 198.51.100.0/24 ports 443,5432"}},
			want: []string{"svc.example.com ports 22,443", "x.pkg.example.com ports 8080", "198.51.100.9/32 ports 443,5432"},
		},
		{
			name:  "a name answered with private addresses is listed without private: true",
			seen:  []Seen{{Name: "nas.lan", Dropped: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, conn("nas.lan", 5000)},
			want:  []string{"nas.lan ports 5000"},
			notes: []string{"nas.lan: answered with private addresses (10.0.0.1); listed without private: true (--allow-private adds it)"},
			yaml:  []string{"  # answered with private addresses (10.0.0.1), which it reaches only with 'private: true'\n  - host: nas.lan\n"},
		},
		{
			name: "with AllowPrivate it gets private: true",
			seen: []Seen{{Name: "nas.lan", Dropped: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, dns("repo.corp", "192.168.1.5")},
			opts: SuggestOptions{AllowPrivate: true},
			want: []string{"nas.lan ports 80,443 private", "repo.corp ports 80,443 private"},
		},
		{
			name: "a lab address is no private one",
			seen: []Seen{dns("lab.example.com", "198.18.2.10"), {Name: "gw.example.com", Dropped: []netip.Addr{netip.MustParseAddr("198.18.0.1")}}},
			want: []string{"gw.example.com ports 80,443", "lab.example.com ports 80,443"},
		},
		{
			name:  "loopback and link-local are never opened, AllowPrivate or not",
			seen:  []Seen{{Name: "meta.example.com", Dropped: []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("::ffff:169.254.169.254")}}, flow("tcp", "127.0.0.1:22"), flow("tcp", "[fe80::1]:22")},
			opts:  SuggestOptions{AllowPrivate: true},
			want:  []string{"meta.example.com ports 80,443"},
			notes: []string{"meta.example.com: answered with 169.254.169.254, ::ffff:169.254.169.254; listed without private: true", "left out, 127.0.0.1 is an address a suggestion never opens", "left out, fe80::1 is an address"},
			yaml:  []string{"# - cidr: 127.0.0.1/32"},
		},
		{
			name:  "a private address without a name is a comment, or with AllowPrivate an entry",
			seen:  []Seen{flow("tcp", "10.0.0.5:22")},
			want:  nil,
			notes: []string{"left out, 10.0.0.5 is a private address"},
			yaml:  []string{"allow: []\n", "  # - cidr: 10.0.0.5/32\n  #   ports: [22]\n"},
		},
		{
			name: "a private address without a name, AllowPrivate",
			seen: []Seen{flow("tcp", "10.0.0.5:22")},
			opts: SuggestOptions{AllowPrivate: true},
			want: []string{"10.0.0.5/32 ports 22 private"},
		},
		{
			// max_new_names is a minute's budget, and 150 names over the
			// window say nothing of a minute: the default stays, and the
			// comment says so (a larger budget is a wider tunnel).
			name:       "a wildcard over many names keeps the default budget",
			seen:       names(150, "cdn.example.com"),
			opts:       SuggestOptions{WildcardThreshold: 5},
			want:       []string{"*.cdn.example.com ports 443"},
			yaml:       []string{"150 names over the window, more than the default budget of 100 new names a minute"},
			wantNoYAML: []string{"max_new_names:"},
		},
		{
			name:       "a header, kept on its lines",
			seen:       []Seen{conn("ok.example.com", 443)},
			opts:       SuggestOptions{Header: []string{"made from journal.db", "agent evil\nversion: 2"}},
			want:       []string{"ok.example.com ports 443"},
			yaml:       []string{"# made from journal.db\n# agent evil?version: 2\n"},
			wantNoYAML: []string{"\nversion: 2"},
		},
		{
			name: "nothing seen: an empty policy",
			want: nil,
			yaml: []string{"version: 1\nallow: []\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, notes := Suggest(tt.seen, tt.opts)
			got, warnings := loadSuggestion(t, data)
			if !slices.Equal(got, tt.want) {
				t.Errorf("entries:\n got %q\nwant %q\n%s", got, tt.want, data)
			}
			for _, w := range warnings {
				if strings.HasPrefix(w.Msg, "*") {
					t.Errorf("a suggested wildcard has a warning: %s", w)
				}
			}
			for _, want := range tt.notes {
				if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, want) }) {
					t.Errorf("no note has %q: %q", want, notes)
				}
			}
			if len(tt.notes) == 0 && len(notes) > 0 {
				t.Errorf("notes %q, want none", notes)
			}
			for _, want := range tt.yaml {
				if !strings.Contains(string(data), want) {
					t.Errorf("the file lacks %q:\n%s", want, data)
				}
			}
			for _, bad := range tt.wantNoYAML {
				if strings.Contains(string(data), bad) {
					t.Errorf("the file has %q:\n%s", bad, data)
				}
			}
			if again, _ := Suggest(tt.seen, tt.opts); string(again) != string(data) {
				t.Errorf("a second suggestion from the same records differs:\n%s\n---\n%s", data, again)
			}
		})
	}
}

// TestSuggestDeterministic: the order names were seen in does not change
// the file (only the order of answers and flows, which says whose a flow
// was, does).
func TestSuggestDeterministic(t *testing.T) {
	seen := slices.Concat(names(8, "pkg.example.com"), names(2, "example.org"), []Seen{
		conn("api.example.com", 443), conn("api.example.com", 8443), dns("dl.example.com"),
		flow("tcp", "198.51.100.7:22"), flow("tcp", "[2001:db8::7]:22"), flow("tcp", "192.0.2.1:22"), flow("udp", "192.0.2.1:53"),
		{Name: "nas.lan", Dropped: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}},
	})
	opts := SuggestOptions{WildcardThreshold: 5}
	want, wantNotes := Suggest(seen, opts)
	for i := range 20 {
		shuffled := slices.Clone(seen)
		for j := range shuffled {
			k := (j*7 + i*13) % len(shuffled)
			shuffled[j], shuffled[k] = shuffled[k], shuffled[j]
		}
		got, notes := Suggest(shuffled, opts)
		if string(got) != string(want) || !slices.Equal(notes, wantNotes) {
			t.Fatalf("order %d:\n%s\n%q\nwant\n%s\n%q", i, got, notes, want, wantNotes)
		}
	}
	loadSuggestion(t, want)
}

// TestSuggestExample shows a whole file: the layout a person reviews.
func TestSuggestExample(t *testing.T) {
	seen := slices.Concat(names(6, "pkg.example.com"), []Seen{
		dns("api.example.com", "192.0.2.10"), conn("api.example.com", 443), flow("tcp", "192.0.2.10:8443"),
		flow("tcp", "198.51.100.7:22"),
		{Name: "nas.lan", Dropped: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
	})
	data, _ := Suggest(seen, SuggestOptions{WildcardThreshold: 5, Header: []string{"sluice policy suggest: agent sh"}})
	want := `# sluice policy suggest: agent sh
# It allows what was seen and no more, but that a wildcard allows every name
# under it. Review it, then check it: sluice check FILE.
version: 1
allow:
  - host: api.example.com
    ports: [443, 8443]
  # answered with private addresses (10.0.0.1), which it reaches only with 'private: true'
  - host: nas.lan
    ports: [80, 443]
  # covers the 6 names seen under pkg.example.com: n1.pkg.example.com, n2.pkg.example.com, n3.pkg.example.com, n4.pkg.example.com, n5.pkg.example.com and 1 more
  - host: "*.pkg.example.com"
    ports: [443]
  # reached without a name
  - cidr: 198.51.100.7/32
    ports: [22]
`
	if string(data) != want {
		t.Errorf("got\n%s\nwant\n%s", data, want)
	}
}

// TestRuleOf: the ports of Decision.Rule's text, whatever the entry came
// from, and whether it has git or http rules.
func TestRuleOf(t *testing.T) {
	file, err := ParseFile("my ports 1.yaml", []byte(`version: 1
allow:
  - host: a.example.com
    ports: [22, 443]
  - host: '*.lan'
    ports: [5000]
    private: true
  - cidr: 198.51.100.0/24
    ports: [5432]
  - host: git.example.com
    git:
      fetch: ["*"]
  - host: api.example.com
    private: true
    http:
      - methods: [GET]
        paths: ["/x"]
`))
	if err != nil {
		t.Fatal(err)
	}
	flag, err := ParseAllow("b.example.com:8080,9090", true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(append(file, flag))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d         Decision
		want      []uint16
		inspected bool
	}{
		{p.MatchName("a.example.com"), []uint16{22, 443}, false},
		{p.MatchName("nas.lan"), []uint16{5000}, false},
		{p.MatchAddr(netip.MustParseAddr("198.51.100.7"), 5432), []uint16{5432}, false},
		{p.MatchName("b.example.com"), []uint16{8080, 9090}, false},
		{p.MatchName("git.example.com"), []uint16{80, 443}, true},
		{p.MatchName("api.example.com"), []uint16{80, 443}, true},
		{p.MatchName("other.example.com"), nil, false},
	} {
		got, inspected := ruleOf(tc.d.Rule())
		if !slices.Equal(got, tc.want) || inspected != tc.inspected {
			t.Errorf("ruleOf(%q) = %v, %v; want %v, %v", tc.d.Rule(), got, inspected, tc.want, tc.inspected)
		}
	}
}

// FuzzSuggest: whatever names and addresses an agent sent, the
// suggestion loads as a policy, and it allows each valid name it saw.
func FuzzSuggest(f *testing.F) {
	f.Add("api.example.com", "n1.pkg.example.com", "192.0.2.1", uint16(443), true)
	f.Add("*.evil", "a\nversion: 2", "10.0.0.1", uint16(22), false)
	f.Add("true", "1.5", "::1", uint16(0), true)
	f.Fuzz(func(t *testing.T, a, b, addr string, port uint16, private bool) {
		var seen []Seen
		for i, n := range []string{a, b, a + "." + b, "x." + b, "y." + b} {
			seen = append(seen, Seen{Name: n, Port: port, Proto: "tcp"})
			if ip, err := netip.ParseAddr(addr); err == nil {
				seen = append(seen, Seen{Name: n, Dropped: []netip.Addr{ip}}, Seen{Addr: ip, Port: port + uint16(i), Proto: "tcp"})
			}
		}
		data, _ := Suggest(seen, SuggestOptions{WildcardThreshold: 1, AllowPrivate: private, Header: []string{a, b}})
		entries, err := ParseFile("f.yaml", data)
		if err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
		p, err := New(entries)
		if err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
		for _, s := range seen {
			if s.Name == "" {
				continue
			}
			if c, err := CanonicalName(s.Name); err == nil && !p.MatchName(c).Allow {
				t.Fatalf("%s was seen and is not allowed:\n%s", c, data)
			}
		}
	})
}
