#!/usr/bin/env bash
# local-model-server.sh GGUF PORT: run llama-cpp-python's OpenAI-compatible
# server in the foreground (exec), on 127.0.0.1:PORT, serving GGUF under the
# model name "smollm2". Install it first with scripts/ensure-local-model.sh,
# which prints the GGUF path:
#
#   scripts/local-model-server.sh "$(scripts/ensure-local-model.sh)" 8088
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 ]] || die "usage: $0 GGUF PORT"
gguf="$1"
port="$2"
[[ -f "$gguf" ]] || die "no model file at $gguf (run scripts/ensure-local-model.sh)"
[[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"

py="$(venv_dir)/bin/python"
[[ -x "$py" ]] || die "no $py (run scripts/ensure-local-model.sh)"

log "local model server on http://127.0.0.1:${port}/v1 (model smollm2, $gguf)"
exec "$py" -m llama_cpp.server \
    --model "$gguf" \
    --model_alias smollm2 \
    --host 127.0.0.1 \
    --port "$port" \
    --n_ctx 2048 \
    --n_threads 2 \
    --chat_format chatml-function-calling
