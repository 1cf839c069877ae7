#!/usr/bin/env bash
# stop-redis.sh: stop the project-local redis-server that ensure-redis.sh
# started (pid in $REPO/.data/redis.pid). Does nothing when there is none; a
# Redis it did not start (REDIS_URL, 127.0.0.1:6379) is never touched.
# Prints nothing on stdout.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

data="$(repo_root)/.data"
pidfile="$data/redis.pid"
portfile="$data/redis.port"

if [[ ! -f "$pidfile" ]]; then
    log "no project-local redis-server is running (no $pidfile)"
    rm -f "$portfile"
    exit 0
fi

pid="$(cat "$pidfile")"
if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "the project-local redis-server is not running; removing its stale pidfile"
    rm -f "$pidfile" "$portfile"
    exit 0
fi
if [[ -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm")" != redis-server* ]]; then
    log "pid $pid is no longer a redis-server; removing the stale pidfile"
    rm -f "$pidfile" "$portfile"
    exit 0
fi

log "stopping the project-local redis-server (pid $pid)"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
    warn "redis-server (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$pidfile" "$portfile"
log "stopped"
