"""Regenerate the committed ``*_pb2*.py`` modules from ``protos/*.proto``.

Run from anywhere: ``python -m protos.generate [--out DIR]``. The output goes to the repository
root (so modules land beside their ``.proto`` files) unless ``--out`` names another root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "protos").glob("*.proto"))


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) over every proto file into ``out_root``."""
    from grpc_tools import protoc  # build/dev dependency only

    args = ["protoc", f"-I{ROOT}", f"--python_out={out_root}", f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}", *PROTO_FILES]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {PROTO_FILES}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository root)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
