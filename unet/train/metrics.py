"""Running confusion counts for validation during training (pure torch)."""

from __future__ import annotations

import math

import torch

__all__ = ["Confusion"]

IGNORE = 255


class Confusion:
    """Accumulate per-class true/false positives and false negatives over batches.

    Parameters
    ----------
    classes
        Number of label classes including background (2 for a one-channel binary model).
    """

    def __init__(self, classes: int) -> None:
        self.classes = max(2, classes)
        self.matrix = torch.zeros(self.classes, self.classes, dtype=torch.float64)

    def update(self, predicted: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of predicted class ids and labels (``IGNORE`` pixels skipped)."""
        valid = labels != IGNORE
        index = labels[valid].long() * self.classes + predicted[valid].long()
        counts = torch.bincount(index, minlength=self.classes**2)
        self.matrix += counts.reshape(self.classes, self.classes).double()

    def iou(self) -> list[float]:
        """Intersection over union per foreground class (NaN when the class never occurs)."""
        out = []
        for cls in range(1, self.classes):
            tp = self.matrix[cls, cls]
            fp = self.matrix[:, cls].sum() - tp
            fn = self.matrix[cls, :].sum() - tp
            denominator = tp + fp + fn
            out.append(float(tp / denominator) if denominator > 0 else float("nan"))
        return out

    def dice(self) -> list[float]:
        """Dice (F1) per foreground class (NaN when the class never occurs)."""
        return [2 * v / (1 + v) if not math.isnan(v) else v for v in self.iou()]
