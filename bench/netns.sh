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

# The agent of a sluice run has a PID namespace and a /proc of its own, so
# it cannot read sluice's (or a peer's) CPU time, memory or descriptors,
# nor attach strace or perf to them. It asks the host instead, through two
# FIFOs in DIR, one question at a time:
#
#   host_helper DIR PID   (host, in the background; PID is sluice's) answers
#                         each question read from DIR/ask on DIR/answer;
#   agent_ask DIR         prints the agent's side, a shell function
#                         `ask VERB WHO [FILE [ARGS...]]`, WHO a host PID or
#                         the word sluice:
#     cpu WHO             user + system clock ticks of WHO
#     rss WHO             VmRSS of WHO in kB
#     fds WHO             number of open descriptors of WHO
#     strace WHO FILE [ARGS...]  strace -f -c ARGS -o FILE -p WHO, started
#     perf WHO FILE              perf record -q -g -o FILE -p WHO, started
#     untrace             stops every strace and perf started, waits for them
host_fifos() {
	mkfifo "$1/ask" "$1/answer"
}
host_helper() {
	local dir=$1 sluice=$2
	(
		tracers=""
		while :; do
			read -r verb who file args <"$dir/ask" || continue
			[ "$who" = sluice ] && who=$sluice
			{
				case $verb in
				cpu) awk '{print $14+$15}' "/proc/$who/stat" ;;
				rss) awk '/VmRSS/{print $2}' "/proc/$who/status" ;;
				fds) ls "/proc/$who/fd" | wc -l ;;
				strace)
					# shellcheck disable=SC2086 # args are words
					strace -f -c $args -o "$file" -p "$who" >/dev/null 2>&1 &
					tracers="$tracers $!"
					sleep 0.5
					;;
				perf)
					perf record -q -g -o "$file" -p "$who" >/dev/null 2>&1 &
					tracers="$tracers $!"
					sleep 0.5
					;;
				untrace)
					for t in $tracers; do kill -INT "$t"; wait "$t" 2>/dev/null; done
					tracers=""
					;;
				esac
			} >"$dir/answer" 2>/dev/null || true
		done
	) &
}
agent_ask() {
	printf 'ask() { echo "$*" >%s/ask; cat %s/answer; }\n' "$1" "$1"
}
