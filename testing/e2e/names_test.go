package e2e

import (
	"fmt"
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
