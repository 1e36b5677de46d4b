"""Settings of the vectorize stage: one frozen object, built by ``parse_*`` checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

__all__ = [
    "FORMATS",
    "VectorizeSettings",
    "parse_connectivity",
    "parse_format",
    "parse_non_negative",
]

#: Output format name -> file extensions that select it.
FORMATS: dict[str, tuple[str, ...]] = {
    "geojson": (".geojson", ".json"),
    "geojsonseq": (".geojsons", ".geojsonl", ".geojsonseq", ".ndjson", ".jsonl"),
    "geoparquet": (".parquet", ".geoparquet"),
    "gpkg": (".gpkg",),
    "flatgeobuf": (".fgb",),
    "qupath": (".qupath.geojson", ".qupath.json"),
}


def parse_format(fmt: str | None, out: str | Path) -> str:
    """Return the output format, given explicitly or read from the file extension.

    Parameters
    ----------
    fmt
        A name from :data:`FORMATS`, or ``None`` to use the extension of ``out``.
    out
        The output path.

    Returns
    -------
    str
        The format name.

    Examples
    --------
    >>> parse_format(None, "cells.qupath.geojson")
    'qupath'
    >>> parse_format("GeoParquet", "x.bin")
    'geoparquet'
    """
    names = ", ".join(FORMATS)
    if fmt is not None:
        key = str(fmt).lower()
        if key not in FORMATS:
            raise ConfigError(f"unknown output format {fmt!r}; choose one of {names}")
        return key
    name = Path(out).name.lower()
    # longest extension first, so ".qupath.geojson" wins over ".geojson"
    pairs = sorted(((e, f) for f, es in FORMATS.items() for e in es), key=lambda p: -len(p[0]))
    for ext, key in pairs:
        if name.endswith(ext):
            return key
    raise ConfigError(
        f"cannot tell the output format from {Path(out).name!r}; pass --format ({names})"
    )


def parse_connectivity(value: int | str) -> int:
    """Return 4 or 8, the pixel connectivity of the trace."""
    try:
        conn = int(value)
    except (TypeError, ValueError):
        conn = 0
    if conn not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {value!r}")
    return conn


def parse_non_negative(name: str, value: float | None) -> float:
    """Return ``value`` as a finite float >= 0 (``None`` means 0)."""
    number = 0.0 if value is None else float(value)
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class VectorizeSettings:
    """What to trace and how to clean it, after validation.

    Attributes
    ----------
    connectivity
        4 (pixels joined by edges) or 8 (edges or corners), as in ``rasterio.features.shapes``.
    min_area
        Polygons smaller than this are dropped: m² for georeferenced rasters, µm² for slides,
        pixels otherwise.
    fill_holes
        Holes smaller than this (same units) are filled.
    simplify
        Douglas-Peucker tolerance in the working frame (metres, µm or pixels); 0 keeps the
        exact pixel-edge outline.
    regularize
        Square the outlines of buildings (see :mod:`pipeline.vectorize.regularize`).
    centerlines
        Emit road centre-lines (LineStrings) instead of road polygons.
    """

    connectivity: int = 4
    min_area: float = 0.0
    fill_holes: float = 0.0
    simplify: float = 0.0
    regularize: bool = False
    centerlines: bool = False

    @classmethod
    def parse(
        cls,
        *,
        connectivity: int | str = 4,
        min_area: float | None = 0.0,
        fill_holes: float | None = 0.0,
        simplify: float | None = 0.0,
        regularize: bool = False,
        centerlines: bool = False,
    ) -> VectorizeSettings:
        """Validate every option and build the settings."""
        return cls(
            connectivity=parse_connectivity(connectivity),
            min_area=parse_non_negative("min_area", min_area),
            fill_holes=parse_non_negative("fill_holes", fill_holes),
            simplify=parse_non_negative("simplify", simplify),
            regularize=bool(regularize),
            centerlines=bool(centerlines),
        )
