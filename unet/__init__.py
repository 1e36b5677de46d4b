"""The U-Net family, its checkpoints and its training.

No tiling and no Dask here: :mod:`pipeline` is handed a model, and :mod:`workflows` joins them.
"""

from __future__ import annotations

from unet.export import export
from unet.model import Architecture, UNet
from unet.registry import ARCHITECTURES, build
from unet.train import train  # the function; the package stays importable as unet.train.X
from unet.weights import ModelMetadata, load, read_metadata, save

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ModelMetadata",
    "UNet",
    "build",
    "export",
    "load",
    "read_metadata",
    "save",
    "train",
]
