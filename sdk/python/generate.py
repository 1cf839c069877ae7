"""Regenerates `agentmesh._generated` from proto/agentmesh/v1/*.proto.

    .venv/bin/python sdk/python/generate.py            # into the package
    .venv/bin/python sdk/python/generate.py --out DIR  # elsewhere (scripts/check-sdk)

protoc (from grpcio-tools, pinned in scripts/test) writes messages, type
stubs and gRPC stubs; the imports it writes name the proto package
(`from agentmesh.v1 import x_pb2`), which would resolve to this SDK's own
top-level package, so they are rewritten to package-relative ones and the
modules are laid out flat. The output depends only on the proto files and
the grpcio-tools version: scripts/check-sdk regenerates into a temporary
folder and fails when the committed code differs.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = HERE / "src" / "agentmesh" / "_generated"

# `from agentmesh.v1 import control_pb2 as agentmesh_dot_v1_dot_control__pb2`
PROTO_IMPORT = re.compile(r"^from agentmesh\.v1 import (\w+) as ", re.MULTILINE)

INIT = '''"""Generated from proto/agentmesh/v1 by sdk/python/generate.py: do not edit.

grpcio-tools {version}; regenerate with `.venv/bin/python sdk/python/generate.py`.
"""
'''


def generate(out: pathlib.Path, proto_root: pathlib.Path = PROTO_ROOT) -> list[pathlib.Path]:
    from grpc_tools import protoc
    import grpc_tools
    from importlib import metadata

    proto_dir = proto_root / "agentmesh" / "v1"
    protos = sorted(proto_dir.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_dir}")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            *(str(p) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*_pb2*.py*"):
            stale.unlink()
        written = []
        for source in sorted((pathlib.Path(raw) / "agentmesh" / "v1").iterdir()):
            text = PROTO_IMPORT.sub(r"from . import \1 as ", source.read_text())
            target = out / source.name
            target.write_text(text)
            written.append(target)
    version = metadata.version("grpcio-tools")
    (out / "__init__.py").write_text(INIT.format(version=version))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--proto", type=pathlib.Path, default=PROTO_ROOT, help="the folder holding agentmesh/v1/*.proto"
    )
    args = parser.parse_args()
    written = generate(args.out, args.proto.resolve())
    print(f"wrote {len(written)} modules to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
