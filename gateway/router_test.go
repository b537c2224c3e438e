package gateway

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/sandbox"
)

// TestConfigInterface: router mode names an interface, and takes no
// namespace and no agent networks beside it.
func TestConfigInterface(t *testing.T) {
	base := func() Config { return validConfig(t) }
	c := base()
	c.Interface = "br-lab"
	if err := c.Validate(); err != nil {
		t.Errorf("router mode: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Interface = "br/lab" }, `interface "br/lab": want 1 to 15`},
		{func(c *Config) { c.Interface = "a-very-long-bridge" }, `interface "a-very-long-bridge"`},
		{func(c *Config) { c.Namespace = NamespaceFor("lab") }, "no agent namespace or agent networks with it"},
		{func(c *Config) { c.AgentNet = netip.MustParsePrefix("198.19.0.0/30") }, "no agent namespace or agent networks with it"},
		{func(c *Config) { c.AgentNet6 = netip.MustParsePrefix("fd5c:1ce0:5c1c:1::/64") }, "no agent namespace or agent networks with it"},
	} {
		c := base()
		c.Interface = "br-lab"
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %q", c, err, tc.want)
		}
	}
}

// TestRouterSlotRefuses: an interface another agent holds is refused,
// naming the agent, and so is a link named as sluice names its agents'
// veths, before the interface is even looked at.
func TestRouterSlotRefuses(t *testing.T) {
	g := &Gateway{cfg: Config{Name: "lab", Interface: "br-lab"}}
	held := []sandbox.Holder{{Slot: sandbox.Slot{Name: "other", Table: "sluice-other", Iface: "br-lab", LogGroup: DefaultLogGroup}, PID: 42}}
	if _, err := g.routerSlot(held, true); !errors.Is(err, sandbox.ErrBusy) || !strings.Contains(err.Error(), `link br-lab is held by another sluice in this network namespace (agent "other", pid 42)`) {
		t.Errorf("an interface another agent holds: %v", err)
	}
	for _, name := range []string{"sl1234", "sl1234-2"} {
		g.cfg.Interface = name
		if _, err := g.routerSlot(nil, true); err == nil || !strings.Contains(err.Error(), "named as sluice names the links it makes") {
			t.Errorf("router mode on %s: %v", name, err)
		}
	}
	if g.agent != nil {
		t.Errorf("a refused slot left an agent: %+v", g.agent)
	}
}

// TestFindServedRouter: sluice exec on an agent in router mode says why
// it cannot run a command there.
func TestFindServedRouter(t *testing.T) {
	runs := []sandbox.Run{{Name: "lab", PID: 100, Alive: true, Router: true, Iface: "br-lab"}}
	_, err := findServed(runs, "lab", "/dir")
	if !errors.Is(err, sandbox.ErrRouterMode) || !strings.Contains(err.Error(), `agent "lab" is served in router mode, behind interface br-lab`) {
		t.Errorf("findServed of a router-mode agent: %v", err)
	}
}
