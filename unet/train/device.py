"""Pick the device and the autocast precision for training."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import ConfigError

__all__ = ["cpu_supports_bf16", "resolve_device", "resolve_precision"]


def cpu_supports_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Return whether the CPU has native bf16 matrix units (AMX-BF16 or AVX-512-BF16).

    Without them bf16 autocast is emulated and slower than fp32, so ``auto`` keeps fp32.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool({"amx_bf16", "avx512_bf16"} & flags)
    return False


def resolve_device(name: str) -> torch.device:
    """Map ``auto`` | ``cpu`` | ``cuda`` to a device (``auto`` = CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is visible; use 'cpu'")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """Map ``auto`` | ``fp32`` | ``bf16`` to ``fp32`` or ``bf16`` for ``device``."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"
