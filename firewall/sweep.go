package firewall

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// FlowSweeper deletes tracked flows for many gateways with shared walks of
// the conntrack table. Every walk costs the kernel a pass over all the
// table's buckets, however few entries there are (about 7 ms on a host
// whose table has 262,144 buckets, whatever is in them), so gateways that
// start or revoke side by side, as sluice serve's agents do, wait for one
// walk between them instead of one each. A call is served by a walk that
// begins after the call was made, so it sees every entry made before it,
// as a walk of its own would.
//
// A FlowSweeper works in the network namespace of the thread that made
// it: its walks run on a goroutine of their own.
type FlowSweeper struct {
	netns *os.File
	walk  func(netnsFd int, match func(flow) bool) (int, error) // forgetFlows; tests replace it

	mu      sync.Mutex
	queued  []*sweep
	running bool
	closed  bool
	walker  sync.WaitGroup // the goroutine of run, while it runs
}

type sweep struct {
	match func(flow) bool
	n     int
	err   error
	done  chan struct{}
}

// NewFlowSweeper returns a FlowSweeper for the calling thread's network
// namespace. Close releases it.
func NewFlowSweeper() (*FlowSweeper, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("firewall: open network namespace: %w", err)
	}
	return &FlowSweeper{netns: f, walk: forgetFlows}, nil
}

// Close waits for a walk under way, then releases the namespace's
// handle; calls after it fail (a closed handle would otherwise mean the
// calling thread's namespace).
func (s *FlowSweeper) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.walker.Wait()
	return s.netns.Close()
}

// forget deletes the entries of the flows that match, in a shared walk,
// and says how many matched.
func (s *FlowSweeper) forget(match func(flow) bool) (int, error) {
	w := &sweep{match: match, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errors.New("firewall: FlowSweeper is closed")
	}
	s.queued = append(s.queued, w)
	if !s.running {
		s.running = true
		s.walker.Add(1)
		go s.run()
	}
	s.mu.Unlock()
	<-w.done
	return w.n, w.err
}

// forgetIn is forget with forgetFlows' signature, for a Manager whose
// namespace is the sweeper's.
func (s *FlowSweeper) forgetIn(_ int, match func(flow) bool) (int, error) { return s.forget(match) }

// run walks for what is queued, again and again, until nothing is.
func (s *FlowSweeper) run() {
	defer s.walker.Done()
	for {
		s.mu.Lock()
		batch := s.queued
		s.queued = nil
		if len(batch) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		_, err := s.walk(int(s.netns.Fd()), func(f flow) bool {
			hit := false
			for _, w := range batch {
				if w.match(f) {
					w.n++
					hit = true
				}
			}
			return hit
		})
		for _, w := range batch {
			w.err = err
			close(w.done)
		}
	}
}
