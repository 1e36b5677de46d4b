"""Building blocks of the U-Net family: conv blocks, up-sampling, attention gates.

Every block records what the receptive-field arithmetic in :mod:`unet.model` needs
(its convolutions are ordinary ``nn.Conv2d`` layers, read back by kernel size and dilation),
so the halo is computed from the layers that exist rather than from a table.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["AttentionGate", "ConvBlock", "Up", "center_crop"]

Norm = Literal["batch", "none"]
Block = Literal["double", "separable"]
Upsample = Literal["transpose", "bilinear"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def _conv(
    in_channels: int, out_channels: int, *, block: Block, pad: int, norm: Norm
) -> list[nn.Module]:
    bias = norm == "none"
    if block == "double":
        return [nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=bias)]
    # Depthwise 3x3 then pointwise 1x1 (MobileNet style): ~8x fewer weights for the same
    # receptive field, which is what matters for the halo.
    return [
        nn.Conv2d(in_channels, in_channels, 3, padding=pad, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=bias),
    ]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by optional batch norm and ReLU.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts.
    block
        ``"double"`` for plain 3x3 convolutions, ``"separable"`` for depthwise-separable ones.
    padding
        ``"same"`` zero-pads by one pixel (size kept); ``"valid"`` does not (size - 2 per conv).
    norm
        ``"batch"`` or ``"none"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        block: Block = "double",
        padding: Literal["same", "valid"] = "same",
        norm: Norm = "batch",
    ) -> None:
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(2):
            layers += _conv(channels, out_channels, block=block, pad=pad, norm=norm)
            layers += [_norm(norm, out_channels), nn.ReLU(inplace=True)]
            channels = out_channels
        super().__init__(*layers)


class Up(nn.Module):
    """Double the spatial size: a 2x2 transposed convolution or bilinear + 1x1 conv.

    A transposed 2x2/stride-2 convolution maps each input pixel to its own 2x2 output cell,
    so it adds nothing to the receptive field; bilinear interpolation reads two neighbours
    per axis and so widens it by one coarse pixel.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: Upsample) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` by two."""
        return self.up(x)  # type: ignore[no-any-return]


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al., Attention U-Net).

    The gating signal is the up-sampled decoder feature at the skip's resolution, and all
    convolutions are 1x1, so the gate adds nothing to the receptive field.
    """

    def __init__(self, skip_channels: int, gate_channels: int) -> None:
        super().__init__()
        inter = max(1, skip_channels // 2)
        self.theta = nn.Conv2d(skip_channels, inter, 1, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Return ``skip`` weighted by attention coefficients in [0, 1]."""
        weights = torch.sigmoid(self.psi(torch.relu(self.theta(skip) + self.phi(gate))))
        return skip * weights


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre ``height`` x ``width`` of an NCHW tensor (valid-padding skips)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]
