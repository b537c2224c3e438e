package journal

// Reason says why a decision went the way it did. Reasons are stable words:
// they are stored in the journal, shown to the agent (in DNS's Extended
// Errors) and matched by tools. Every reason of every layer is declared
// here, once; the README lists the same words (a test checks both ways).
type Reason string

// The vocabulary. The policy's own reasons (policy.Reason) carry the same
// words, and the layers convert them at the boundary.
const (
	// ReasonAllowed: the policy let it through, at any layer.
	ReasonAllowed Reason = "allowed"
	// ReasonNoPolicy: no policy is in force, so nothing passes.
	ReasonNoPolicy Reason = "no_policy"
	// ReasonInvalidName: the name asked for is not a valid host name.
	ReasonInvalidName Reason = "invalid_name"
	// ReasonNameNotAllowed: no entry of the policy allows the name.
	ReasonNameNotAllowed Reason = "name_not_allowed"
	// ReasonPortNotAllowed: the name is allowed, but not on this port.
	ReasonPortNotAllowed Reason = "port_not_allowed"
	// ReasonAddrNotAllowed: no cidr entry of the policy allows the address.
	ReasonAddrNotAllowed Reason = "address_not_allowed"
	// ReasonRevoked: an open flow or connection that a policy change no longer allows, cut.
	ReasonRevoked Reason = "revoked"

	// ReasonNotQuery: a DNS message that is not one standard query.
	ReasonNotQuery Reason = "not_a_query"
	// ReasonForeignClient: a DNS query from a source that is not the agent.
	ReasonForeignClient Reason = "foreign_client"
	// ReasonBadQuestion: a question sluice never forwards (ANY, a class other than IN, arpa names but PTR).
	ReasonBadQuestion Reason = "bad_question"
	// ReasonNameBudget: a new name under a wildcard beyond its budget of new names a minute.
	ReasonNameBudget Reason = "name_budget_exceeded"
	// ReasonUpstreamFailed: the upstream resolver failed or gave an unusable answer (SERVFAIL).
	ReasonUpstreamFailed Reason = "upstream_failed"
	// ReasonSetUpdateFailed: the kernel refused the answer's addresses in the sets (SERVFAIL).
	ReasonSetUpdateFailed Reason = "set_update_failed"
	// ReasonPinTableFull: the name→address pin table had no room for the answer (SERVFAIL).
	ReasonPinTableFull Reason = "pin_table_full"
	// ReasonAddrsDropped: addresses removed from an answer that was released (a Dropped event, not a refusal).
	ReasonAddrsDropped Reason = "addresses_dropped"

	// ReasonNoSetEntry: a forwarded packet to an address and port not in the agent's sets.
	ReasonNoSetEntry Reason = "no_set_entry"
	// ReasonQUIC: UDP to port 443, refused so that clients fall back to TCP.
	ReasonQUIC Reason = "quic"
	// ReasonDoT: DNS over TLS or QUIC (port 853), which would bypass the resolver.
	ReasonDoT Reason = "dot"
	// ReasonGatewayPort: a packet to a port of the gateway other than its resolver and proxy.
	ReasonGatewayPort Reason = "gateway_port"
	// ReasonSpoofed: a packet from the agent's link with a source address not the agent's.
	ReasonSpoofed Reason = "spoofed_source"
	// ReasonGatewayNotAlive: the heartbeat lapsed (sluice dead or stalled), so nothing new passes.
	ReasonGatewayNotAlive Reason = "gateway_not_alive"

	// ReasonSNINotAllowed: no entry of the policy allows the ClientHello's server name.
	ReasonSNINotAllowed Reason = "sni_not_allowed"
	// ReasonNotPinned: the destination is not an address the resolver handed this agent for the name.
	ReasonNotPinned Reason = "address_not_pinned"
	// ReasonNoSNI: a ClientHello without a server name.
	ReasonNoSNI Reason = "no_sni"
	// ReasonIPLiteralSNI: a server name that is an IP address.
	ReasonIPLiteralSNI Reason = "ip_literal_sni"
	// ReasonInvalidSNI: a server name that is not a valid host name.
	ReasonInvalidSNI Reason = "invalid_sni"
	// ReasonECH: a ClientHello with Encrypted Client Hello or ESNI, which hides the real name.
	ReasonECH Reason = "ech"
	// ReasonNotTLS: the connection did not begin with a TLS ClientHello.
	ReasonNotTLS Reason = "not_tls"
	// ReasonHelloTimeout: no whole ClientHello (or request head) within the hello timeout.
	ReasonHelloTimeout Reason = "hello_timeout"
	// ReasonHelloTooLarge: a ClientHello (or request head) past the proxy's size cap.
	ReasonHelloTooLarge Reason = "hello_too_large"
	// ReasonGatewayDst: a proxied connection to the gateway's or an agent's own address.
	ReasonGatewayDst Reason = "gateway_destination"
	// ReasonNoOrigDst: the proxy could not read a connection's original destination.
	ReasonNoOrigDst Reason = "no_original_destination"
	// ReasonDialFailed: the destination refused, did not answer, or may not be dialled.
	ReasonDialFailed Reason = "dial_failed"
	// ReasonTooManyPending: too many connections were already waiting for their hello.
	ReasonTooManyPending Reason = "too_many_pending"
	// ReasonTooManyConns: too many proxied connections were already open.
	ReasonTooManyConns Reason = "too_many_connections"

	// ReasonHostNotAllowed: no entry of the policy allows the request's Host.
	ReasonHostNotAllowed Reason = "host_not_allowed"
	// ReasonNoHost: a request without a Host.
	ReasonNoHost Reason = "no_host"
	// ReasonConflictingHost: repeated Host headers, or a Host naming another port.
	ReasonConflictingHost Reason = "conflicting_host"
	// ReasonConnect: a CONNECT request, which would tunnel past the checks.
	ReasonConnect Reason = "connect_method"
	// ReasonH2C: an upgrade to cleartext HTTP/2, which would escape the per-request checks.
	ReasonH2C Reason = "h2c_upgrade"
	// ReasonBadRequest: not an HTTP/1.x request head (or a connection closed before one).
	ReasonBadRequest Reason = "bad_request"

	// ReasonGitNotRecognised: a request on a host with git rules that is none of the smart protocol's known shapes.
	ReasonGitNotRecognised Reason = "git_request_not_recognised"
	// ReasonGitFetchNotAllowed: a fetch of a repository the fetch list does not name.
	ReasonGitFetchNotAllowed Reason = "git_fetch_not_allowed"
	// ReasonGitPushNotAllowed: a push (or LFS upload) to a repository the push list does not name.
	ReasonGitPushNotAllowed Reason = "git_push_not_allowed"
	// ReasonGitRefNotAllowed: a push to a ref push_refs does not name.
	ReasonGitRefNotAllowed Reason = "git_ref_not_allowed"
	// ReasonGitDeleteNotAllowed: a push that deletes a ref, without delete_refs.
	ReasonGitDeleteNotAllowed Reason = "git_delete_not_allowed"
	// ReasonGitForcePush: an update of a ref not shown to descend from the old value, without force.
	ReasonGitForcePush Reason = "git_force_push"
	// ReasonHTTPNotAllowed: a request on a host with http rules that no rule allows.
	ReasonHTTPNotAllowed Reason = "http_request_not_allowed"

	// ReasonReload: the policy file was read again (SIGHUP) and put in force.
	ReasonReload Reason = "policy_reloaded"
	// ReasonReviewed: a person allowed something in the web UI.
	ReasonReviewed Reason = "reviewed_allow"
	// ReasonAllowanceExpired: a temporary allowance ran out.
	ReasonAllowanceExpired Reason = "allowance_expired"
	// ReasonRecordsLost: records dropped because the journal fell behind.
	ReasonRecordsLost Reason = "records_lost"
	// ReasonRetention: the oldest records deleted by retention (an anchor keeps the chain).
	ReasonRetention Reason = "retention"
)

