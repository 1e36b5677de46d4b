"""gigaseg's data flow, one subpackage per stage.

1. ``read``      open a GeoTIFF, slide or array lazily, with its georeference
2. ``tile``      plan the overlapping tile grid (reads no pixels)
3. ``infer``     run a model on tile windows
4. ``stitch``    write the cores into the Zarr store
5. ``vectorize`` label raster -> exact polygons, merged across chunk borders
6. ``export``    GeoJSON / GeoParquet / QuPath files
"""

from __future__ import annotations

from pipeline.errors import (
    CheckpointError,
    ConfigError,
    GigasegError,
    InputError,
    OutputExistsError,
    StoreError,
)

# The stage entry points are plain functions re-exported here. Their modules share their
# names (``pipeline/predict.py``, ``pipeline/vectorize/``), so importing the function after the
# module rebinds ``pipeline.predict`` to the function; ``from pipeline.predict import X`` still
# reaches the module.
from pipeline.evaluate import evaluate
from pipeline.predict import predict
from pipeline.vectorize import vectorize

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GigasegError",
    "InputError",
    "OutputExistsError",
    "StoreError",
    "evaluate",
    "predict",
    "sample",
    "vectorize",
]


def __getattr__(name: str) -> object:
    # ``pipeline.sample`` (training windows) is imported on first use.
    if name == "sample":
        import importlib

        return importlib.import_module("pipeline.sample")
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
