"""Devices: which one the stack targets, and whether a CUDA GPU is usable here (with the reason when not)."""

from __future__ import annotations

import functools

from engines.config import TARGETS
from engines.errors import DeviceUnavailableError, ModelConfigError


@functools.cache
def cuda_problem() -> str | None:
    """None when PyTorch sees a usable CUDA GPU, else why not (for error messages)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install 'voxpipe[gpu]')"
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no NVIDIA GPU or driver visible to this process)"
    return None


def resolve_target(target: str) -> str:
    """The stack's target device: "cpu" or "cuda"; "auto" picks "cuda" when a GPU is usable.

    Raises:
        ModelConfigError: ``target`` is not one of cpu, cuda, auto.
    """
    if target not in TARGETS:
        raise ModelConfigError(f"device {target!r} is not one of {', '.join(TARGETS)}")
    if target == "auto":
        return "cpu" if cuda_problem() else "cuda"
    return target


def require_device(device: str, *, what: str) -> None:
    """Fail with a clear message when ``device`` is "cuda" and no GPU is usable.

    Raises:
        DeviceUnavailableError: naming ``what`` (the model) and the reason.
    """
    if device == "cuda" and (problem := cuda_problem()):
        raise DeviceUnavailableError(f"{what}: device 'cuda' requested but {problem}; set device = \"cpu\" "
                                     "(or \"auto\" to fall back to the CPU)")


def torch_dtype(precision: str):
    """The PyTorch floating dtype of a precision name (int8 is not a PyTorch serving precision here)."""
    import torch

    try:
        return {"fp32": torch.float32, "fp16": torch.float16}[precision]
    except KeyError:
        raise ModelConfigError(f"precision {precision!r} is not supported by the PyTorch backend (fp32, fp16)") from None
