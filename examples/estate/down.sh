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

stopped=()
for pidfile in "$run"/*.pid; do
    [[ -f $pidfile ]] || continue
    read -r pid started <"$pidfile" || continue
    name=$(basename "$pidfile" .pid)
    if [[ -n ${pid:-} && -n ${started:-} ]] && ours "$pid" "$started"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while ours "$pid" "$started" && ((SECONDS < deadline)); do sleep 0.1; done
        if ours "$pid" "$started"; then
            say "$name did not stop within 10 s of SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        stopped+=("$name")
    fi
done
rm -rf "$run" "$here/out" "$here/.cfgsync"
if ((${#stopped[@]} > 0)); then
    say "stopped ${stopped[*]}; removed .run/, out/ and .cfgsync/"
else
    say "nothing was running; removed .run/, out/ and .cfgsync/"
fi
