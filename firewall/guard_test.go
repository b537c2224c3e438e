package firewall

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestGuardInTheKernel: a guard for the same plan keeps its chain and
// rules and only changes its links; a guard for another plan is
// replaced; with nothing switched on the table goes.
func TestGuardInTheKernel(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-gd")
	err := ns.Do(func() error {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		defer c.CloseLasting()
		tbl := &nftables.Table{Name: GuardTable, Family: nftables.TableFamilyINet}
		// A set of nobody's in the guard's table shows whether the table
		// was replaced (it goes with it) or kept.
		marker := &nftables.Set{Table: tbl, Name: "marker", KeyType: nftables.TypeInetService}
		mark := func() {
			if err := c.AddSet(marker, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		kept := func() bool { _, err := c.GetSetByName(tbl, "marker"); return err == nil }
		links := func() string {
			set, err := c.GetSetByName(tbl, setAgents)
			if err != nil {
				t.Fatal(err)
			}
			elems, err := c.GetSetElements(set)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range elems {
				names = append(names, strings.TrimRight(string(e.Key), "\x00"))
			}
			return strings.Join(names, " ")
		}
		both := ForwardingPlan{Enable4: true, Enable6: true}
		if err := SetGuard(both, []string{"sla0", "slb0"}); err != nil {
			return err
		}
		if !guardIs(c, tbl, both) || guardIs(c, tbl, ForwardingPlan{Enable4: true}) {
			t.Error("guardIs does not recognise the guard it made, or takes it for another plan's")
		}
		mark()
		if err := SetGuard(both, []string{"sla0", "slb0", "slc0"}); err != nil {
			return err
		}
		if !kept() {
			t.Error("a change of links alone replaced the guard's table")
		}
		if got := links(); !strings.Contains(got, "slc0") || strings.Count(got, "sl") != 3 {
			t.Errorf("links %q, want sla0 slb0 slc0", got)
		}
		if err := SetGuard(ForwardingPlan{Enable4: true}, []string{"slb0"}); err != nil {
			return err
		}
		if kept() {
			t.Error("a guard for another plan kept the table it had")
		}
		if !guardIs(c, tbl, ForwardingPlan{Enable4: true}) || links() != "slb0" {
			t.Errorf("another plan: guard for IPv4 only %v, links %q", guardIs(c, tbl, ForwardingPlan{Enable4: true}), links())
		}
		if err := SetGuard(ForwardingPlan{}, nil); err != nil {
			return err
		}
		if tables, _ := c.ListTables(); len(tables) != 0 {
			t.Errorf("tables left with nothing switched on: %v", tables)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSharedConnDropsAFailedTransaction: a transaction that fails on the
// shared connection leaves nothing queued for the next one (the
// connection is replaced): here, a table queued and never flushed.
func TestSharedConnDropsAFailedTransaction(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"-sc")
	err := ns.Do(func() error {
		// This thread's namespace stands for the process's own.
		home := oneShot.home
		oneShot.mu.Lock()
		oneShot.home, oneShot.conn = netnsInode(), nil
		oneShot.mu.Unlock()
		defer func() {
			oneShot.mu.Lock()
			if oneShot.conn != nil {
				_ = oneShot.conn.CloseLasting()
			}
			oneShot.home, oneShot.conn = home, nil
			oneShot.mu.Unlock()
		}()
		stray := &nftables.Table{Name: "stray", Family: nftables.TableFamilyINet}
		failed := withConn(func(c *nftables.Conn) error {
			c.AddTable(stray)
			return errors.New("failed before its flush")
		})
		if failed == nil {
			t.Fatal("the failure was not returned")
		}
		if _, err := RemoveTable("absent"); err != nil { // a transaction of its own
			return err
		}
		if err := SetGuard(ForwardingPlan{Enable4: true}, []string{"a-name-far-too-long"}); err == nil {
			t.Error("a bad link name was accepted")
		}
		if err := SetGuard(ForwardingPlan{Enable4: true}, []string{"sla0"}); err != nil {
			return err
		}
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		var names []string
		for _, tb := range tables {
			names = append(names, tb.Name)
		}
		if strings.Join(names, " ") != GuardTable {
			t.Errorf("tables %v, want only the guard: a failed transaction's messages went out with a later one", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
