"""The U-Net family, its checkpoints and its training.

No tiling and no Dask here: :mod:`pipeline` is handed a model, and :mod:`workflows` joins them.
"""

from __future__ import annotations

from unet.export import export
from unet.model import Architecture, UNet
from unet.registry import ARCHITECTURES, build
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


def __getattr__(name: str) -> object:
    # ``unet.train`` is a callable package (``unet.train(model, data, out, ...)``, see
    # unet/train/loop.py), imported on first use so ``import unet`` stays light.
    if name == "train":
        import importlib

        return importlib.import_module("unet.train")
    raise AttributeError(f"module 'unet' has no attribute {name!r}")
