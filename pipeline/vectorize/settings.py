"""Settings of the vectorize stage: one frozen object, built by ``parse_*`` checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.settings import option

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


def _parse_classes(value: object) -> tuple[str | int, ...] | None:
    """Class names or ids to export, from ``"a,b"``, a sequence or ``None`` (every class)."""
    if value is None:
        return None
    items = str(value).split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    classes = tuple(item if isinstance(item, int) else str(item).strip() for item in items)
    return tuple(c for c in classes if c != "") or None


@dataclass(frozen=True)
class VectorizeSettings:
    """Vectorize's own options, declared once (default, help, flag) and checked on creation.

    ``gigaseg vectorize`` builds its options from these fields
    (:func:`workflows.commands.options.add_settings`), the workflow schema takes its defaults
    and descriptions from them, and :func:`pipeline.vectorize.vectorize` takes the object
    whole (or any field by name). Areas and distances are in working units: m² / metres for
    georeferenced rasters (measured in a metric frame even for geographic CRSs), µm² / µm
    for slides, pixels otherwise.

    Examples
    --------
    >>> VectorizeSettings(min_area="4", connectivity="8").min_area
    4.0
    """

    classes: tuple[str | int, ...] | None = option(
        None, "classes (names or ids) to export; default: every non-background class", cli=""
    )
    threshold: float | None = option(
        None, "for probability input: p >= threshold is the class", parse=float
    )
    min_area: float = option(
        0.0, "drop polygons smaller than this (m², µm² for slides)", parse=float, metavar="AREA"
    )
    fill_holes: float = option(
        0.0, "fill holes smaller than this (m², µm² for slides)", parse=float, metavar="AREA"
    )
    simplify: float = option(
        0.0,
        "topology-preserving simplification tolerance (map units, metres or µm); 0 keeps the "
        "exact pixel-edge outline",
        parse=float,
        metavar="TOLERANCE",
    )
    regularize: bool = option(False, "square building outlines (dominant angle, right angles)")
    centerlines: bool = option(False, "road classes become centre-line LineStrings")
    connectivity: int = option(
        4, "pixel connectivity of the trace, as rasterio.features.shapes", parse=int,
        choices=(4, 8),
    )  # fmt: skip
    chunk: int | None = option(
        None, "chunk side in pixels (default: 4096 rounded to the source's blocks)", parse=int
    )
    instances: str | None = option(
        None,
        "separate touching objects (default: boundary for boundary-trained models, else none)",
        choices=("boundary", "distance", "none"),
    )
    reach: float | None = option(
        None, "instances: largest marker-to-pixel distance, m/µm (8 px)", parse=float,
        metavar="DIST",
    )  # fmt: skip
    min_separation: float | None = option(
        None, "instances (distance): minimum distance between markers, m/µm (4 px)",
        parse=float, metavar="DIST",
    )  # fmt: skip
    marker_threshold: float | None = option(
        None, "instances (distance): smallest marker distance to background, m/µm (2 px)",
        parse=float, metavar="DIST",
    )  # fmt: skip
    min_marker_area: float | None = option(
        None,
        "instances: drop marker components smaller than this before they grow, m²/µm² (keep all)",
        parse=float,
        metavar="AREA",
    )
    halo: int = option(
        64, "context pixels around each chunk for road skeletons (wider than any road)", cli=""
    )
    spur_length: float = option(10.0, "road spurs shorter than this many pixels are pruned", cli="")

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "classes", _parse_classes(self.classes))
        if self.threshold is not None:
            try:
                threshold = float(self.threshold)
            except (TypeError, ValueError):
                threshold = math.nan
            if not 0.0 <= threshold <= 1.0:
                raise ConfigError(f"threshold must be between 0 and 1, got {self.threshold!r}")
            _set(self, "threshold", threshold)
        for name in ("min_area", "fill_holes", "simplify"):
            _set(self, name, parse_non_negative(name, getattr(self, name)))
        for name in ("reach", "min_separation", "marker_threshold", "min_marker_area"):
            if getattr(self, name) is not None:
                _set(self, name, parse_non_negative(name, getattr(self, name)))
        _set(self, "regularize", bool(self.regularize))
        _set(self, "centerlines", bool(self.centerlines))
        _set(self, "connectivity", parse_connectivity(self.connectivity))
        if self.chunk is not None:
            _set(self, "chunk", _positive_int("chunk", self.chunk, "a positive number of pixels"))
        _set(self, "halo", _positive_int("halo", self.halo, ">= 0 pixels", minimum=0))
        _set(self, "spur_length", parse_non_negative("spur_length", self.spur_length))
        if self.instances is not None:
            method = str(self.instances).lower()
            if method not in ("boundary", "distance", "none"):
                raise ConfigError(
                    f"--instances {self.instances!r} is not one of boundary, distance, none"
                )
            _set(self, "instances", method)


def _positive_int(name: str, value: object, what: str, minimum: int = 1) -> int:
    number: int
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        number = minimum - 1
    if number < minimum or (isinstance(value, float) and number != value):
        raise ConfigError(f"{name} must be {what}, got {value}")
    return number
