"""The U-Net family (Ronneberger et al., 2015) with its tiling geometry computed from its layers.

A tiled run is exact only if every tile sees all the context its output depends on and its
max-pooling grid lines up with the whole image's. :class:`UNet` therefore reports, from the
layers it actually has:

- ``receptive_field``: the width (pixels) of the input region an output pixel can depend on;
- ``halo``: the context a tile needs on each side -- for ``padding="same"`` the receptive
  field radius rounded up to ``alignment``; for ``padding="valid"`` the (input - output) / 2
  shrinkage of the paper's valid-convolution network (one output pixel may still depend on
  up to ``alignment - 1`` pixels more on one side, through its pooling cell; a window whose
  origin is aligned like the whole image's still sees exactly the same data);
- ``alignment``: ``2**depth``, the period of the pooling grid.

Examples
--------
>>> model = UNet(in_channels=3, classes=1, base=8, depth=3)
>>> model.alignment, model.halo
(8, 56)
>>> paper = UNet(1, 2, base=64, depth=4, padding="valid", norm="none")
>>> paper.output_size(572)
388
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.nn import functional

from unet.blocks import AttentionGate, ConvBlock, Up, center_crop

__all__ = ["Architecture", "UNet"]

Padding = Literal["same", "valid"]
Norm = Literal["batch", "none"]
Upsample = Literal["transpose", "bilinear"]
Block = Literal["double", "separable"]


@dataclass(frozen=True)
class Architecture:
    """The constructor arguments of a :class:`UNet`: what a checkpoint header records."""

    in_channels: int
    classes: int
    base: int = 32
    depth: int = 4
    padding: Padding = "same"
    norm: Norm = "batch"
    upsample: Upsample = "transpose"
    block: Block = "double"
    attention: bool = False
    deep_supervision: bool = False

    def __post_init__(self) -> None:
        for name, kind in (
            ("padding", Padding),
            ("norm", Norm),
            ("upsample", Upsample),
            ("block", Block),
        ):
            value = getattr(self, name)
            if value not in get_args(kind):
                choices = ", ".join(repr(v) for v in get_args(kind))
                raise ValueError(f"UNet {name}={value!r} is not one of {choices}")
        for name in ("in_channels", "classes", "base", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet {name} must be a positive integer, got {value!r}")
        if self.padding == "valid" and self.upsample == "bilinear":
            # Bilinear up-sampling clamps at the map border, so a valid-padding network would
            # depend on where its input window ends: tiles would not equal the whole image.
            raise ValueError(
                "UNet padding='valid' needs upsample='transpose' (bilinear up-sampling clamps "
                "at borders, which breaks tiled == whole-image)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the arguments as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """Build from a dict, naming any unknown key."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNet architecture keys: {', '.join(unknown)}")
        return cls(**data)


