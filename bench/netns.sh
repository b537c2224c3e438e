# Sourced by the benchmark scripts (run from the repository's root).
#
# gw_srv GW SRV makes the two namespaces every benchmark uses: GW with
# 198.18.1.1 on veth g1 and its default route through SRV; SRV with
# 198.18.1.2 on s0, owning 198.18.128.0/17 on its loopback, and no route
# anywhere else.
gw_srv() {
	local gw=$1 srv=$2
	for n in "$gw" "$srv"; do
		ip netns add "$n"
		ip -n "$n" link set lo up
	done
	ip -n "$gw" link add g1 type veth peer name s0 netns "$srv"
	ip -n "$gw" addr add 198.18.1.1/24 dev g1
	ip -n "$gw" link set g1 up
	ip -n "$gw" route add default via 198.18.1.2
	ip -n "$srv" addr add 198.18.1.2/24 dev s0
	ip -n "$srv" link set s0 up
	ip -n "$srv" addr add 198.18.128.0/17 dev lo
	ip -n "$srv" route add unreachable default
}
