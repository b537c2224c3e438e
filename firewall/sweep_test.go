package firewall

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// TestFlowSweeperSharesWalks: calls made while a walk runs wait for the
// next one, which serves them all; each counts its own matches.
func TestFlowSweeperSharesWalks(t *testing.T) {
	table := []flow{{src: netip.MustParseAddr("198.18.0.2")}, {src: netip.MustParseAddr("198.18.0.6")}, {src: netip.MustParseAddr("198.18.0.6")}}
	entered, release := make(chan int, 8), make(chan struct{})
	var mu sync.Mutex
	walks := 0
	s := &FlowSweeper{netns: os.Stdin, walk: func(_ int, match func(flow) bool) (int, error) {
		mu.Lock()
		walks++
		n := walks
		mu.Unlock()
		entered <- n
		<-release
		deleted := 0
		for _, f := range table {
			if match(f) {
				deleted++
			}
		}
		return deleted, nil
	}}
	forget := func(p string, got *int, wg *sync.WaitGroup) {
		defer wg.Done()
		n, err := s.forget(srcIn(p))
		if err != nil {
			t.Error(err)
		}
		*got = n
	}
	var first, second, third int
	var wg1, wg23 sync.WaitGroup
	wg1.Add(1)
	go forget("198.18.0.0/30", &first, &wg1)
	if n := <-entered; n != 1 {
		t.Fatalf("walk %d first", n)
	}
	// A walk is under way: these two come after it began.
	wg23.Add(2)
	go forget("198.18.0.4/30", &second, &wg23)
	go forget("198.18.0.0/29", &third, &wg23)
	// Until both are queued behind the walk in progress.
	for deadline := time.Now().Add(5 * time.Second); s.queuedLen() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the calls made during a walk were not queued")
		}
	}
	release <- struct{}{}
	wg1.Wait()
	if n := <-entered; n != 2 {
		t.Fatalf("walk %d second", n)
	}
	release <- struct{}{}
	wg23.Wait()
	if walks != 2 {
		t.Errorf("%d walks for 3 calls, 2 of them made during the first: want 2", walks)
	}
	if first != 1 || second != 2 || third != 3 {
		t.Errorf("counted %d, %d, %d; want 1, 2, 3", first, second, third)
	}
}

func (s *FlowSweeper) queuedLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queued)
}

// TestFlowSweeper: the kernel's entries of two agents' networks, asked
// for at once, go; an entry of neither stays.
func TestFlowSweeper(t *testing.T) {
	_, ns := newManager(t, false)
	c := conntrackIn(t, ns)
	a := netip.MustParseAddr
	dst := a("203.0.113.5")
	for i, src := range []string{"198.18.0.2", "198.18.0.6", "198.18.0.6", "192.0.2.9"} {
		if err := c.Create(conntrack.NewFlow(unix.IPPROTO_TCP, 0, a(src), dst, uint16(40000+i), 443, 600, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var s *FlowSweeper
	if err := ns.Do(func() (err error) { s, err = NewFlowSweeper(); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, p := range []string{"198.18.0.0/30", "198.18.0.4/30"} {
		wg.Go(func() {
			n, err := s.forget(srcIn(p))
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if counts[0] != 1 || counts[1] != 2 {
		t.Errorf("deleted %v, want [1 2]", counts)
	}
	left, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].TupleOrig.IP.SourceAddress != a("192.0.2.9") {
		t.Errorf("left: %+v, want only the flow from 192.0.2.9", left)
	}
	// Closed, it walks no more (a closed handle would be the calling
	// thread's namespace, here the host's).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.forget(srcIn("198.18.0.0/30")); err == nil {
		t.Error("a closed sweeper walked")
	}
}

// srcIn matches the flows started from an address in prefix.
func srcIn(prefix string) func(flow) bool {
	p := netip.MustParsePrefix(prefix)
	return func(f flow) bool { return p.Contains(f.src) }
}
