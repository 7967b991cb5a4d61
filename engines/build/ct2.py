"""Reader for CTranslate2's ``model.bin`` (binary versions 4 to 6).

Layout, all little-endian (written by CTranslate2's ``ModelSpec._serialize``, read by
``src/models/model.cc``)::

    u32 binary_version
    str spec_name            (str = u16 length including the trailing NUL, bytes, NUL)
    u32 spec_revision
    u32 variable_count
    variable_count x { str name, u8 rank, u32 dims[rank], u8 dtype_id, u32 byte_count, bytes }
    u32 alias_count
    alias_count x { str alias, str target }

Versions before 4 stored an item width instead of a dtype id; we do not read them and say so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engines.errors import BuildError

SUPPORTED_BINARY_VERSIONS = (4, 5, 6)
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h). bfloat16 has no numpy dtype.
_DTYPES: tuple[str | None, ...] = ("float32", "int8", "int16", "int32", "float16", None)
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class Ct2Model:
    """The parsed contents of a CTranslate2 ``model.bin``."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """Return a variable, following aliases; raise BuildError naming it when missing."""
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise BuildError(f"CTranslate2 model has no variable {name!r}") from None

    def scalar(self, name: str) -> int | float:
        """Return a rank-0 variable as a Python number."""
        return self.get(name).item()


class _Reader:
    """Bounds-checked little-endian reads with the file offset in every error."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._stream = stream
        self._path = path

    def _read(self, size: int, what: str) -> bytes:
        offset = self._stream.tell()
        data = self._stream.read(size)
        if len(data) != size:
            raise BuildError(f"{self._path} is truncated: wanted {size} bytes for {what} at offset {offset}")
        return data

    def u8(self, what: str) -> int:
        return self._read(1, what)[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self._read(4, what))[0]

    def string(self, what: str) -> str:
        length = struct.unpack("<H", self._read(2, what))[0]
        raw = self._read(length, what)
        if not raw or raw[-1] != 0:
            raise BuildError(f"{self._path}: {what} is not NUL-terminated")
        return raw[:-1].decode("utf-8")

    def raw(self, size: int, what: str) -> bytes:
        return self._read(size, what)

    def at_end(self) -> bool:
        return self._stream.read(1) == b""


def read_ct2(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``.

    Raises:
        BuildError: unknown binary version, unsupported dtype, inconsistent sizes, truncation,
            or trailing bytes.
    """
    with path.open("rb") as stream:
        r = _Reader(stream, path)
        version = r.u32("binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise BuildError(
                f"{path}: CTranslate2 binary version {version} is not supported "
                f"(this reader knows versions {SUPPORTED_BINARY_VERSIONS})"
            )
        spec_name = r.string("spec name")
        spec_revision = r.u32("spec revision")
        count = r.u32("variable count")
        variables: dict[str, np.ndarray] = {}
        for index in range(count):
            name = r.string(f"name of variable {index}")
            rank = r.u8(f"rank of {name}")
            dims = tuple(r.u32(f"dim {d} of {name}") for d in range(rank))
            type_id = r.u8(f"dtype of {name}")
            if type_id >= len(_DTYPES) or _DTYPES[type_id] is None:
                label = _DTYPE_NAMES[type_id] if type_id < len(_DTYPE_NAMES) else f"id {type_id}"
                raise BuildError(f"{path}: variable {name!r} has unsupported dtype {label}")
            dtype = np.dtype(_DTYPES[type_id]).newbyteorder("<")
            nbytes = r.u32(f"byte count of {name}")
            expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if nbytes != expected:
                raise BuildError(
                    f"{path}: variable {name!r} has {nbytes} bytes, shape {dims} x {dtype} needs {expected}"
                )
            data = np.frombuffer(r.raw(nbytes, f"data of {name}"), dtype=dtype).reshape(dims)
            variables[name] = data.astype(data.dtype.newbyteorder("="), copy=True)
        aliases: dict[str, str] = {}
        alias_count = r.u32("alias count")
        for index in range(alias_count):
            alias = r.string(f"alias {index}")
            target = r.string(f"target of alias {alias}")
            if target not in variables:
                raise BuildError(f"{path}: alias {alias!r} points at missing variable {target!r}")
            aliases[alias] = target
        if not r.at_end():
            raise BuildError(f"{path}: trailing bytes after the alias table")
    return Ct2Model(binary_version=version, spec_name=spec_name, spec_revision=spec_revision,
                    variables=variables, aliases=aliases)


def write_ct2(path: Path, *, spec_name: str, spec_revision: int, variables: dict[str, np.ndarray],
              aliases: dict[str, str] | None = None, binary_version: int = 6) -> None:
    """Write the same layout (used by tests to make small synthetic files)."""
    type_ids = {np.dtype(name): i for i, name in enumerate(_DTYPES) if name is not None}

    def string(value: str) -> bytes:
        raw = value.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with path.open("wb") as f:
        f.write(struct.pack("<I", binary_version) + string(spec_name) + struct.pack("<I", spec_revision))
        f.write(struct.pack("<I", len(variables)))
        for name, value in variables.items():
            arr = np.require(value, requirements="C")  # ascontiguousarray would make scalars 1-D
            f.write(string(name) + struct.pack("<B", arr.ndim))
            f.write(b"".join(struct.pack("<I", d) for d in arr.shape))
            f.write(struct.pack("<BI", type_ids[arr.dtype], arr.nbytes) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))
