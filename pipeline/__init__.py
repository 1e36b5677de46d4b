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
    # Lazy so that ``import pipeline`` stays light; pipeline.predict is a callable module.
    if name == "predict":
        import importlib

        return importlib.import_module("pipeline.predict")
    if name == "vectorize":  # a callable package, like pipeline.predict
        import importlib

        return importlib.import_module("pipeline.vectorize")
    if name in ("evaluate", "sample"):  # evaluate is a callable package too
        import importlib

        return importlib.import_module(f"pipeline.{name}")
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
