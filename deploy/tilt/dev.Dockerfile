# syntax=docker/dockerfile:1
#
# Dev image for Tilt (never for production: services/<name>/Dockerfile is).
# Build context: .cache/tilt/<image>/, staged by deploy/tilt/build.sh with the
# service binary (`service`) and dev-entrypoint.sh. The debug variant of the
# same distroless runtime adds busybox: Tilt's live update needs `tar` and
# `sh` in the container to sync a new binary and signal the entrypoint.
FROM gcr.io/distroless/cc-debian12:debug-nonroot
COPY --chown=65532:65532 --chmod=0755 dev-entrypoint.sh service /app/
USER nonroot
ENTRYPOINT ["/busybox/sh", "/app/dev-entrypoint.sh"]
