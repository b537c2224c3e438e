#!/usr/bin/env bash
# DNS benchmark of sluice's whole resolver path: agent namespace -> nft
# redirect -> filtering resolver -> upstream -> nft set update -> answer.
#
#   sudo bench/dns.sh            # prints one line per phase
#   SLUICE_FLAGS=--journal= sudo bench/dns.sh   # the same without the journal
#   ONLY=hit PROF=/tmp/p sudo bench/dns.sh      # one phase, a CPU profile
#   ONLY=peers ROUNDS=3 sudo bench/dns.sh       # sluice and dnsmasq in turn
#   ONLY=peers PERF=/tmp/pf sudo bench/dns.sh   # with perf record -g of each
#
# The journal (on by default, as in real use) goes to the run's temporary
# directory.
#
# Topology (namespaces made and removed here, addresses from 198.18.0.0/15):
#   agent (made by sluice run) -- gw: sluice, pinned to CPU1, GOMAXPROCS=1
#   gw 198.18.1.1 -- srv 198.18.1.2: bench/dnsproto, every name -> one
#   address in 198.18.128.0/17 (TTL 300), which srv owns on its loopback.
# The load generator (bench/dnsload) runs as the agent, pinned to CPU0.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DURATION:-5s}
tmp=$(mktemp -d)
gw=bgw$$ srv=bsrv$$
cleanup() {
	kill "${proto_pid:-}" "${helper_pid:-}" "${sluice_pid:-}" "${dnsmasq_pid:-}" 2>/dev/null || true
	ip netns del "$gw" 2>/dev/null || true
	ip netns del "$srv" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
# SLUICE_BIN=path measures a build made elsewhere; by default the working
# tree is built.
if [ -n "${SLUICE_BIN:-}" ]; then cp "$SLUICE_BIN" "$tmp/sluice"; else go build -o "$tmp/sluice" ./cmd/sluice; fi
go build -o "$tmp/dnsproto" ./bench/dnsproto
go build -o "$tmp/dnsload" ./bench/dnsload

. bench/netns.sh
gw_srv "$gw" "$srv"
host_fifos "$tmp"
ip netns exec "$srv" taskset -c 0 "$tmp/dnsproto" -addr 198.18.1.2:53 -accept 0.0.0.0:80 &
proto_pid=$!
sleep 0.3
# The wildcard has no budget of new names (max_new_names: 0): the uncached
# phases ask thousands of new names a second, which the default budget
# would cut at 100 a minute. The answers lie in 198.18.128.0/17, a
# benchmarking range that --global-range lets them point into.
cat > "$tmp/policy.yaml" <<'POLICY'
version: 1
allow:
  - host: "*.bench.test"
    ports: [80]
    max_new_names: 0
POLICY

# phase NAME DNSLOAD-ARGS...: one sluice run per phase, so cache-miss runs
# start cold; prints dnsload's line and sluice's CPU per answer, which the
# agent asks the host for (bench/netns.sh: host_helper).
phase() {
	local name=$1
	shift
	if [ -n "${ONLY:-}" ] && [ "$name" != "$ONLY" ]; then return 0; fi
	ip netns exec "$gw" env GOMAXPROCS=1 SLUICE_CPUPROFILE=${PROF:-} taskset -c 1 "$tmp/sluice" run --journal "$tmp/journal.db" ${SLUICE_FLAGS:-} \
		--upstream 198.18.1.2 --policy "$tmp/policy.yaml" --global-range 198.18.128.0/17 --agent-net 198.18.0.0/30 --no-ipv6 --user root -- \
		sh -c "$(agent_ask "$tmp")"'
			c0=$(ask cpu sluice); out=$(taskset -c 0 '"$tmp"'/dnsload -server 198.18.0.1:53 '"$*"'); c1=$(ask cpu sluice)
			n=$(echo "$out" | sed -n "s/^answers=\([0-9]*\).*/\1/p")
			echo "'"$name"': $out sluice_cpu_us_per_answer=$(( (c1-c0)*10000000/(n>0?n:1)/1000 ))"' 2>${SLUICE_STDERR:-/dev/null} &
	sluice_pid=$!
	host_helper "$tmp" "$sluice_pid"
	helper_pid=$!
	wait "$sluice_pid"
	kill "$helper_pid"
	wait "$helper_pid" 2>/dev/null || true
}
phase hit          -count 100 -c 16 -d "$D"
phase miss         -unique -count 0 -c 64 -d "${MISS_DURATION:-2s}"
phase denied       -names 'd%07d.denied.test.' -count 100000 -c 8 -d "$D"
phase hit-latency  -count 100 -c 4 -qps 10000 -d "$D"
phase miss-latency -unique -count 50000000 -c 4 -qps 2000 -d "$D"
phase connect      -unique -count 90000000 -c 4 -connect 80 -d "$D"

# Peers on the same queries, behind the same redirect (ONLY=peers for this
# part alone, ROUNDS=N for N rounds, each starting with the next target):
# in one sluice run, its agent asks sluice (port 53) and dnsmasq (port
# 5354, redirected by a rule added to sluice's own table to dnsmasq on
# 5353 in the gateway namespace, pinned to sluice's core) in turn, so the
# client's packets pay for the same hooks and rules. dnsmasq forwards to
# the same upstream and caches (TTL 300). The hit phase asks 100 names
# from 16 clients, as above: the client's core is the bound, and the
# servers' CPU per answer includes their idle polling. CLIENT_CPUS=0,1
# CLIENTS=64 lets the clients take both cores: then both are saturated,
# and the rate is set by the CPU each answer costs, client's and server's.
# PEER_PHASE=miss compares the miss phase instead (every name new, 64
# clients): sluice programs its sets before each answer, dnsmasq runs
# with --nftset into a set of its own; run it once per round (ROUNDS=1),
# so that sluice starts with empty sets each time.
if command -v dnsmasq >/dev/null && { [ -z "${ONLY:-}" ] || [ "$ONLY" = peers ]; }; then
	load="-count 100 -c ${CLIENTS:-16} -d $D"
	nftset=()
	if [ "${PEER_PHASE:-hit}" = miss ]; then
		load="-unique -count 0 -c 64 -d ${MISS_DURATION:-2s}"
		ip netns exec "$gw" nft -f - <<'NFT'
table inet dnsmasqbench {
	set s4 { type ipv4_addr; }
}
NFT
		nftset=(--nftset=/bench.test/4#inet#dnsmasqbench#s4)
	fi
	ip netns exec "$gw" taskset -c 1 dnsmasq --keep-in-foreground --conf-file=/dev/null --port=5353 \
		--no-resolv --no-hosts --server=198.18.1.2 --cache-size=10000 --user=root --pid-file="$tmp/dnsmasq.pid" \
		--log-facility=- --quiet-dhcp "${nftset[@]}" 2>/dev/null &
	dnsmasq_pid=$!
	sleep 0.3
	targets=("sluice 53 sluice" "dnsmasq 5354 $dnsmasq_pid")
	script="while [ ! -e $tmp/go ]; do sleep 0.1; done"
	for round in $(seq "${ROUNDS:-1}"); do
		k=$(( (round - 1) % ${#targets[@]} ))
		for t in "${targets[@]:k}" "${targets[@]:0:k}"; do
			read -r name port pid <<<"$t"
			script+="
${PERF:+ask perf $pid $PERF.$name.$round}
c0=\$(ask cpu $pid); out=\$(taskset -c ${CLIENT_CPUS:-0} $tmp/dnsload -server 198.18.0.1:$port $load); c1=\$(ask cpu $pid)
${PERF:+ask untrace}
n=\$(echo \"\$out\" | sed -n 's/^answers=\([0-9]*\).*/\1/p')
t=\$(( (c1-c0)*100000000/(n>0?n:1)/1000 ))
echo \"$name ${PEER_PHASE:-hit} round $round: \$out cpu_us_per_answer=\$((t/10)).\$((t%10))\""
		done
	done
	ip netns exec "$gw" env GOMAXPROCS=1 taskset -c 1 "$tmp/sluice" run --name bench --journal "$tmp/journal.db" ${SLUICE_FLAGS:-} \
		--upstream 198.18.1.2 --policy "$tmp/policy.yaml" --global-range 198.18.128.0/17 --agent-net 198.18.0.0/30 --no-ipv6 --user root -- \
		sh -c "$(agent_ask "$tmp")
$script" 2>${SLUICE_STDERR:-/dev/null} &
	sluice_pid=$!
	host_helper "$tmp" "$sluice_pid"
	helper_pid=$!
	until ip netns exec "$gw" nft list chain inet sluice-bench agent_in >/dev/null 2>&1; do sleep 0.1; done
	agentif=$(ip netns exec "$gw" nft list chain inet sluice-bench prerouting | sed -n 's/.*iifname "\([^"]*\)".*/\1/p' | head -1)
	ip netns exec "$gw" nft -f - <<NFT
insert rule inet sluice-bench prerouting iifname "$agentif" udp dport 5354 redirect to :5353
insert rule inet sluice-bench agent_in udp dport 5353 ct status dnat accept
NFT
	touch "$tmp/go"
	wait "$sluice_pid" || true
	kill "$helper_pid" "$dnsmasq_pid" 2>/dev/null || true
	wait "$helper_pid" "$dnsmasq_pid" 2>/dev/null || true
fi
