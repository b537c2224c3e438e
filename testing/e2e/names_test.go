package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestNameBudgetUnderWildcard: a burst of unique names under an allowed
// wildcard is cut at the entry's budget of new names, and the names past
// it never reach the upstream; a name already seen keeps resolving (and
// connecting), and a name of another entry is unaffected.
func TestNameBudgetUnderWildcard(t *testing.T) {
	const budget, burst = 20, 60
	w := newWorld(t)
	pol := policyFile(t, fmt.Sprintf("  - host: \"*.synth.test\"\n    ports: [81]\n    max_new_names: %d\n  - host: \"*.allowed.test\"\n", budget))
	r := w.run(t, []string{"--policy", pol}, prelude+fmt.Sprintf(`
ok=0; nx=0; other=0
for i in $(seq 1 %d); do
  case "$(dig +time=2 +tries=1 n$i.synth.test | grep -o 'status: [A-Z]*')" in
    "status: NOERROR") ok=$((ok+1)) ;;
    "status: NXDOMAIN") nx=$((nx+1)) ;;
    *) other=$((other+1)) ;;
  esac
done
echo burst_ok=$ok
echo burst_nx=$nx
echo burst_other=$other
echo seen=$(dig +time=2 +tries=1 n1.synth.test | grep -o 'status: [A-Z]*')
echo seen_addrs=$(dig +short n1.synth.test | wc -l)
try seen_connect nc -z -w 2 n1.synth.test 81
echo ede=$(dig +time=2 +tries=1 n%d.synth.test | grep -c 'name_budget_exceeded')
echo other=$(dig +time=2 +tries=1 www.allowed.test | grep -o 'status: [A-Z]*')
`, burst, burst+1))
	expect(t, r, map[string]string{
		"burst_ok": fmt.Sprint(budget), "burst_nx": fmt.Sprint(burst - budget), "burst_other": "0",
		"seen": "status: NOERROR", "seen_addrs": "1", "seen_connect": ok, "ede": "1", "other": "status: NOERROR",
	})
	names := map[string]bool{}
	for _, q := range w.auth.AskedAbout("synth.test") {
		names[strings.Fields(q)[0]] = true
	}
	if len(names) != budget {
		t.Errorf("the upstream saw %d distinct names under synth.test, want the budget, %d: %v", len(names), budget, names)
	}
	for i := budget + 1; i <= burst+1; i++ {
		if n := fmt.Sprintf("n%d.synth.test", i); names[n] {
			t.Errorf("%s, past the budget, reached the upstream", n)
		}
	}
	if !strings.Contains(r.stderr, "reason=name_budget_exceeded") {
		t.Errorf("budget refusals not logged with their reason")
	}
}

// TestFullSetGivesServfail: when the kernel refuses a set update (the
// agent's set is full), the answer is SERVFAIL, never the address, and the
// address stays closed.
func TestFullSetGivesServfail(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.runPaused(t, []string{"--allow", "allowed.test", "--allow", "chain.allowed.test"}, prelude+`
echo before=$(dig +time=2 +tries=1 allowed.test | grep -o 'status: [A-Z]*')
try before_connect `+c+` https://allowed.test/
echo filled=$(pause)
echo full=$(dig +time=2 +tries=1 chain.allowed.test | grep -o 'status: [A-Z]*')
echo full_addrs=$(dig +short +time=2 +tries=1 chain.allowed.test | grep -c '^[0-9]')
try full_curl `+c+` https://chain.allowed.test/
try full_direct `+c+` --resolve chain.allowed.test:443:`+allowedAddr2+` https://chain.allowed.test/
`, w.fillAllowSet)
	expect(t, r, map[string]string{"before": "status: NOERROR", "before_connect": ok, "filled": "ok",
		"full": "status: SERVFAIL", "full_addrs": "0", "full_curl": curlNoResolve, "full_direct": curlRefused})
	if !strings.Contains(r.stderr, "reason=set_update_failed") {
		t.Errorf("the refused set update was not journaled")
	}
}

// fillAllowSet fills the agent's IPv4 allow set to its size with elements
// of its own (addresses in 100.64.0.0/10, which no answer can carry).
func (w *world) fillAllowSet() (string, error) {
	out, err := exec.Command("ip", "netns", "exec", w.gw.Name, "nft", "-j", "list", "set", "inet", agentTable, "allow4").Output()
	if err != nil {
		return "", fmt.Errorf("list set: %v", err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Size int   `json:"size"`
				Elem []any `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return "", err
	}
	size, have := 0, 0
	for _, o := range doc.Nftables {
		if o.Set != nil {
			size, have = o.Set.Size, len(o.Set.Elem)
		}
	}
	if size == 0 || have == 0 {
		return "", fmt.Errorf("set allow4 of size %d with %d elements: want a bounded set the run has used", size, have)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "add element inet %s allow4 {", agentTable)
	for i := range size - have {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " 100.64.%d.%d . 1 timeout 1h", i>>8, i&0xff)
	}
	b.WriteString(" }\n")
	cmd := exec.Command("ip", "netns", "exec", w.gw.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("fill set: %v: %s", err, out)
	}
	return "ok", nil
}

// TestExpiredPinRefused: once an answer's time is up (--max-ttl), the
// address is no longer pinned to the name: a TLS connection to it is
// refused as address_not_pinned until the name is resolved again.
func TestExpiredPinRefused(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	r := w.run(t, []string{"--allow", "allowed.test", "--min-ttl", "1s", "--max-ttl", "2s"}, prelude+`
try fresh `+c+` -4 https://allowed.test/
sleep 3
try expired `+c+` --resolve allowed.test:443:`+allowedAddr+` https://allowed.test/
try again `+c+` -4 https://allowed.test/
`)
	expect(t, r, map[string]string{"fresh": ok, "expired": curlRefused, "again": ok})
	if !strings.Contains(r.stderr, "reason=address_not_pinned") {
		t.Errorf("the expired pin's refusal was not journaled as address_not_pinned")
	}
}
