"""Named architectures: the seeds' variants, ready to build by name.

Examples
--------
>>> build("paper", in_channels=1, classes=2).output_size(572)
388
"""

from __future__ import annotations

from typing import Any

from unet.model import UNet

__all__ = ["ARCHITECTURES", "build"]

#: Name -> UNet keyword arguments (``in_channels`` and ``classes`` are given at build time).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # Ronneberger et al. 2015: unpadded convolutions, 572 -> 388.
    "paper": {"base": 64, "depth": 4, "padding": "valid", "norm": "none"},
    # The same with padding and batch norm: any multiple of 16 in, same size out.
    "unet": {"base": 32, "depth": 4, "padding": "same", "norm": "batch"},
    # Depthwise-separable blocks and bilinear up-sampling: a light CPU model.
    "light": {"base": 16, "depth": 4, "block": "separable", "upsample": "bilinear"},
    # Attention gates on the skips, deep supervision for small training sets.
    "attention": {"base": 32, "depth": 4, "attention": True, "deep_supervision": True},
}


def build(name: str, *, in_channels: int, classes: int, **overrides: Any) -> UNet:
    """Build a registered architecture, with optional keyword overrides."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}"
        )
    return UNet(in_channels=in_channels, classes=classes, **{**ARCHITECTURES[name], **overrides})
