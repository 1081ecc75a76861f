#!/usr/bin/env bash
# examples/estate/down.sh — stops what examples/estate/up.sh started and
# removes its state (.run/) and what the walk wrote (out/, and .cfgsync/, the
# file targets' record of their writes). Safe to run
# twice, or when nothing is up. Only the processes up.sh recorded are
# signalled, and only while their pid still names the process up.sh started
# (same start time): a recycled pid is left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run=$here/.run

say() { printf 'down.sh: %s\n' "$*" >&2; }

start_time() { local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; stat=${stat##*) }; read -ra f <<<"$stat"; printf '%s\n' "${f[19]}"; }
ours() { [[ $(start_time "$1" 2>/dev/null) == "$2" ]]; }

# SIGTERM to each of ours, then wait for all of them together (10 s at
# most), then SIGKILL what is left.
names=() pids=() starts=()
for pidfile in "$run"/*.pid; do
    [[ -f $pidfile ]] || continue
    read -r pid started <"$pidfile" || continue
    if [[ -n ${pid:-} && -n ${started:-} ]] && ours "$pid" "$started"; then
        names+=("$(basename "$pidfile" .pid)") pids+=("$pid") starts+=("$started")
        kill -TERM "$pid" 2>/dev/null || true
    fi
done
deadline=$((SECONDS + 10))
for i in "${!pids[@]}"; do
    while ours "${pids[$i]}" "${starts[$i]}" && ((SECONDS < deadline)); do sleep 0.1; done
    if ours "${pids[$i]}" "${starts[$i]}"; then
        say "${names[$i]} did not stop within 10 s of SIGTERM: SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
done
stopped=("${names[@]}")
rm -rf "$run" "$here/out" "$here/.cfgsync"
if ((${#stopped[@]} > 0)); then
    say "stopped ${stopped[*]}; removed .run/, out/ and .cfgsync/"
else
    say "nothing was running; removed .run/, out/ and .cfgsync/"
fi
