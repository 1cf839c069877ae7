#!/usr/bin/env bash
# shellcheck shell=bash
#
# Shared helpers for the agentmesh set-up scripts. Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything it creates lives under the repository: .venv/ (Python tools),
# .data/ (runtime state of project-local servers), .cache/ (pip's cache,
# unless PIP_CACHE_DIR says otherwise). All three are git-ignored.
#
# Progress goes to stderr, prefixed with "==> ", so that callers can keep a
# script's stdout for its one result line.

if [[ -n "${_AGENTMESH_LIB_SOURCED:-}" ]]; then
    return 0
fi
_AGENTMESH_LIB_SOURCED=1

# The repository root, resolved from this file's own location.
_AGENTMESH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# log MESSAGE...: a progress line on stderr.
log() {
    printf '==> %s\n' "$*" >&2
}

# warn MESSAGE...: a warning on stderr.
warn() {
    printf '==> WARNING: %s\n' "$*" >&2
}

# die MESSAGE...: an error on stderr, then exit 1.
die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

# repo_root: the absolute path of the repository.
repo_root() {
    printf '%s\n' "$_AGENTMESH_REPO"
}

# venv_dir: the project's virtual environment ($REPO/.venv).
venv_dir() {
    printf '%s\n' "$_AGENTMESH_REPO/.venv"
}

# data_dir: runtime state of project-local servers ($REPO/.data), created.
data_dir() {
    mkdir -p "$_AGENTMESH_REPO/.data"
    printf '%s\n' "$_AGENTMESH_REPO/.data"
}

# pip_cache: pip's cache folder: $PIP_CACHE_DIR when set, else
# $REPO/.cache/pip. Created if missing.
pip_cache() {
    local dir="${PIP_CACHE_DIR:-$_AGENTMESH_REPO/.cache/pip}"
    mkdir -p "$dir"
    printf '%s\n' "$dir"
}

# venv_pip ARGS...: run the venv's pip with the project's cache.
venv_pip() {
    local cache
    cache="$(pip_cache)"
    PIP_CACHE_DIR="$cache" "$(venv_dir)/bin/python" -m pip "$@"
}

# ensure_venv: create $REPO/.venv if it is missing or broken, and upgrade pip
# in it once (a marker file records that it was done).
ensure_venv() {
    local venv python
    venv="$(venv_dir)"
    python="${AGENTMESH_PYTHON:-python3}"
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        :
    else
        if [[ -e "$venv" ]]; then
            log "the virtual environment at $venv is broken; recreating it"
            rm -rf "$venv"
        fi
        command -v "$python" >/dev/null 2>&1 || die "$python not found; install Python 3 (with the venv module)"
        log "creating the virtual environment $venv"
        "$python" -m venv "$venv" || die "'$python -m venv' failed (on Debian: apt-get install -y python3-venv)"
    fi
    if [[ ! -f "$venv/.pip-upgraded" ]]; then
        log "upgrading pip in $venv"
        venv_pip install --quiet --upgrade pip >&2
        touch "$venv/.pip-upgraded"
    fi
}

# pip_installed NAME==VERSION | NAME: whether the venv has that distribution
# (at that exact version when one is given).
pip_installed() {
    local spec="$1" name version
    name="${spec%%==*}"
    version=""
    [[ "$spec" == *==* ]] && version="${spec#*==}"
    "$(venv_dir)/bin/python" - "$name" "$version" <<'PY' >/dev/null 2>&1
import sys
from importlib import metadata
name, want = sys.argv[1], sys.argv[2]
try:
    have = metadata.version(name)
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if not want or have == want else 1)
PY
}

# free_port: a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# tcp_open HOST PORT: whether HOST:PORT accepts a TCP connection (2 s limit).
tcp_open() {
    local host="$1" port="$2"
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" >/dev/null 2>&1
}

# as_root CMD...: run CMD as root, through sudo when we are not root.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (and sudo is not installed)"
    fi
}

# apt_install PKG...: apt-get install, running apt-get update first when the
# package lists are missing or the install fails on a stale list.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    fi
    log "apt-get install -y $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; then
        log "apt-get update (the install failed; the package lists may be stale)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
    fi
}

# ensure_code_sandbox: what the agent worker's `code` tools run in:
# bubblewrap (the sandbox), prlimit from util-linux (its rlimits) and the
# system's python3 (the interpreter the sandbox sees under /usr).
ensure_code_sandbox() {
    command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap
    command -v prlimit >/dev/null 2>&1 || apt_install util-linux
    [[ -x /usr/bin/python3 ]] || apt_install python3
}
