"""Static checks of the service Dockerfiles (no Docker engine needed): each
image Tilt and CI build has services/<name>/Dockerfile, and each one

  - builds in rust:<RUST_VERSION>-bookworm, RUST_VERSION not older than the
    workspace's rust-version, with BuildKit cache mounts for the registry and
    target/, running `cargo build --release --locked -p <its package>`;
  - copies only paths that exist (the build context is the repository root);
  - ends on gcr.io/distroless/cc-debian12:nonroot, USER nonroot, holding the
    package's binary (its [[bin]] name) as the ENTRYPOINT;
and .dockerignore keeps target/, .venv/, .data/, .cache/ and .git/ out of the
context. A renamed package or binary breaks this check, not an image build
nobody runs locally.

Usage: check_dockerfiles.py [REPO]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from deploylib import REPO, SERVICES, Findings

IMAGES = (*SERVICES, "model-sim")
RUNTIME = "gcr.io/distroless/cc-debian12:nonroot"
IGNORED = ("target/", ".venv/", ".data/", ".cache/", ".git/")


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def check_image(repo: Path, name: str, rust_version: str, f: Findings) -> None:
    crate = repo / "services" / name
    dockerfile = crate / "Dockerfile"
    where = str(dockerfile.relative_to(repo))
    if not dockerfile.is_file():
        f.add(where, "missing")
        return
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    package = manifest["package"]["name"]
    bins = [b["name"] for b in manifest.get("bin", []) if "name" in b] or [package]
    binary = bins[0]
    steps = _instructions(dockerfile.read_text())
    args = {m.group(1): m.group(2) for w, a in steps if w == "ARG" and (m := re.match(r"(\w+)=(\S+)", a))}

    froms = [a for w, a in steps if w == "FROM"]
    if not froms or not re.match(r"rust:(\$\{RUST_VERSION\}|[\d.]+)-bookworm\s+AS\s+\w+", froms[0], re.I):
        f.add(where, f"the first stage is not rust:<version>-bookworm AS <name>: {froms[:1]}")
    pinned = re.search(r"rust:([\d.]+)", froms[0]) if froms else None
    used = args.get("RUST_VERSION") or (pinned.group(1) if pinned else "")
    if not used or _version(used) < _version(rust_version):
        f.add(where, f"builds with Rust {used or '?'}, older than the workspace's rust-version {rust_version}")
    if not froms or froms[-1].split()[0] != RUNTIME:
        f.add(where, f"the final stage is not {RUNTIME}: {froms[-1:]}")

    runs = " ".join(a for w, a in steps if w == "RUN")
    if not re.search(rf"cargo build --release --locked -p {re.escape(package)}(\s|$)", runs):
        f.add(where, f"does not run `cargo build --release --locked -p {package}`")
    for target in ("/usr/local/cargo/registry", "/src/target"):
        if f"type=cache,target={target}" not in runs:
            f.add(where, f"no cache mount for {target}")
    if f"target/release/{binary}" not in runs:
        f.add(where, f"does not take target/release/{binary} (the package's binary)")

    for w, a in steps:
        if w != "COPY" or "--from=" in a:
            continue
        sources = [s for s in a.split() if not s.startswith("--")][:-1]
        for s in sources:
            if not (repo / s).exists():
                f.add(where, f"COPY {s}: no such path in the repository (the build context)")

    users = [a for w, a in steps if w == "USER"]
    if not users or users[-1] not in ("nonroot", "65532", "65532:65532"):
        f.add(where, f"the image does not end as USER nonroot: {users[-1:]}")
    entry = [a for w, a in steps if w == "ENTRYPOINT"]
    if not entry or not re.fullmatch(rf'\[\s*"/usr/local/bin/{re.escape(binary)}"\s*\]', entry[-1]):
        f.add(where, f'ENTRYPOINT is not ["/usr/local/bin/{binary}"]: {entry[-1:]}')
    copies_from = [a for w, a in steps if w == "COPY" and "--from=" in a]
    if not any(a.split()[-1] == f"/usr/local/bin/{binary}" for a in copies_from):
        f.add(where, f"the runtime stage does not copy the binary to /usr/local/bin/{binary}")


def check(repo: Path = REPO) -> tuple[Findings, int]:
    f = Findings("dockerfiles")
    workspace = tomllib.loads((repo / "Cargo.toml").read_text())
    rust_version = workspace["workspace"]["package"]["rust-version"]
    for name in IMAGES:
        check_image(repo, name, rust_version, f)
    ignore = repo / ".dockerignore"
    entries = ignore.read_text().split() if ignore.is_file() else []
    for entry in IGNORED:
        if entry not in entries and entry.rstrip("/") not in entries:
            f.add(".dockerignore", f"does not exclude {entry}")
    return f, len(IMAGES)


def main(argv: list[str]) -> int:
    repo = Path(argv[0]).resolve() if argv else REPO
    findings, count = check(repo)
    rc = findings.report()
    if not rc:
        print(f"ok [dockerfiles] {count} Dockerfiles build their package's binary into {RUNTIME}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
