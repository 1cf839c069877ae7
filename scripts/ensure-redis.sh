#!/usr/bin/env bash
# ensure-redis.sh: make a Redis server reachable and print its URL.
#
# stdout: one line, a redis:// URL that answers PING.
# stderr: progress ("==> ...").
#
# In order:
#   1. $REDIS_URL, when set and it answers PING;
#   2. redis://127.0.0.1:6379, when something there answers PING;
#   3. a project-local redis-server this script started before (its pid and
#      port are in $REPO/.data/redis.pid and .data/redis.port), if still up;
#   4. otherwise it starts a project-local redis-server on a free port, with no
#      persistence (--save "" --appendonly no), state in $REPO/.data, after
#      installing Debian's redis-server when it is missing (sudo when not root).
# Stop the project-local one with scripts/stop-redis.sh.
#
# Environment:
#   REDIS_URL   a Redis to use when it answers
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# redis_ping URL: whether the Redis at URL answers PING with PONG.
# (SC2016: the '$' in RESP strings and the inner bash script are literal.)
# shellcheck disable=SC2016
redis_ping() {
    local url="$1"
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(timeout 3 redis-cli -u "$url" --no-auth-warning ping 2>/dev/null)" == "PONG" ]]
        return
    fi
    # No redis-cli: speak RESP over bash's /dev/tcp.
    local rest userinfo="" hostport host port user pass
    rest="${url#*://}"
    rest="${rest%%/*}"
    if [[ "$rest" == *@* ]]; then
        userinfo="${rest%@*}"
        hostport="${rest##*@}"
    else
        hostport="$rest"
    fi
    if [[ "$hostport" =~ ^\[(.*)\](:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}"
        port="${BASH_REMATCH[3]:-6379}"
    else
        host="${hostport%%:*}"
        port="6379"
        [[ "$hostport" == *:* ]] && port="${hostport##*:}"
    fi
    [[ -n "$host" ]] || host=127.0.0.1
    local request="" auth=""
    if [[ -n "$userinfo" ]]; then
        user="${userinfo%%:*}"
        pass=""
        [[ "$userinfo" == *:* ]] && pass="${userinfo#*:}"
        if [[ -n "$user" && "$user" != default ]]; then
            printf -v auth '*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#user}" "$user" "${#pass}" "$pass"
        elif [[ -n "$pass" ]]; then
            printf -v auth '*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n' "${#pass}" "$pass"
        fi
    fi
    request="${auth}"$'*1\r\n$4\r\nPING\r\n'
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "%s" "$3" >&3
        while IFS= read -r line <&3; do
            case "$line" in
                +PONG*) exit 0 ;;
                -*) exit 1 ;;
            esac
        done
        exit 1
    ' _ "$host" "$port" "$request" >/dev/null 2>&1
}

if [[ -n "${REDIS_URL:-}" ]]; then
    if redis_ping "$REDIS_URL"; then
        log "REDIS_URL answers PING"
        printf '%s\n' "$REDIS_URL"
        exit 0
    fi
    warn "REDIS_URL=$REDIS_URL does not answer PING; looking for another Redis"
fi

if redis_ping "redis://127.0.0.1:6379"; then
    log "a Redis on 127.0.0.1:6379 answers PING"
    printf '%s\n' "redis://127.0.0.1:6379"
    exit 0
fi

data="$(data_dir)"
pidfile="$data/redis.pid"
portfile="$data/redis.port"

if [[ -f "$pidfile" && -f "$portfile" ]]; then
    pid="$(cat "$pidfile")"
    port="$(cat "$portfile")"
    url="redis://127.0.0.1:${port}"
    if kill -0 "$pid" 2>/dev/null && redis_ping "$url"; then
        log "the project-local redis-server (pid $pid) is already running"
        printf '%s\n' "$url"
        exit 0
    fi
    log "removing the stale pidfile of a project-local redis-server"
    rm -f "$pidfile" "$portfile"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH after apt-get install"
fi

port="$(free_port)"
url="redis://127.0.0.1:${port}"
log "starting a project-local redis-server on 127.0.0.1:${port} (state in $data)"
redis-server \
    --bind 127.0.0.1 \
    --port "$port" \
    --save "" \
    --appendonly no \
    --daemonize yes \
    --pidfile "$pidfile" \
    --dir "$data" \
    --logfile "$data/redis.log" >&2 || die "redis-server failed to start (see $data/redis.log)"
printf '%s\n' "$port" >"$portfile"

for _ in $(seq 1 50); do
    if redis_ping "$url"; then
        log "redis-server is up (pid $(cat "$pidfile" 2>/dev/null || echo '?'))"
        printf '%s\n' "$url"
        exit 0
    fi
    sleep 0.2
done
die "redis-server on port $port did not answer PING within 10 s (see $data/redis.log)"
