package e2e

import (
	"net"
	"testing"
)

// TestAnswerIntoGatewayNetworkNeedsPrivate: an allowed name that resolves
// to a neighbour on the gateway's own upstream link (here its router) is
// not handed to the agent, unless the entry says private: true.
func TestAnswerIntoGatewayNetworkNeedsPrivate(t *testing.T) {
	w := newWorld(t)
	err := w.inet.Do(func() error {
		ln, err := net.Listen("tcp", routerAddr+":22")
		if err != nil {
			return err
		}
		w.sink.ListenTCP(ln)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	script := prelude + `
echo "answer=$(dig +short @` + gwAddr + ` neighbour.allowed.test A)"
try by_name nc -z -w 2 neighbour.allowed.test 22
`
	r := w.run(t, []string{"--allow", "neighbour.allowed.test:22"}, script)
	expect(t, r, map[string]string{"answer": "", "by_name": "1"})
	noContacts(t, "the gateway's neighbour", w.sinkContacts())

	// Control: the same name and port with private: true.
	private := policyFile(t, "  - host: neighbour.allowed.test\n    ports: [22]\n    private: true\n")
	r = w.run(t, []string{"--policy", private}, script)
	expect(t, r, map[string]string{"answer": routerAddr, "by_name": "0"})
	if len(w.sinkContacts()) == 0 {
		t.Errorf("a private entry did not reach the gateway's neighbour")
	}
}
