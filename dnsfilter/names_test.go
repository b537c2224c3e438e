package dnsfilter

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// budgetFixture serves n%d.allowed.test, m%d.allowed.test and n%d.other.test,
// on a clock the test moves.
func budgetFixture(t *testing.T, allow ...string) (*fixture, *time.Time) {
	t.Helper()
	f := newFixture(t, allow...)
	for i := range 300 {
		for _, zone := range []string{"n%d.allowed.test.", "m%d.allowed.test.", "n%d.other.test."} {
			name := fmt.Sprintf(zone, i)
			f.up.zone[name] = []string{name + " 300 IN A 198.18.2.10"}
		}
	}
	now := time.Unix(1_000_000, 0)
	f.srv.now = func() time.Time { return now }
	f.pins.now = f.srv.now
	return f, &now
}

// askBudget asks name and reports whether it was answered (true) or
// refused for the budget (false); anything else fails the test.
func (f *fixture) askBudget(t *testing.T, name string) bool {
	t.Helper()
	r := f.ask(t, name, dns.TypeA)
	switch {
	case r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1:
		return true
	case r.Rcode == dns.RcodeNameError && strings.Contains(ede(r), string(journal.ReasonNameBudget)):
		if ev := f.log.Last(); ev.Kind != journal.Refused || ev.Reason != journal.ReasonNameBudget || ev.Rule == "" {
			t.Errorf("%s: event %+v, want a refusal for %s naming the rule", name, ev, journal.ReasonNameBudget)
		}
		return false
	}
	t.Fatalf("%s: %s %v (EDE %q), want an answer or a budget refusal", name, dns.RcodeToString[r.Rcode], answers(r), ede(r))
	return false
}

func (f *fixture) askedUpstream(suffix string) int {
	n := 0
	for _, q := range f.up.questions() {
		if strings.HasSuffix(strings.Fields(q)[0], suffix) {
			n++
		}
	}
	return n
}

func TestNameBudgetCutsNewNames(t *testing.T) {
	f, now := budgetFixture(t, "*.allowed.test!names=5", "*.other.test")
	for i := range 20 {
		if got, want := f.askBudget(t, fmt.Sprintf("n%d.allowed.test.", i)), i < 5; got != want {
			t.Errorf("new name %d: answered %v, want %v", i, got, want)
		}
	}
	if n := f.askedUpstream(".allowed.test."); n != 5 {
		t.Errorf("upstream asked %d names under *.allowed.test, want the budget, 5", n)
	}
	// A name seen in its window keeps resolving, whatever its case.
	for _, name := range []string{"n0.allowed.test.", "N4.Allowed.TEST."} {
		if !f.askBudget(t, name) {
			t.Errorf("%s: a known name was refused", name)
		}
	}
	// Another entry has its own budget (the default).
	for i := range policy.DefaultMaxNewNames {
		if !f.askBudget(t, fmt.Sprintf("n%d.other.test.", i)) {
			t.Fatalf("n%d.other.test: refused within the other entry's budget", i)
		}
	}
	if f.askBudget(t, fmt.Sprintf("n%d.other.test.", policy.DefaultMaxNewNames)) {
		t.Error("the default budget let one name too many through")
	}
	// A minute after the first admissions, the budget has room again.
	*now = now.Add(budgetWindow - time.Millisecond)
	if f.askBudget(t, "n20.allowed.test.") {
		t.Error("a new name passed before the window moved")
	}
	*now = now.Add(time.Millisecond)
	for i := 21; i < 26; i++ {
		if !f.askBudget(t, fmt.Sprintf("n%d.allowed.test.", i)) {
			t.Errorf("n%d.allowed.test: refused a minute later", i)
		}
	}
	if f.askBudget(t, "n26.allowed.test.") {
		t.Error("more than the budget in the second minute")
	}
	// After nameMemory a name is new again.
	*now = now.Add(nameMemory)
	if !f.askBudget(t, "n0.allowed.test.") {
		t.Error("n0: refused although the budget has room")
	}
	for i := 1; i < 5; i++ {
		f.askBudget(t, fmt.Sprintf("n%d.allowed.test.", i))
	}
	if f.askBudget(t, "n4.allowed.test.") == f.askBudget(t, "n5.allowed.test.") {
		t.Error("a forgotten name costs budget like a new one: want n4 answered (readmitted), n5 refused")
	}
}

func TestNameBudgetOff(t *testing.T) {
	f, _ := budgetFixture(t, "*.allowed.test!names=0")
	for i := range 300 {
		if !f.askBudget(t, fmt.Sprintf("n%d.allowed.test.", i)) {
			t.Fatalf("n%d: refused with the budget off", i)
		}
	}
}

func TestNameBudgetMemoryBounded(t *testing.T) {
	const limit = 3
	f, now := budgetFixture(t, fmt.Sprintf("*.allowed.test!names=%d", limit))
	n := 0
	for minute := range 60 {
		for range limit + 2 {
			f.askBudget(t, fmt.Sprintf("m%d.allowed.test.", n))
			n++
		}
		if held, most := f.srv.budgets.held("*.allowed.test"), 2*limit*int(nameMemory/budgetWindow); held > most {
			t.Fatalf("minute %d: %d names held, want at most %d", minute, held, most)
		}
		*now = now.Add(budgetWindow)
	}
	if n := f.askedUpstream(".allowed.test."); n != 60*limit {
		t.Errorf("upstream asked %d names in an hour, want %d", n, 60*limit)
	}
}
