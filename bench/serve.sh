#!/usr/bin/env bash
# sluice serve with many agents (issue 13): runs the Go benchmarks of
# testing/e2e/serve_bench_test.go, ROUNDS times each, and
# prints the median [min-max] of every figure over the rounds (one test
# process a round, each started once the host is idle).
#
#   sudo bench/serve.sh                       # all of them, 3 rounds
#   ONLY='ServeReload ServeMemory' ROUNDS=5 sudo bench/serve.sh
#   HEAP=1 ONLY=ServeMemory sudo bench/serve.sh   # + heap profiles, and
#        pprof's top of what 100 idle agents hold beyond 1
#
# Each benchmark builds its own world (testing/e2e: a gateway namespace, a
# fake internet with its authoritative DNS, addresses from 198.18.0.0/15)
# and runs `sluice serve` there with a private /run/sluice; agents are
# namespaces sluice-<id>-aNNN with links in 198.19.0.0/16 and
# 2001:db8:100::/48. Everything is removed when a benchmark ends, failed
# or not. The figures and the environment knobs are described in
# serve_bench_test.go; the results are in bench/README.md, "Issue 13".
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-ServeReload ServeReloadUnderLoad ServeRestart ServeResolver ServeMemory}
OUT=${OUT:-$(mktemp -d /tmp/sluice-serve-bench.XXXXXX)}
mkdir -p "$OUT"
echo "results in $OUT" >&2
go test -c -o "$OUT/e2e.test" ./testing/e2e
if [ -n "${HEAP:-}" ]; then
	export SLUICE_BENCH_HEAP="$OUT/heap"
	mkdir -p "$SLUICE_BENCH_HEAP"
fi

# iterations per round of each benchmark
declare -A TIMES=([ServeReload]=5x [ServeReloadUnderLoad]=3x [ServeRestart]=5x [ServeResolver]=5x [ServeMemory]=1x)

# idle: the share of CPU time the host spent idle over 3 s.
idle() {
	local a b
	read -ra a < <(head -1 /proc/stat)
	sleep 3
	read -ra b < <(head -1 /proc/stat)
	local total=0 i
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	echo $(( (b[4] - a[4] + b[5] - a[5]) * 1000 / (total > 0 ? total : 1) ))
}
# wait_idle: up to WAIT_IDLE seconds (600) for a host at least 97% idle
# over 3 s (this machine is shared: other sessions' tests run on it); the
# idle share at the start of each benchmark is printed with its figures.
wait_idle() {
	local deadline=$((SECONDS + ${WAIT_IDLE:-600})) i
	while :; do
		i=$(idle)
		if [ "$i" -ge 970 ] || [ $SECONDS -ge $deadline ]; then
			echo "host idle ${i}/1000 over 3 s, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M:%S) UTC"
			return
		fi
	done
}

# TestMain builds sluice and dnsload from ../../cmd/sluice and
# ../../bench/dnsload: the test binary runs from its package directory.
cd testing/e2e
for b in $ONLY; do
	: > "$OUT/$b.txt"
	for r in $(seq "$ROUNDS"); do # one process a round, each after the host is idle
		wait_idle | tee -a "$OUT/$b.txt"
		"$OUT/e2e.test" -test.run '^$' -test.bench "^Benchmark$b\$" -test.benchtime "${TIMES[$b]:-3x}" \
			-test.count 1 -test.timeout 4h 2>&1 | tee -a "$OUT/$b.txt"
	done
done

# The median [min-max] over the rounds of every figure a benchmark line
# reports ("value unit" pairs after the iteration count).
python3 - "$OUT" $ONLY <<'EOF'
import re, sys, statistics, collections
out, names = sys.argv[1], sys.argv[2:]
for name in names:
    figs = collections.OrderedDict()
    for line in open(f"{out}/{name}.txt"):
        m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$", line)
        if not m:
            continue
        f = m.group(3).split()
        for v, unit in zip(f[::2], f[1::2]):
            figs.setdefault((m.group(1), unit), []).append(float(v))
    for (bench, unit), vs in figs.items():
        if unit == "ns/op":
            continue
        print(f"{bench:45s} {unit:24s} {statistics.median(vs):12.2f}  [{min(vs):.2f}-{max(vs):.2f}]  n={len(vs)}")
EOF

if [ -n "${HEAP:-}" ] && ls "$SLUICE_BENCH_HEAP"/heap-1.1 >/dev/null 2>&1; then
	last=$(ls "$SLUICE_BENCH_HEAP" | sed -n 's/^heap-\([0-9]*\)\.1$/\1/p' | sort -n | tail -1)
	echo "== heap in use: $last idle agents minus 1 (pprof -diff_base)"
	go tool pprof -top -nodecount 40 -sample_index inuse_space -diff_base "$SLUICE_BENCH_HEAP/heap-1.1" \
		"$OUT/e2e.test" "$SLUICE_BENCH_HEAP/heap-$last.1" 2>/dev/null | tee "$OUT/heap-top.txt"
fi

# Nothing of the benchmarks may be left: no agent namespace (the worlds'
# own namespaces are the harness's to remove, and other tests make some).
left=$(ip netns list | grep -E '^sluice-[0-9a-f]{6}-a[0-9]{3}\b' || true)
if [ -n "$left" ]; then
	echo "left behind:" >&2
	echo "$left" >&2
	exit 1
fi
