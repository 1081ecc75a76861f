#!/usr/bin/env bash
# scripts/measure-idle.sh [SECONDS] — idle CPU time and memory of `cfgsync run`
# on examples/quickstart (file source, 1 m interval) over SECONDS (default 600).
#
# Builds the release binary, runs the service on a copy of the quickstart (so
# nothing is written into the repository), lets it do its first pass, then
# samples utime+stime from /proc/PID/stat and VmRSS/VmHWM from
# /proc/PID/status at the start and the end of the window. Bounded: it stops
# the service when done (and on Ctrl-C).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-600}
cargo build --release --quiet --bin cfgsync
work=$(mktemp -d)
cp -r examples/quickstart/. "$work/"
./target/release/cfgsync --config "$work/cfgsync.toml" run --listen 127.0.0.1:0 2>"$work/service.log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# Start-up and the first pass are not idle time: wait for the first pass.
for _ in $(seq 100); do
    grep -q 'pass done' "$work/service.log" && break
    sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
ticks=$(getconf CLK_TCK)
c0=$(cpu)
rss0=$(kb VmRSS)
sleep "$seconds"
c1=$(cpu)
rss1=$(kb VmRSS)
hwm=$(kb VmHWM)
passes=$(grep -c 'pass done' "$work/service.log" || true)
awk -v c0="$c0" -v c1="$c1" -v t="$ticks" -v s="$seconds" -v r0="$rss0" -v r1="$rss1" -v h="$hwm" -v p="$passes" 'BEGIN {
    cpu = (c1 - c0) / t
    printf "cfgsync run on examples/quickstart, idle for %d s (%d passes logged)\n", s, p
    printf "  CPU time: %.2f s  (%.4f %% of one core)\n", cpu, 100 * cpu / s
    printf "  RSS: %.1f MiB at start, %.1f MiB at end, peak %.1f MiB\n", r0 / 1024, r1 / 1024, h / 1024
}'
