"""Match the source's resolution to the model's pixel size.

A model sees objects at the pixel size it was trained on. Its checkpoint (``pixel_size``) or
model card states that size: micrometres per pixel for a slide model, metres (CRS units of a
projected CRS) for a GeoTIFF model.

- **Slides** with no ``--level``/``--mpp`` are read at the model's µm per pixel: the level
  within :data:`pipeline.read.slide.LEVEL_TOLERANCE` of it, else the nearest finer level
  resampled (see :func:`pipeline.read.slide.choose_level`). A slide that records no
  resolution needs ``--source-mpp``; without it level 0 is read and the user is told.
- **GeoTIFFs** are not resampled: when the source's pixel size differs from the model's by more
  than :data:`RESOLUTION_RATIO` (either way) the run says so, or refuses with ``strict``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.read.georef import Georef

__all__ = ["RESOLUTION_RATIO", "check_resolution", "geotiff_pixel_size", "slide_target"]

#: Largest ratio between a GeoTIFF's pixel size and the model's that passes without a word.
RESOLUTION_RATIO = 1.5


def geotiff_pixel_size(georef: Georef) -> float | None:
    """Metres per pixel (x) of a georeferenced raster, or ``None`` without a CRS.

    Geographic CRSs are converted at the latitude of the raster origin (an approximation good
    to the ratio checked here).
    """
    parsed = georef.crs_obj
    if parsed is None:
        return None
    size = georef.resolution[0]
    if parsed.is_geographic:
        latitude = float(georef.transform.f)
        return size * 111_320.0 * max(0.01, math.cos(math.radians(latitude)))
    factor = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
    return size * float(factor or 1.0)


def check_resolution(
    source_size: float | None,
    model_size: float | None,
    *,
    unit: str,
    name: str,
    strict: bool = False,
    ratio: float = RESOLUTION_RATIO,
) -> str | None:
    """Compare a source's pixel size with the model's; return a note, or raise when strict.

    >>> check_resolution(30.0, 0.5, unit="m", name="landsat.tif") is not None
    True
    >>> check_resolution(0.6, 0.5, unit="m", name="chip.tif") is None
    True
    """
    if source_size is None or model_size is None or source_size <= 0 or model_size <= 0:
        return None
    factor = max(source_size, model_size) / min(source_size, model_size)
    if factor <= ratio:
        return None
    side = "coarser" if source_size > model_size else "finer"
    message = (
        f"{name} has {source_size:.4g} {unit} pixels but the model was trained at "
        f"{model_size:.4g} {unit} ({factor:.1f}x {side}, "
        f"beyond the {ratio:g}x tolerance); resample the source to the model's pixel size"
    )
    if strict:
        raise ConfigError(message + " (refused: --strict)")
    return "warning: " + message


def slide_target(
    model_size: float | None, mpp0: float | None, name: str
) -> tuple[float | None, str | None]:
    """Return the µm per pixel to read a slide at for a model, and a note saying why.

    Returns ``(None, note)`` when the slide cannot be matched (no recorded resolution, or a
    model finer than level 0), so level 0 is read.
    """
    if model_size is None:
        return None, None
    if mpp0 is None:
        return None, (
            f"{name} records no µm per pixel, so level 0 is read; the model expects "
            f"{model_size:g} µm per pixel: give --source-mpp to match it"
        )
    if model_size < mpp0 / 1.1:
        return None, (
            f"warning: the model expects {model_size:g} µm per pixel, finer than {name}'s level 0 "
            f"({mpp0:g} µm); reading level 0"
        )
    return float(model_size), None
