"""A TensorFlow-style model built in the tests: NHWC input, softmax output, fixed size.

A tiny random-weight U-Net wrapped with permutes and a softmax, exported to ONNX twice from
the same weights: with a fixed ``[N, size, size, C]`` input (the model under test, as a
TensorFlow export would be) and with dynamic height/width (to run the whole-image reference
in onnxruntime).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tests.pipeline.tinynet import TinyUNet

__all__ = ["TFStyle", "export_tfstyle"]


class TFStyle(nn.Module):
    """NHWC in, per-pixel softmax probabilities out (NHWC)."""

    def __init__(self, channels: int = 1, classes: int = 3, seed: int = 3) -> None:
        super().__init__()
        self.inner = TinyUNet(in_channels=channels, classes=classes, depth=2, seed=seed)
        for param in self.inner.parameters():  # livelier logits than the default init
            torch.nn.init.normal_(param, std=0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x.permute(0, 3, 1, 2))
        return torch.softmax(logits, dim=1).permute(0, 2, 3, 1)


def export_tfstyle(model: TFStyle, path: Path, size: int | None, channels: int = 1) -> Path:
    """Export to ONNX: a fixed ``size`` (batch dynamic) or dynamic height/width (None)."""
    model.eval()
    example = torch.zeros(1, size or 64, size or 64, channels)
    axes = {0: "N"} if size else {0: "N", 1: "H", 2: "W"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input_1"],
            output_names=["softmax"],
            dynamic_axes={"input_1": axes, "softmax": axes},
            opset_version=17,
        )
    return path
