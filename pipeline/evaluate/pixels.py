"""Pixel metrics: per-class IoU, Dice, precision and recall from accumulated counts.

Counts are accumulated window by window (:meth:`PixelCounts.update`), so a gigapixel
prediction is scored without holding it in memory. Pure computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["IGNORE", "PixelCounts", "pixel_metrics"]

#: Truth value for pixels that are not scored.
IGNORE = 255


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


@dataclass
class PixelCounts:
    """True positives, false positives and false negatives per foreground class.

    Attributes
    ----------
    classes
        Number of foreground classes (class ids ``1..classes``; 0 is background).
    tp, fp, fn
        Counts per class (index 0 = class 1).
    """

    classes: int = 1
    tp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "fn"):
            if len(getattr(self, name)) != self.classes:
                setattr(self, name, np.zeros(self.classes, dtype=np.int64))

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Add one window of predicted and true class ids (truth :data:`IGNORE` is skipped)."""
        if predicted.shape != truth.shape:
            raise ValueError(
                f"prediction window {predicted.shape} and truth window {truth.shape} differ"
            )
        scored = truth != IGNORE
        for cls in range(1, self.classes + 1):
            is_pred = (predicted == cls) & scored
            is_true = (truth == cls) & scored
            both = int(np.count_nonzero(is_pred & is_true))
            self.tp[cls - 1] += both
            self.fp[cls - 1] += int(np.count_nonzero(is_pred)) - both
            self.fn[cls - 1] += int(np.count_nonzero(is_true)) - both

    def to_dict(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Return IoU, Dice, precision, recall and counts per class (NaN when undefined)."""
        names = names or tuple(f"class_{i}" for i in range(1, self.classes + 1))
        out: dict[str, Any] = {}
        for index, name in enumerate(names):
            tp, fp, fn = int(self.tp[index]), int(self.fp[index]), int(self.fn[index])
            out[name] = {
                "iou": _ratio(tp, tp + fp + fn),
                "dice": _ratio(2 * tp, 2 * tp + fp + fn),
                "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, tp + fn),
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        return out


def pixel_metrics(
    predicted: np.ndarray,
    truth: np.ndarray,
    *,
    classes: int = 1,
    names: tuple[str, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score one array of predicted class ids against true class ids.

    Parameters
    ----------
    predicted, truth
        Same-shaped integer arrays; truth pixels equal to :data:`IGNORE` are not scored.
    classes
        Number of foreground classes.
    names
        Class names for the keys (default ``class_1``, ``class_2``...).

    Returns
    -------
    dict
        ``{"class_1": {"iou", "dice", "precision", "recall", "tp", "fp", "fn"}, ...}``.

    Examples
    --------
    >>> truth = np.array([[0, 1], [1, 1]])
    >>> pixel_metrics(np.array([[1, 1], [0, 1]]), truth)["class_1"]["iou"]
    0.5
    """
    counts = PixelCounts(classes)
    counts.update(np.asarray(predicted), np.asarray(truth))
    return counts.to_dict(names)
