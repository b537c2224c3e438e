#!/usr/bin/env bash
# Benchmark of sluice's transparent TLS proxy, with peers in the same run.
#
#   sudo bench/tls.sh        # nginx (libnginx-mod-stream) and haproxy are
#                            # measured too when installed
#   DURATION=5s ONLY=ours-cps PROF=/tmp/p sudo bench/tls.sh   # one phase, CPU profile
#   ONLY=ours-cps MEMPROF=/tmp/m sudo bench/tls.sh   # its allocations (go tool pprof -sample_index=alloc_objects)
#   SLUICE_BIN=/tmp/a ONLY=ours-lat sudo bench/tls.sh   # a build made elsewhere
#   ONLY=peers PEER_CT=1 sudo bench/tls.sh   # peers with conntrack and NAT hooks
#   ONLY=redirect ROUNDS=3 RUNS="cps -c 1" sudo bench/tls.sh   # sluice, the routed
#                            # path and the peers in turn, in one sluice run
#   STRACE=/tmp/s or PERF=/tmp/p: system call counts (strace -c) or a call
#   graph profile (perf record -g) of each run, sluice's and the peers'.
#   SLUICE_STDERR=/tmp/e: sluice's standard error of the "ours" and idle
#   runs, appended (otherwise discarded).
#
# Topology (namespaces made and removed here, addresses from 198.18.0.0/15):
#   agent (made by sluice run) --- gw: sluice, pinned to CPU1, GOMAXPROCS=1
#   cli 198.18.3.2 --- gw 198.18.3.1: nginx :8444 and haproxy :8445 (explicit)
#   gw 198.18.1.1 --- srv 198.18.1.2: dnsproto (every name -> an address in
#   198.18.128.0/17, owned by srv) and the snibench backend on :443 and :8443.
# Paths compared, all to the same backend:
#   ours     agent -> 443 -> nft redirect -> sluice proxy (SNI + pin check, splice) -> srv
#   direct   agent -> 8443, routed through the same gateway by the nft sets, no proxy
#   nginx    cli -> nginx ssl_preread -> srv;  haproxy: cli -> req.ssl_sni -> srv
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DURATION:-5s}
tmp=$(mktemp -d)
gw=tgw$$ srv=tsrv$$ cli=tcli$$
pids=()
cleanup() {
	for p in "${pids[@]}" "${helper_pid:-}" "${sluice_pid:-}"; do kill "$p" 2>/dev/null || true; done
	for n in "$gw" "$srv" "$cli"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
# SLUICE_BIN=path measures a build made elsewhere (to compare two builds
# in alternating runs); by default the working tree is built.
if [ -n "${SLUICE_BIN:-}" ]; then cp "$SLUICE_BIN" "$tmp/sluice"; else go build -o "$tmp/sluice" ./cmd/sluice; fi
go build -o "$tmp/dnsproto" ./bench/dnsproto
go build -o "$tmp/snibench" ./bench/snibench

. bench/netns.sh
gw_srv "$gw" "$srv"
host_fifos "$tmp"
ip netns add "$cli"
ip -n "$cli" link set lo up
ip -n "$gw" link add g3 type veth peer name c0 netns "$cli"
ip -n "$gw" addr add 198.18.3.1/24 dev g3
ip -n "$gw" link set g3 up
ip -n "$cli" addr add 198.18.3.2/24 dev c0
ip -n "$cli" link set c0 up
for n in "$gw" "$srv" "$cli"; do
	# The fixed ports of the backend and the peers are kept out of the
	# ephemeral range: an earlier phase's upstream socket in TIME_WAIT on
	# one of them would make a peer's wildcard bind fail.
	ip netns exec "$n" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.ip_local_reserved_ports=8443-8455 \
		net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
done
ip netns exec "$srv" taskset -c 0 "$tmp/dnsproto" -addr 198.18.1.2:53 &
pids+=($!)
ip netns exec "$srv" taskset -c 0 "$tmp/snibench" -role backend -procs 1 -listen 0.0.0.0:443,0.0.0.0:8443 &
pids+=($!)
sleep 0.3
# The backend's addresses (198.18.128.0/17) are in a benchmarking range,
# which answers may point into only with --global-range.
cat > "$tmp/policy.yaml" <<'POLICY'
version: 1
allow:
  - host: "*.bench.test"
    ports: [443, 8443]
POLICY

# sluice_start PROFILE STDERR SCRIPT: starts one sluice run in the
# background, its agent running SCRIPT with ask() (bench/netns.sh) to read
# sluice's figures from the host; sluice's standard error is appended to
# STDERR. sluice_wait waits for the run to end.
sluice_start() {
	ip netns exec "$gw" env GOMAXPROCS=1 SLUICE_CPUPROFILE="$1" SLUICE_MEMPROFILE="${MEMPROF:-}" taskset -c 1 "$tmp/sluice" run \
		--name bench --journal "$tmp/journal.db" ${SLUICE_FLAGS:-} --upstream 198.18.1.2 --policy "$tmp/policy.yaml" --global-range 198.18.128.0/17 --agent-net 198.18.0.0/30 --no-ipv6 --user root -- \
		sh -c "$(agent_ask "$tmp")
$3" 2>>"$2" &
	sluice_pid=$!
	host_helper "$tmp" "$sluice_pid"
	helper_pid=$!
}
sluice_wait() {
	local rc=0
	wait "$sluice_pid" || rc=$?
	kill "$helper_pid"
	wait "$helper_pid" 2>/dev/null || true
	return $rc
}

# ours NAME SNIBENCH-ARGS: one sluice run; prints snibench's line and
# sluice's CPU per connection.
ours() {
	local name=$1
	shift
	if [ -n "${ONLY:-}" ] && [ "$name" != "$ONLY" ]; then return 0; fi
	sluice_start "${PROF:-}" "${SLUICE_STDERR:-/dev/null}" '
		[ -n "'"${STRACE:-}"'" ] && ask strace sluice '"${STRACE:-/dev/null}"'
		[ -n "'"${PERF:-}"'" ] && ask perf sluice '"${PERF:-/dev/null}"'
		c0=$(ask cpu sluice); out=$(taskset -c 0 '"$tmp"'/snibench '"$*"'); c1=$(ask cpu sluice)
		[ -n "'"${STRACE:-}${PERF:-}"'" ] && ask untrace
		n=$(echo "$out" | sed -n "s/^conns=\([0-9]*\).*/\1/p")
		extra=""; [ -n "$n" ] && extra=" sluice_cpu_us_per_conn=$(( (c1-c0)*10000000/(n>0?n:1)/1000 ))"
		echo "'"$name"': $out$extra sluice_cpu_s=$(( (c1-c0) ))/100"'
	sluice_wait
}

ours ours-cps       -role cps -target allowed.bench.test:443 -c 32 -d "$D"
ours direct-cps     -role cps -target allowed.bench.test:8443 -c 32 -d "$D"
ours ours-lat       -role cps -target allowed.bench.test:443 -c 1 -d "$D"
ours direct-lat     -role cps -target allowed.bench.test:8443 -c 1 -d "$D"
ours ours-tput      -role tput -target allowed.bench.test:443 -c 2 -d "$D"
ours direct-tput    -role tput -target allowed.bench.test:8443 -c 2 -d "$D"
ours refused        -role cps -target allowed.bench.test:443 -sni evil.other.test -c 4 -d 1s

# Memory of 9,000 idle spliced connections, and proof of splice(2). Each
# connection is two sockets in sluice; on machines whose hard limit of open
# files is 20,000 (and no CAP_SYS_RESOURCE to raise it) 10,000 cannot fit.
if [ -z "${ONLY:-}" ] || [ "$ONLY" = idle ]; then
	sluice_start "${PROF:-}" "${SLUICE_STDERR:-/dev/null}" '
		r0=$(ask rss sluice)
		'"$tmp"'/snibench -role idle -target idle.bench.test:443 -sni idle.bench.test -n ${IDLE_N:-9000} -d ${IDLE_HOLD:-3s} > '"$tmp"'/idle.out &
		while ! grep -q held '"$tmp"'/idle.out; do sleep 0.2; done
		r1=$(ask rss sluice); wait
		echo "idle: $(cat '"$tmp"'/idle.out) sluice_rss_kb_before=$r0 sluice_rss_kb_held=$r1 per_conn_kb=$(( (r1-r0)/${IDLE_N:-9000} ))"
		# let sluice finish closing the idle connections first
		while [ "$(ask fds sluice)" -gt 100 ]; do sleep 0.2; done
		ask strace sluice '"$tmp"'/strace.out -e trace=splice,read,write
		echo "transfer: $('"$tmp"'/snibench -role tput -target allowed.bench.test:443 -c 1 -d 2s 2>&1)"
		ask untrace
		echo "syscalls during a 2 s transfer through the proxy:"; grep -E "splice|read|write|calls" '"$tmp"'/strace.out || true'
	sluice_wait || true
fi
[ -n "${ONLY:-}" ] && [ "$ONLY" != peers ] && [ "$ONLY" != redirect ] && exit 0

# Peers, in the same run, on two paths:
#   explicit  cli -> gw:8444 (nginx) / gw:8445 (haproxy), no netfilter in
#             the gateway (PEER_CT=1 adds empty conntrack and NAT hooks);
#   redirect  the agent of a sluice run -> port 9454 / 9455, redirected by
#             rules added to sluice's own table to the peer on 8454 / 8455:
#             the client's packets pay for exactly the hooks and rules that
#             sluice's redirected connections pay for, and the peer's
#             connections/s are comparable with sluice's. sluice's proxy
#             carries nothing meanwhile.
# ONLY=peers measures the explicit path only, ONLY=redirect the other.
if [ -n "${PEER_CT:-}" ]; then
	ip netns exec "$gw" nft -f - <<'NFT'
table inet benchct {
	chain pre { type nat hook prerouting priority dstnat; policy accept; }
	chain post { type nat hook postrouting priority srcnat; policy accept; }
}
NFT
fi
target=198.18.128.1:8443
cputicks() { awk '{print $14+$15}' "/proc/$1/stat"; }
runs=("cps -c 32" "cps -c 1" "tput -c 2")
# RUNS="cps -c 1;tput -c 2" replaces the phases of the peers and of the redirect run;
# RUNS="cps -c 32 -rate 10000" offers each the same load (connections a second).
[ -n "${RUNS:-}" ] && IFS=';' read -r -a runs <<<"$RUNS"
# peer NAME PID ADDR: the runs against a peer on ADDR, from cli, with its CPU.
peer() {
	local name=$1 pid=$2 addr=$3
	for r in "${runs[@]}"; do
		c0=$(cputicks "$pid")
		[ -n "${STRACE:-}" ] && { strace -f -c -o "$STRACE.$name.${r// /}" -p "$pid" & sleep 0.5; }
		[ -n "${PERF:-}" ] && { perf record -q -g -o "$PERF.$name.${r// /}" -p "$pid" & sleep 0.5; }
		out=$(ip netns exec "$cli" taskset -c 0 "$tmp/snibench" -role $r -target "$addr" -d "$D")
		[ -n "${STRACE:-}${PERF:-}" ] && { kill -INT $!; wait $! 2>/dev/null || true; }
		c1=$(cputicks "$pid")
		n=$(echo "$out" | sed -n 's/^conns=\([0-9]*\).*/\1/p')
		extra=""
		[ -n "$n" ] && extra=" cpu_us_per_conn=$(( (c1-c0)*10000000/(n>0?n:1)/1000 ))"
		echo "$name ($r): $out$extra cpu_s=$((c1-c0))/100"
	done
}
declare -A peerpid
if [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] && command -v nginx >/dev/null; then
	mkdir -p "$tmp/nginx"
	cat > "$tmp/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 16384; }
stream {
    map \$ssl_preread_server_name \$up {
        allowed.bench.test $target;
        default 127.0.0.1:1;
    }
    server {
        listen 198.18.3.1:8444 reuseport;
        listen 8454 reuseport;
        ssl_preread on;
        preread_timeout 5s;
        proxy_pass \$up;
        proxy_connect_timeout 2s;
        proxy_buffer_size 64k;
    }
}
NGINX
	ip netns exec "$gw" taskset -c 1 nginx -c "$tmp/nginx.conf" -g 'daemon off;' &
	pids+=($!)
	sleep 0.5
	peerpid[nginx]=$(pgrep -P "$(cat "$tmp/nginx/nginx.pid")" | head -1)
fi
if command -v haproxy >/dev/null; then
	cat > "$tmp/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option splice-auto
frontend sni_in
    bind 198.18.3.1:8445
    bind :8455
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend allowed if { req.ssl_sni -i allowed.bench.test }
    default_backend deny
backend allowed
    server up1 $target
backend deny
    tcp-request content reject
HAPROXY
	ip netns exec "$gw" taskset -c 1 haproxy -f "$tmp/haproxy.cfg" -db &
	pids+=($!)
	sleep 0.5
	peerpid[haproxy]=$!
fi
if [ "${ONLY:-}" != redirect ]; then
	[ -n "${peerpid[nginx]:-}" ] && peer nginx "${peerpid[nginx]}" 198.18.3.1:8444
	[ -n "${peerpid[haproxy]:-}" ] && peer haproxy "${peerpid[haproxy]}" 198.18.3.1:8445
fi
[ "${ONLY:-}" = peers ] && exit 0

# The redirect path, in one sluice run whose agent takes turns: sluice's
# own proxy (port 443), the routed path with no proxy (8443) and the peers
# behind the same redirect, each phase for every target in turn, ROUNDS
# times (default 1), each round starting with the next target.
# Interleaved, the ratios are not skewed by the host slowing down between
# the phases above, which run minutes apart.
# The agent's command waits until the rules are in; it asks the host for
# the CPU time of sluice and of the peers.
targets=("sluice 443 sluice" "direct 8443 -")
[ -n "${peerpid[nginx]:-}" ] && targets+=("nginx 9454 ${peerpid[nginx]}")
[ -n "${peerpid[haproxy]:-}" ] && targets+=("haproxy 9455 ${peerpid[haproxy]}")
script="while [ ! -e $tmp/go ]; do sleep 0.1; done"
for round in $(seq "${ROUNDS:-1}"); do
	# Each round starts with the next target, so that none is always the
	# first measured after a change of phase.
	k=$(( (round - 1) % ${#targets[@]} ))
	order=("${targets[@]:k}" "${targets[@]:0:k}")
	for r in "${runs[@]}"; do
		for t in "${order[@]}"; do
			read -r name port pid <<<"$t"
			label="$name redirected ($r)"
			[ "$name" = direct ] && label="direct ($r)"
			[ "${ROUNDS:-1}" -gt 1 ] && label+=" round $round"
			if [ "$pid" = - ]; then
				script+="
echo \"$label: \$(taskset -c 0 $tmp/snibench -role $r -target allowed.bench.test:$port -d $D)\""
				continue
			fi
			script+="
c0=\$(ask cpu $pid)
${PERF:+ask perf $pid $PERF.$name-redirected.${r// /}.$round}
out=\$(taskset -c 0 $tmp/snibench -role $r -target allowed.bench.test:$port -d $D)
${PERF:+ask untrace}
c1=\$(ask cpu $pid)
n=\$(echo \"\$out\" | sed -n 's/^conns=\([0-9]*\).*/\1/p')
extra=''; [ -n \"\$n\" ] && extra=\" cpu_us_per_conn=\$(( (c1-c0)*10000000/(n>0?n:1)/1000 ))\"
echo \"$label: \$out\$extra cpu_s=\$((c1-c0))/100\""
		done
	done
done
sluice_start "" /dev/null "$script"
until ip netns exec "$gw" nft list chain inet sluice-bench agent_in >/dev/null 2>&1; do sleep 0.1; done
agentif=$(ip netns exec "$gw" nft list chain inet sluice-bench prerouting | sed -n 's/.*iifname "\([^"]*\)".*/\1/p' | head -1)
ip netns exec "$gw" nft -f - <<NFT
insert rule inet sluice-bench prerouting iifname "$agentif" tcp dport 9454 redirect to :8454
insert rule inet sluice-bench prerouting iifname "$agentif" tcp dport 9455 redirect to :8455
insert rule inet sluice-bench agent_in tcp dport { 8454, 8455 } ct status dnat accept
NFT
touch "$tmp/go"
sluice_wait || true
