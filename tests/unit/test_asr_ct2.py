"""The CTranslate2 model.bin reader on small synthetic files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engines.build.ct2 import read_ct2, write_ct2
from engines.errors import BuildError


def _variables() -> dict[str, np.ndarray]:
    return {
        "decoder/embeddings/weight": np.arange(12, dtype=np.float16).reshape(4, 3),
        "decoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/activation": np.array(3, dtype=np.int8),
        "encoder/conv1/bias": np.array([1.5, -2.0], dtype=np.float32),
        "encoder/ids": np.array([[1, 2], [3, 4]], dtype=np.int32),
    }


def test_round_trip_with_alias(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables=_variables(),
              aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    model = read_ct2(path)
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "WhisperSpec", 3)
    for name, value in _variables().items():
        got = model.get(name)
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
    np.testing.assert_array_equal(model.get("decoder/projection/weight"), _variables()["decoder/embeddings/weight"])
    assert model.scalar("decoder/num_heads") == 6


@pytest.mark.parametrize("version", [0, 1, 2, 3, 7, 99])
def test_unknown_binary_version_fails_loudly(tmp_path, version):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables=_variables(), binary_version=version)
    with pytest.raises(BuildError, match=f"binary version {version} is not supported"):
        read_ct2(path)


def test_truncated_file_names_the_offset(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables=_variables())
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    with pytest.raises(BuildError, match="truncated"):
        read_ct2(path)


def test_trailing_bytes_are_an_error(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables=_variables())
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BuildError, match="trailing bytes"):
        read_ct2(path)


def test_bfloat16_is_refused_by_name(tmp_path):
    path = tmp_path / "model.bin"

    def s(v: str) -> bytes:
        raw = v.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    body = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 3, 1)
    body += s("w") + struct.pack("<BI", 1, 2) + struct.pack("<BI", 5, 4) + b"\0" * 4 + struct.pack("<I", 0)
    path.write_bytes(body)
    with pytest.raises(BuildError, match="'w' has unsupported dtype bfloat16"):
        read_ct2(path)


def test_byte_count_must_match_shape(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables={"a": np.zeros(4, np.float32)})
    data = bytearray(path.read_bytes())
    # The u32 byte count sits right before the 16 data bytes and the 4-byte alias count.
    data[-24:-20] = struct.pack("<I", 15)
    path.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="has 15 bytes"):
        read_ct2(path)


def test_alias_to_missing_variable_is_an_error(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, spec_name="WhisperSpec", spec_revision=3, variables={"a": np.zeros(2, np.float32)},
              aliases={"b": "nope"})
    with pytest.raises(BuildError, match="missing variable 'nope'"):
        read_ct2(path)
