#!/busybox/sh
# shellcheck shell=sh
#
# Dev-only entrypoint (Tilt). Runs the service binary and restarts it when
# Tilt's live update has synced a new one to /app/next/incoming/service and
# sent SIGHUP (`kill -HUP 1`). /app/next is an emptyDir (dev overlay), so the
# root filesystem stays read-only, and the newest binary survives container
# restarts. SIGTERM and SIGINT are passed on: the service drains as it does in
# production, and its exit status becomes the container's.
set -u

incoming=/app/next/incoming/service
current=/app/next/service
child=0
restart=0
stopping=0

on_hup() {
    restart=1
    if [ "$child" -ne 0 ]; then kill -TERM "$child" 2>/dev/null; fi
}
on_term() {
    stopping=1
    if [ "$child" -ne 0 ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap on_hup HUP
trap on_term TERM INT

while :; do
    # A rename replaces the file even while the old binary runs.
    if [ -f "$incoming" ]; then
        chmod 0755 "$incoming" && mv -f "$incoming" "$current"
    fi
    bin=/app/service
    if [ -x "$current" ]; then bin="$current"; fi

    "$bin" &
    child=$!
    # `wait` returns early when a trapped signal arrives: wait again until
    # the service has really exited.
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    child=0

    if [ "$restart" -eq 1 ] && [ "$stopping" -eq 0 ]; then
        restart=0
        echo "dev-entrypoint: restarting with $bin" >&2
        continue
    fi
    exit "$rc"
done
