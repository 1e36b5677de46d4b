"""What the writers receive: batches of features with typed columns (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["FeatureBatch", "Field", "Schema", "class_color"]

#: A qualitative palette (Okabe-Ito, colour-blind safe) for class colours.
_PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (150, 150, 150),
]


def class_color(
    class_id: int, colors: Mapping[int, tuple[int, int, int]] | None = None
) -> tuple[int, int, int]:
    """Return the RGB colour of a class id: the model card's (``colors``), else a stable one.

    Every output that colours classes (QuPath, the COG colour table, QGIS styles, the slide
    label pyramid, previews) goes through here, so a class has one colour everywhere.

    Examples
    --------
    >>> class_color(1), class_color(1, {1: (220, 50, 47)}), class_color(2, {1: (220, 50, 47)})
    ((230, 159, 0), (220, 50, 47), (86, 180, 233))
    """
    if colors and int(class_id) in colors:
        r, g, b = colors[int(class_id)]
        return int(r), int(g), int(b)
    return _PALETTE[(int(class_id) - 1) % len(_PALETTE)]


@dataclass(frozen=True)
class Field:
    """One feature property: its name and kind (``int``, ``float`` or ``str``)."""

    name: str
    kind: Literal["int", "float", "str"]


@dataclass(frozen=True)
class Schema:
    """The shape of every feature a writer will receive.

    Attributes
    ----------
    fields
        Properties, in order; every batch has a column for each (floats may be NaN = null).
    crs
        CRS of the geometries (WKT or ``"EPSG:4326"``), ``None`` for pixel coordinates.
    geometry
        ``"polygon"``, ``"line"`` or ``"mixed"`` (polygons and centre-lines).
    classes
        Class id -> name, for writers that list classes (QuPath colours).
    colors
        Class id -> ``(r, g, b)`` from the model card; :func:`class_color` for the others.
    mpp
        Micrometres per level-0 pixel (one value or ``(x, y)``) of pixel-frame geometries
        (slides), for measurements in µm; ``None`` measures in pixels.
    """

    fields: tuple[Field, ...]
    crs: str | None = None
    geometry: Literal["polygon", "line", "mixed"] = "polygon"
    classes: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    mpp: float | tuple[float, float] | None = None

    @property
    def names(self) -> list[str]:
        """Property names, in order."""
        return [f.name for f in self.fields]


@dataclass
class FeatureBatch:
    """Features as an object array of geometries plus one column per property."""

    geometry: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.geometry)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Properties row by row as JSON-able dicts (NaN becomes ``None``)."""
        names = list(self.columns)
        cols = [self.columns[n].tolist() for n in names]
        for values in zip(*cols, strict=True):
            yield {
                n: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for n, v in zip(names, values, strict=True)
            }

    @staticmethod
    def concat(batches: list[FeatureBatch]) -> FeatureBatch:
        """One batch from many with the same columns."""
        if not batches:
            return FeatureBatch(np.empty(0, object), {})
        names = list(batches[0].columns)
        return FeatureBatch(
            np.concatenate([b.geometry for b in batches]),
            {n: np.concatenate([b.columns[n] for b in batches]) for n in names},
        )
