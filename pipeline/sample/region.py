"""The spatial validation hold-out: a band of rows or columns kept out of training.

Random validation pixels would sit next to training pixels and share their context, so the
validation score would measure memory, not generalisation. A contiguous band of the image is
held out instead; training windows never overlap it and validation windows never leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import ConfigError

__all__ = ["Holdout", "parse_holdout"]


@dataclass(frozen=True)
class Holdout:
    """A band of the image, as fractions of its height (``rows``) or width (``cols``).

    Attributes
    ----------
    axis
        ``"rows"`` (a horizontal band) or ``"cols"`` (a vertical band).
    start, stop
        The band as fractions ``0 <= start < stop <= 1`` of the image size along ``axis``.

    Examples
    --------
    >>> Holdout("cols", 0.8, 1.0).pixels(height=900, width=900)
    (720, 900)
    """

    axis: Literal["rows", "cols"] = "cols"
    start: float = 0.8
    stop: float = 1.0

    def __post_init__(self) -> None:
        if self.axis not in ("rows", "cols"):
            raise ConfigError(f"holdout axis must be 'rows' or 'cols', got {self.axis!r}")
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise ConfigError(
                f"holdout must satisfy 0 <= start < stop <= 1, got start={self.start}, "
                f"stop={self.stop}"
            )

    def pixels(self, height: int, width: int) -> tuple[int, int]:
        """Return the band as a half-open pixel range ``[first, last)`` along ``axis``."""
        size = height if self.axis == "rows" else width
        return round(self.start * size), round(self.stop * size)

    def contains(self, height: int, width: int, row: float, col: float) -> bool:
        """Return whether the pixel position ``(row, col)`` lies inside the band."""
        first, last = self.pixels(height, width)
        position = row if self.axis == "rows" else col
        return first <= position < last

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description."""
        return {"axis": self.axis, "start": self.start, "stop": self.stop}


def parse_holdout(value: Any) -> Holdout | None:
    """Build a :class:`Holdout` from ``None``, a mapping or a ``"cols:0.8-1.0"`` string.

    Parameters
    ----------
    value
        ``None`` (no hold-out), ``{"axis": "cols", "start": 0.8, "stop": 1.0}`` or a string.

    Returns
    -------
    Holdout or None
        The parsed band.

    Examples
    --------
    >>> parse_holdout("rows:0.75-1")
    Holdout(axis='rows', start=0.75, stop=1.0)
    """
    if value is None or isinstance(value, Holdout):
        return value
    if isinstance(value, str):
        try:
            axis, span = value.split(":")
            start, stop = (float(part) for part in span.split("-"))
        except ValueError as exc:
            raise ConfigError(
                f"holdout {value!r} is not of the form 'cols:0.8-1.0' or 'rows:0-0.2'"
            ) from exc
        return Holdout(axis.strip(), start, stop)  # type: ignore[arg-type]
    if isinstance(value, dict):
        unknown = set(value) - {"axis", "start", "stop"}
        if unknown:
            raise ConfigError(f"holdout has unknown keys {sorted(unknown)}; use axis, start, stop")
        return Holdout(
            value.get("axis", "cols"), float(value.get("start", 0.8)), float(value.get("stop", 1.0))
        )
    raise ConfigError(f"holdout must be a mapping or a string like 'cols:0.8-1.0', got {value!r}")
