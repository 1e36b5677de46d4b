"""Road centre-line metrics: length-based precision and recall within a buffer.

Precision is the share of predicted centre-line length lying within ``buffer`` of a true line;
recall the share of true length within ``buffer`` of a predicted line (the "buffer" or
"relaxed" completeness/correctness of Wiedemann et al., 1998). APLS, which also scores graph
connectivity and path lengths, is not computed. Pure computation; lengths in CRS units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

__all__ = ["LineMetrics", "line_metrics"]


@dataclass(frozen=True)
class LineMetrics:
    """Length-based scores for centre-lines.

    Attributes
    ----------
    precision, recall, f1
        Correctness, completeness and their harmonic mean (NaN when undefined).
    predicted_length, true_length
        Total lengths, in CRS units.
    buffer
        The tolerance used.
    """

    precision: float
    recall: float
    f1: float
    predicted_length: float
    true_length: float
    buffer: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return dict(self.__dict__)


def _within(lines: np.ndarray, others: np.ndarray, buffer: float) -> float:
    """Length of ``lines`` lying within ``buffer`` of ``others`` (STRtree-restricted)."""
    if not len(lines) or not len(others):
        return 0.0
    zone = shapely.buffer(others, buffer)
    tree = shapely.STRtree(zone)
    total = 0.0
    line_index, zone_index = tree.query(lines, predicate="intersects")
    for index in np.unique(line_index):
        near = zone[zone_index[line_index == index]]
        total += shapely.length(shapely.intersection(lines[index], shapely.union_all(near)))
    return float(total)


def line_metrics(
    predicted: Sequence[Any] | np.ndarray,
    truth: Sequence[Any] | np.ndarray,
    *,
    buffer: float = 3.0,
) -> LineMetrics:
    """Score predicted centre-lines against true ones within ``buffer``.

    Parameters
    ----------
    predicted, truth
        LineStrings / MultiLineStrings in one projected CRS.
    buffer
        Distance (CRS units, metres) within which a line counts as found.

    Returns
    -------
    LineMetrics
        Precision, recall, F1 and total lengths.

    Examples
    --------
    >>> line = shapely.LineString([(0, 0), (100, 0)])
    >>> shifted = shapely.LineString([(0, 2), (50, 2)])
    >>> m = line_metrics([shifted], [line], buffer=3)  # round caps reach 2.24 m past x=50
    >>> round(m.precision, 3), round(m.recall, 3)
    (1.0, 0.522)
    """
    if buffer <= 0:
        raise ValueError(f"buffer must be positive, got {buffer}")
    pred = np.asarray(list(predicted), dtype=object)
    true = np.asarray(list(truth), dtype=object)
    pred_length = float(shapely.length(pred).sum()) if len(pred) else 0.0
    true_length = float(shapely.length(true).sum()) if len(true) else 0.0
    precision = _within(pred, true, buffer) / pred_length if pred_length else float("nan")
    recall = _within(true, pred, buffer) / true_length if true_length else float("nan")
    if not (math.isnan(precision) or math.isnan(recall)) and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = float("nan") if not pred_length and not true_length else 0.0
    return LineMetrics(precision, recall, f1, pred_length, true_length, buffer)
