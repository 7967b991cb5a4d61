"""The committed generated modules match a fresh generation from the .proto files."""

from __future__ import annotations

from pathlib import Path

from protos.generate import ROOT, generate


def test_generated_modules_are_fresh(tmp_path: Path):
    generate(tmp_path)
    fresh = sorted((tmp_path / "protos").glob("*_pb2*.py*"))
    committed = sorted((ROOT / "protos").glob("*_pb2*.py*"))
    assert [p.name for p in fresh] == [p.name for p in committed], "a generated module is missing or extra"
    stale = [p.name for p in fresh if p.read_bytes() != (ROOT / "protos" / p.name).read_bytes()]
    assert not stale, f"regenerate with `python -m protos.generate`: stale {stale}"