class UNet(nn.Module):
    """A configurable U-Net.

    Parameters
    ----------
    in_channels
        Input bands.
    classes
        Output channels (logits). One channel is read with a sigmoid, more with a softmax.
    base
        Channels of the first level; each level doubles them.
    depth
        Number of 2x2 max-pooling steps.
    padding
        ``"same"`` keeps the size (inputs must be multiples of ``alignment``); ``"valid"`` is
        the paper's unpadded network (572 -> 388 at depth 4, base 64).
    norm
        ``"batch"`` normalisation after each convolution, or ``"none"``.
    upsample
        ``"transpose"`` (2x2 transposed convolution) or ``"bilinear"`` (+ 1x1 convolution).
    block
        ``"double"`` 3x3 convolutions or ``"separable"`` depthwise-separable light blocks.
    attention
        Attention gates on the skip connections.
    deep_supervision
        Auxiliary 1x1 heads on the coarser decoder levels. In ``train()`` mode ``forward``
        returns ``(logits, [aux, ...])`` with every auxiliary map resized to the output; in
        ``eval()`` mode the heads are ignored.
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        base: int = 32,
        depth: int = 4,
        padding: Padding = "same",
        norm: Norm = "batch",
        upsample: Upsample = "transpose",
        block: Block = "double",
        attention: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.architecture = Architecture(
            in_channels, classes, base, depth, padding, norm, upsample, block, attention,
            deep_supervision,
        )  # fmt: skip
        widths = [base * 2**level for level in range(depth + 1)]
        options: dict[str, Any] = {"block": block, "padding": padding, "norm": norm}
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(ConvBlock(channels, width, **options))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(channels, widths[-1], **options)
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.aux_heads = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(Up(widths[level + 1], widths[level], upsample))
            self.gates.append(
                AttentionGate(widths[level], widths[level]) if attention else nn.Identity()
            )
            self.decoder.append(ConvBlock(2 * widths[level], widths[level], **options))
            if deep_supervision and level > 0:
                self.aux_heads.append(nn.Conv2d(widths[level], classes, 1))
        self.head = nn.Conv2d(widths[0], classes, 1)

    # -- geometry -----------------------------------------------------------------------

    @property
    def padding(self) -> Padding:
        """``"same"`` or ``"valid"``."""
        return self.architecture.padding

    @property
    def depth(self) -> int:
        """Number of pooling steps."""
        return self.architecture.depth

    @property
    def alignment(self) -> int:
        """Period of the pooling grid: windows must start on multiples of it."""
        return int(2**self.depth)

    @property
    def receptive_radius(self) -> int:
        """Farthest distance (pixels) between an output pixel and an input it depends on.

        Walks the layers: each k x k convolution at pyramid level ``l`` reaches
        ``(k - 1) / 2 * dilation * 2**l`` full-resolution pixels further; a 2x2 pooling step
        reaches one more pixel of its level on one side (which side depends on the pixel's
        position in its cell, so it is counted on both); bilinear up-sampling reads the
        neighbouring coarse pixel. Transposed 2x2/stride-2 convolutions and 1x1 layers add
        nothing. The deepest path bounds every shallower (skip) path.
        """
        radius, step = 0, 1
        for block in self.encoder:
            radius += _conv_reach(block) * step
            radius += (int(self.pool.kernel_size) - 1) * step  # type: ignore[arg-type]
            step *= 2
        radius += _conv_reach(self.bottleneck) * step
        for up, block in zip(self.ups, self.decoder, strict=True):
            if up.mode == "bilinear":
                radius += step
            radius += _conv_reach(up) * step
            step //= 2
            radius += _conv_reach(block) * step
        return radius

    @property
    def receptive_field(self) -> int:
        """Width in pixels of the input region one output pixel can depend on."""
        return 2 * self.receptive_radius + 1

    @property
    def halo(self) -> int:
        """Context each tile needs on every side for tiled output to equal whole-image output."""
        if self.padding == "valid":
            size = self.valid_input_size(1)
            return (size - self.output_size(size)) // 2
        return -(-self.receptive_radius // self.alignment) * self.alignment

    def output_size(self, size: int) -> int:
        """Output size along one axis for an input of ``size`` pixels.

        Raises
        ------
        ValueError
            If the network cannot take ``size``; the message names the nearest valid sizes.
        """
        result = self._output_size_or_none(size)
        if result is None:
            lower = self._valid_below(size)
            upper = self.valid_input_size(size)
            nearest = f"{lower} or {upper}" if lower else f"{upper}"
            rule = (
                f"a multiple of {self.alignment}"
                if self.padding == "same"
                else "one where every pooled size is even"
            )
            raise ValueError(
                f"this {self.padding}-padding U-Net (depth {self.depth}) cannot take an input "
                f"of {size} pixels: it must be {rule}; nearest valid sizes: {nearest}"
            )
        return result

    def valid_input_size(self, size: int) -> int:
        """Smallest input size >= ``size`` the network accepts."""
        candidate = max(1, size)
        while self._output_size_or_none(candidate) is None:
            candidate += 1
        return candidate

    def _valid_below(self, size: int) -> int | None:
        candidate = size - 1
        while candidate > 0:
            if self._output_size_or_none(candidate) is not None:
                return candidate
            candidate -= 1
        return None

    def _output_size_or_none(self, size: int) -> int | None:
        if self.padding == "same":
            return size if size > 0 and size % self.alignment == 0 else None
        loss_per_block = 4  # two unpadded 3x3 convolutions
        current = size
        for _ in range(self.depth):
            current -= loss_per_block
            if current <= 0 or current % 2:
                return None
            current //= 2
        current -= loss_per_block
        if current <= 0:
            return None
        for _ in range(self.depth):
            current = current * 2 - loss_per_block
            if current <= 0:
                return None
        return current

    # -- forward --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Return logits ``(N, classes, H', W')`` (and auxiliary logits in training)."""
        if self.padding == "same" and not _tracing():
            for axis in (-2, -1):
                if x.shape[axis] % self.alignment:
                    self.output_size(int(x.shape[axis]))  # raises with the nearest sizes
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        aux: list[torch.Tensor] = []
        heads = iter(self.aux_heads)
        for up, gate, block, encoded in zip(
            self.ups, self.gates, self.decoder, reversed(skips), strict=True
        ):
            x = up(x)
            skip = encoded
            if self.padding == "valid":
                skip = center_crop(skip, x.shape[-2], x.shape[-1])
            if isinstance(gate, AttentionGate):
                skip = gate(skip, x)
            x = block(torch.cat([skip, x], dim=1))
            if (
                self.training
                and self.architecture.deep_supervision
                and len(aux) < len(self.aux_heads)
            ):
                aux.append(next(heads)(x))
        logits = self.head(x)
        if self.training and self.architecture.deep_supervision:
            size = logits.shape[-2:]
            return logits, [
                functional.interpolate(a, size=size, mode="bilinear", align_corners=False)
                for a in aux
            ]
        return logits  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        """Summarise the geometry in ``repr(model)``."""
        return f"halo={self.halo}, alignment={self.alignment}, padding={self.padding!r}"


def _tracing() -> bool:
    """Whether TorchScript is tracing or scripting (shape checks become graph constants)."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting())  # type: ignore[attr-defined,no-untyped-call]


def _conv_reach(module: nn.Module) -> int:
    """Sum of one-sided reaches of the convolutions inside ``module``, in its own pixels."""
    reach = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0]
            dilation = layer.dilation[0]
            reach += (kernel - 1) // 2 * dilation
    return reach
