#!/usr/bin/env bash
# Builds the service binaries for Tilt's dev images and stages each one, with
# the dev entrypoint, under .cache/tilt/<image>/ (the docker_build contexts
# of the Tiltfile). Tilt runs it as the `cargo-build` local resource; a
# changed binary is then synced into the running container (live update).
#
# The dev images run Debian 12 (glibc 2.36). AGENTMESH_TILT_BUILD picks how
# the binaries are built:
#   native  cargo on this machine (Linux with glibc <= 2.36 only)
#   docker  cargo inside rust:1.95-bookworm, target dir target/tilt-bookworm
#   auto    (default) native where that is safe, docker elsewhere (macOS,
#           newer glibc)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$root"

# image name -> cargo package and binary
images=(gateway orchestrator agent-worker retrieval inference-router trace-collector model-sim)
package_of() { printf '%s\n' "$1"; }
binary_of() {
    case "$1" in
        model-sim) printf 'agentmesh-model-sim\n' ;;
        *) printf '%s\n' "$1" ;;
    esac
}

glibc_ok() {
    [[ "$(uname -s)" == Linux ]] || return 1
    local version
    version="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
    [[ -n "$version" ]] || return 1
    # Not newer than Debian 12's 2.36.
    [[ "$(printf '%s\n2.36\n' "$version" | sort -V | tail -n1)" == 2.36 ]]
}

mode="${AGENTMESH_TILT_BUILD:-auto}"
if [[ "$mode" == auto ]]; then
    if glibc_ok && command -v cargo >/dev/null 2>&1; then mode=native; else mode=docker; fi
fi

args=(build --release --locked)
for image in "${images[@]}"; do
    args+=(-p "$(package_of "$image")")
done

case "$mode" in
    native)
        target_dir="${CARGO_TARGET_DIR:-$root/target}"
        cargo "${args[@]}"
        ;;
    docker)
        target_dir="$root/target/tilt-bookworm"
        mkdir -p "$target_dir"
        docker run --rm \
            --user "$(id -u):$(id -g)" \
            -v "$root":/src -w /src \
            -e CARGO_HOME=/src/target/tilt-bookworm/cargo-home \
            -e CARGO_TARGET_DIR=/src/target/tilt-bookworm \
            rust:1.95-bookworm cargo "${args[@]}"
        ;;
    *)
        printf 'build.sh: AGENTMESH_TILT_BUILD must be native, docker or auto, not %s\n' "$mode" >&2
        exit 2
        ;;
esac

for image in "${images[@]}"; do
    stage="$root/.cache/tilt/$image"
    mkdir -p "$stage"
    install -m 0755 "$root/deploy/tilt/dev-entrypoint.sh" "$stage/dev-entrypoint.sh"
    # Copy then rename, so Tilt never syncs a half-written binary.
    install -m 0755 "$target_dir/release/$(binary_of "$image")" "$stage/.service.tmp"
    mv -f "$stage/.service.tmp" "$stage/service"
done
printf 'build.sh: staged %d images (%s build)\n' "${#images[@]}" "$mode"
