"""A tiny random-weight U-Net for tests (both padding modes), saved as TorchScript with
gigaseg metadata, so pipeline tests do not depend on ``unet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["TinyUNet", "save_torchscript"]


def _block(cin: int, cout: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=pad),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=pad),
        nn.ReLU(),
    )


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, pad: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = _block(2 * cout, cout, pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh = (skip.shape[2] - x.shape[2]) // 2
        dw = (skip.shape[3] - x.shape[3]) // 2
        skip = skip[:, :, dh : dh + x.shape[2], dw : dw + x.shape[3]]
        return self.block(torch.cat([skip, x], dim=1))


class TinyUNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        base: int = 4,
        depth: int = 2,
        padding: str = "same",
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        pad = 1 if padding == "same" else 0
        self.padding, self.depth = padding, depth
        self.alignment = 2**depth
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(_block(cin, c, pad))
            cin = c
        self.bottom = _block(chans[-2], chans[-1], pad)
        self.ups = nn.ModuleList(_Up(chans[i + 1], chans[i], pad) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], classes, 1)
        if padding == "same":
            rf = 6 * (2**depth - 1) + 2 ** (depth + 1)
            self.receptive_field = rf
            self.halo = -(-rf // self.alignment) * self.alignment
        else:
            n = self.valid_input_size(1)
            self.halo = (n - self.output_size(n)) // 2
            self.receptive_field = self.halo

    def output_size(self, n: int) -> int:
        if self.padding == "same":
            if n % self.alignment:
                raise ValueError(n)
            return n
        sizes = []
        for _ in range(self.depth):
            n -= 4
            if n <= 0 or n % 2:
                raise ValueError(n)
            sizes.append(n)
            n //= 2
        n -= 4
        if n <= 0:
            raise ValueError(n)
        for _ in range(self.depth):
            n = 2 * n - 4
        if n <= 0:
            raise ValueError(n)
        return n

    def valid_input_size(self, n: int) -> int:
        m = max(n, 1)
        while True:
            try:
                self.output_size(m)
                return m
            except ValueError:
                m += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = torch.nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        n = len(skips)
        for i, up in enumerate(self.ups):
            x = up(x, skips[n - 1 - i])
        return self.head(x)

    def metadata(self, classes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        outputs = self.head.out_channels
        meta = {
            "halo": self.halo,
            "alignment": self.alignment,
            "padding": self.padding,
            "sizes_first": self.valid_input_size(1),
            "receptive_field": self.receptive_field,
            "in_channels": self.down[0][0].in_channels,
            "classes": classes or ([f"c{i}" for i in range(outputs)]),
            "outputs": outputs,
        }
        meta.update(extra)
        return meta


def save_torchscript(
    model: TinyUNet, path: str | Path, *, metadata: bool = True, **extra: Any
) -> Path:
    """Script the model (TorchScript) with the gigaseg metadata as an extra file."""
    model.eval()
    scripted = torch.jit.script(model)
    files = {"gigaseg.json": json.dumps(model.metadata(**extra))} if metadata else {}
    torch.jit.save(scripted, str(path), _extra_files=files)
    return Path(path)