// reasons is every declared Reason, in the order above.
var reasons = []Reason{
	ReasonAllowed, ReasonNoPolicy, ReasonInvalidName, ReasonNameNotAllowed, ReasonPortNotAllowed, ReasonAddrNotAllowed, ReasonRevoked,
	ReasonNotQuery, ReasonForeignClient, ReasonBadQuestion, ReasonNameBudget, ReasonUpstreamFailed,
	ReasonSetUpdateFailed, ReasonPinTableFull, ReasonAddrsDropped,
	ReasonNoSetEntry, ReasonQUIC, ReasonDoT, ReasonGatewayPort, ReasonSpoofed, ReasonGatewayNotAlive,
	ReasonSNINotAllowed, ReasonNotPinned, ReasonNoSNI, ReasonIPLiteralSNI, ReasonInvalidSNI, ReasonECH,
	ReasonNotTLS, ReasonHelloTimeout, ReasonHelloTooLarge, ReasonGatewayDst, ReasonNoOrigDst, ReasonDialFailed,
	ReasonTooManyPending, ReasonTooManyConns,
	ReasonHostNotAllowed, ReasonNoHost, ReasonConflictingHost, ReasonConnect, ReasonH2C, ReasonBadRequest,
	ReasonGitNotRecognised, ReasonGitFetchNotAllowed, ReasonGitPushNotAllowed, ReasonGitRefNotAllowed,
	ReasonGitDeleteNotAllowed, ReasonGitForcePush, ReasonHTTPNotAllowed,
	ReasonReload, ReasonReviewed, ReasonAllowanceExpired, ReasonRecordsLost, ReasonRetention,
}

// Reasons returns every declared reason, each once.
func Reasons() []Reason {
	return append([]Reason(nil), reasons...)
}

// Known reports whether r is a declared reason.
func (r Reason) Known() bool {
	for _, k := range reasons {
		if r == k {
			return true
		}
	}
	return false
}

// Allowable reports whether a refusal for r is one that an entry of the
// policy changes: the name, its port, or the address and port of a flow
// without a name were not in it. Every other refusal (an address not
// pinned, an ECH hello, a name budget spent, a spoofed source) stays one
// whatever the policy allows, and most are what an attack looks like.
func (r Reason) Allowable() bool {
	switch r {
	case ReasonNameNotAllowed, ReasonSNINotAllowed, ReasonHostNotAllowed, ReasonPortNotAllowed, ReasonNoSetEntry:
		return true
	}
	return false
}
