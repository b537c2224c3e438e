// Package sandbox makes an agent's place to run: a network namespace
// whose only link leads to the gateway (a new one, or one named under
// /run/netns that outlives the gateway, processes and all, for the next
// start to adopt) or, in router mode, the clients behind an existing
// interface of the gateway, which it takes as it is and never changes
// (InterfaceAgent); and the command started inside a namespace
// (a PID namespace whose init is sluice's, a private mount namespace with
// the gateway as resolver and the host's side doors hidden, inherited
// descriptors closed, privileges dropped). It also keeps the crash-safe
// record of what a run changed in the gateway's namespace (its link, its
// sysctls, its files), so that the next start can undo what a dead run
// left, agent first.
package sandbox
