#!/usr/bin/env bash
# ensure-postgres.sh: make a PostgreSQL server reachable for the tests and
# print its URL.
#
# stdout: one line, a postgres:// URL.
# stderr: progress ("==> ...").
#
# In order:
#   1. $DATABASE_URL, when it is a postgres:// or postgresql:// URL that
#      accepts connections (a sqlite: URL is ignored here);
#   2. postgres://postgres@127.0.0.1:5432/postgres, when 127.0.0.1:5432
#      accepts connections;
#   3. Debian's first PostgreSQL cluster (/etc/postgresql/VERSION/main), when
#      it is installed but stopped: started with pg_ctlcluster;
#   4. otherwise apt-get installs postgresql (sudo when not root), starts its
#      cluster the same way and, because it is a fresh install made here,
#      lets 127.0.0.1 connect without a password ("trust" in pg_hba.conf).
# The URL of 3 and 4 uses the cluster's port (5432 unless configured).
#
# Environment:
#   DATABASE_URL   a PostgreSQL to use when it answers
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# pg_up HOST PORT: whether a PostgreSQL server accepts connections there.
pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 3
    else
        tcp_open "$1" "$2"
    fi
}

# url_up URL: whether the server of a postgres:// URL accepts connections.
url_up() {
    local url="$1" rest hostport host port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -d "$url" -t 3
        return
    fi
    rest="${url#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    hostport="${rest##*@}"
    host="${hostport%%:*}"
    port=5432
    [[ "$hostport" == *:* ]] && port="${hostport##*:}"
    tcp_open "${host:-127.0.0.1}" "$port"
}

# check_login URL: warn (only) when psql exists and cannot log in with URL.
check_login() {
    command -v psql >/dev/null 2>&1 || return 0
    if ! PGCONNECT_TIMEOUT=5 psql "$1" -w -Atqc 'select 1' >/dev/null 2>&1; then
        warn "the server answers, but 'psql $1' cannot log in (password or pg_hba.conf?)"
    fi
}

if [[ -n "${DATABASE_URL:-}" ]]; then
    case "$DATABASE_URL" in
        postgres://* | postgresql://*)
            if url_up "$DATABASE_URL"; then
                log "DATABASE_URL accepts connections"
                printf '%s\n' "$DATABASE_URL"
                exit 0
            fi
            warn "DATABASE_URL does not accept connections; looking for another PostgreSQL"
            ;;
        *)
            warn "DATABASE_URL is not a postgres:// URL; ignoring it here"
            ;;
    esac
fi

if pg_up 127.0.0.1 5432; then
    url="postgres://postgres@127.0.0.1:5432/postgres"
    log "PostgreSQL on 127.0.0.1:5432 accepts connections"
    check_login "$url"
    printf '%s\n' "$url"
    exit 0
fi

# The first Debian cluster: "VERSION" of /etc/postgresql/VERSION/main.
first_cluster_version() {
    local d
    for d in /etc/postgresql/*/main; do
        [[ -d "$d" ]] || continue
        d="${d%/main}"
        printf '%s\n' "${d##*/}"
        return 0
    done
    return 1
}

# cluster_port VERSION: the port in the cluster's postgresql.conf (5432 default).
cluster_port() {
    local conf="/etc/postgresql/$1/main/postgresql.conf" port=""
    if [[ -r "$conf" ]]; then
        port="$(sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]\+\).*/\1/p' "$conf" | tail -1)"
    fi
    printf '%s\n' "${port:-5432}"
}

data="$(data_dir)"
marker="$data/postgres.installed-here"

if ! version="$(first_cluster_version)"; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        die "PostgreSQL is installed but has no cluster in /etc/postgresql; create one (pg_createcluster VERSION main) or set DATABASE_URL"
    fi
    apt_install postgresql
    touch "$marker"
    version="$(first_cluster_version)" || die "apt-get installed postgresql, but no cluster appeared in /etc/postgresql"
fi
port="$(cluster_port "$version")"

# A fresh install made by this script (the marker records it, so that a rerun
# after an interruption still does it): trust local TCP logins from 127.0.0.1.
if [[ -f "$marker" ]]; then
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        log "letting 127.0.0.1 connect without a password (fresh install): $hba"
        tmp="$(mktemp)"
        {
            echo "# added by agentmesh scripts/ensure-postgres.sh (fresh install, for tests)"
            echo "host    all    all    127.0.0.1/32    trust"
            as_root cat "$hba"
        } >"$tmp"
        as_root cp "$tmp" "$hba"
        rm -f "$tmp"
        if pg_up 127.0.0.1 "$port"; then
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2 || true
        fi
    fi
fi

if ! pg_up 127.0.0.1 "$port"; then
    log "starting PostgreSQL $version/main (port $port)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 \
        || die "pg_ctlcluster $version main start failed (see /var/log/postgresql/postgresql-$version-main.log)"
    for _ in $(seq 1 60); do
        pg_up 127.0.0.1 "$port" && break
        sleep 0.5
    done
    pg_up 127.0.0.1 "$port" || die "PostgreSQL $version/main did not accept connections on 127.0.0.1:$port within 30 s"
fi

url="postgres://postgres@127.0.0.1:${port}/postgres"
log "PostgreSQL $version/main accepts connections on 127.0.0.1:$port"
check_login "$url"
printf '%s\n' "$url"
