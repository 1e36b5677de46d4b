"""Object metrics for buildings: SpaceNet one-to-one matching at IoU >= 0.5.

Candidate pairs come from an STRtree query of every predicted polygon against the truth
polygons (only pairs whose envelopes intersect), IoUs are computed for those pairs only
(vectorised in shapely), and pairs are accepted greedily by decreasing IoU while both sides are
unmatched -- SpaceNet's rule. Cost is O(n log n + pairs), so 1e5 objects take seconds.
Pure computation on shapely geometries in one projected CRS.

Beside F1, the same pairs count why objects failed to match: a *merge* is one prediction
that holds at least half of each of two or more true objects (touching objects traced as one),
a *split* is one true object that holds at least half of each of two or more predictions
(one object cut into pieces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

__all__ = ["ObjectMetrics", "greedy_pairs", "match_objects"]


@dataclass(frozen=True)
class ObjectMetrics:
    """The result of matching predicted objects to true objects.

    Attributes
    ----------
    tp, fp, fn
        Matched pairs, unmatched predictions, unmatched truths.
    precision, recall, f1
        From the counts (``precision`` is NaN without predictions, ``recall`` without truths;
        ``f1`` is 1.0 when both sets are empty and 0.0 when exactly one is).
    mean_iou
        Mean IoU of the matched pairs (NaN when none).
    matches
        ``(n, 2)`` indices (prediction, truth) of matched pairs.
    iou_threshold
        The matching threshold used.
    merges
        Predictions holding at least half of each of two or more true objects.
    splits
        True objects holding at least half of each of two or more predictions.
    merged_truths, split_predictions
        The true objects involved in merges and the predictions involved in splits.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    matches: np.ndarray
    iou_threshold: float
    merges: int = 0
    splits: int = 0
    merged_truths: int = 0
    split_predictions: int = 0

    @classmethod
    def from_matches(
        cls,
        matches: np.ndarray,
        ious: np.ndarray,
        n_pred: int,
        n_true: int,
        iou_threshold: float,
    ) -> ObjectMetrics:
        """Build the counts and scores from accepted pairs (see :func:`greedy_pairs`)."""
        tp = len(matches)
        precision = tp / n_pred if n_pred else float("nan")
        recall = tp / n_true if n_true else float("nan")
        f1 = 1.0 if not n_pred and not n_true else 2 * tp / (n_pred + n_true)
        return cls(
            tp=tp,
            fp=n_pred - tp,
            fn=n_true - tp,
            precision=precision,
            recall=recall,
            f1=f1,
            mean_iou=float(ious.mean()) if len(ious) else float("nan"),
            matches=matches,
            iou_threshold=iou_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the scores as a JSON-able dict (without the match list)."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_iou": self.mean_iou,
            "iou_threshold": self.iou_threshold,
            "merges": self.merges,
            "splits": self.splits,
            "merged_truths": self.merged_truths,
            "split_predictions": self.split_predictions,
        }


def match_objects(
    predicted: Sequence[Any] | np.ndarray,
    truth: Sequence[Any] | np.ndarray,
    *,
    iou_threshold: float = 0.5,
) -> ObjectMetrics:
    """Match predicted polygons to true polygons one-to-one at ``IoU >= iou_threshold``.

    Parameters
    ----------
    predicted, truth
        Polygons in the same projected CRS (invalid ones are repaired with ``make_valid``).
    iou_threshold
        Minimum IoU for a pair to count (SpaceNet: 0.5).

    Returns
    -------
    ObjectMetrics
        Counts, precision, recall, F1, merges, splits and the matched pairs.

    Examples
    --------
    >>> a = shapely.box(0, 0, 10, 10)
    >>> match_objects([a, shapely.box(20, 0, 30, 10)], [shapely.box(1, 0, 11, 10)]).f1
    0.6666666666666666
    >>> two_houses = [shapely.box(0, 0, 9, 10), shapely.box(11, 0, 20, 10)]
    >>> merged = match_objects([shapely.box(0, 0, 20, 10)], two_houses)
    >>> merged.merges, merged.merged_truths, merged.splits, merged.f1
    (1, 2, 0, 0.0)
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred = _clean(predicted)
    true = _clean(truth)
    matches = np.zeros((0, 2), dtype=np.int64)
    ious = np.zeros(0)
    merge_split = (0, 0, 0, 0)
    if len(pred) and len(true):
        tree = shapely.STRtree(true)
        pred_index, true_index = tree.query(pred, predicate="intersects")
        if len(pred_index):
            a, b = pred[pred_index], true[true_index]
            intersection = shapely.area(shapely.intersection(a, b))
            merge_split = _merges_and_splits(
                pred_index, true_index, intersection, shapely.area(a), shapely.area(b)
            )
            union = shapely.area(a) + shapely.area(b) - intersection
            pair_iou = np.divide(
                intersection, union, out=np.zeros_like(intersection), where=union > 0
            )
            matches, ious = greedy_pairs(
                pred_index, true_index, pair_iou, iou_threshold, len(pred), len(true)
            )
    tp = len(matches)
    fp = len(pred) - tp
    fn = len(true) - tp
    precision = tp / len(pred) if len(pred) else float("nan")
    recall = tp / len(true) if len(true) else float("nan")
    f1 = 1.0 if not len(pred) and not len(true) else 2 * tp / (len(pred) + len(true))
    return ObjectMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=float(ious.mean()) if len(ious) else float("nan"),
        matches=matches,
        iou_threshold=iou_threshold,
        merges=merge_split[0],
        splits=merge_split[1],
        merged_truths=merge_split[2],
        split_predictions=merge_split[3],
    )


def greedy_pairs(
    pred_index: np.ndarray,
    true_index: np.ndarray,
    pair_iou: np.ndarray,
    iou_threshold: float,
    n_pred: int,
    n_true: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Accept candidate pairs one-to-one, best IoU first (SpaceNet's rule).

    Parameters
    ----------
    pred_index, true_index, pair_iou
        Candidate pairs (indices into the predicted and true objects) and their IoU.
    iou_threshold
        Pairs below it are never accepted.
    n_pred, n_true
        Number of predicted and true objects.

    Returns
    -------
    matches, ious
        ``(n, 2)`` accepted (prediction, truth) pairs and their IoUs. Ties are broken by
        indices, so the result is stable.
    """
    keep = pair_iou >= iou_threshold
    order = np.lexsort((true_index[keep], pred_index[keep], -pair_iou[keep]))
    candidates = np.column_stack([pred_index[keep], true_index[keep]])[order]
    candidate_iou = pair_iou[keep][order]
    used_pred = np.zeros(n_pred, dtype=bool)
    used_true = np.zeros(n_true, dtype=bool)
    chosen = []
    for position, (i, j) in enumerate(candidates):
        if not used_pred[i] and not used_true[j]:
            used_pred[i] = used_true[j] = True
            chosen.append(position)
    return candidates[chosen].astype(np.int64).reshape(-1, 2), candidate_iou[chosen]


def _merges_and_splits(
    pred_index: np.ndarray,
    true_index: np.ndarray,
    intersection: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
) -> tuple[int, int, int, int]:
    """Count merges and splits from the overlapping pairs (see the module docstring)."""
    holds_truth = intersection >= 0.5 * true_area  # the prediction holds most of the truth
    holds_pred = intersection >= 0.5 * pred_area  # the truth holds most of the prediction
    per_pred = np.bincount(pred_index[holds_truth], minlength=int(pred_index.max()) + 1)
    per_true = np.bincount(true_index[holds_pred], minlength=int(true_index.max()) + 1)
    merges, splits = per_pred >= 2, per_true >= 2
    return (int(merges.sum()), int(splits.sum()), int(per_pred[merges].sum()),
            int(per_true[splits].sum()))  # fmt: skip


def _clean(geometries: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = np.empty(len(geometries), dtype=object)
    array[:] = list(geometries)
    if len(array) == 0:
        return array
    array = array[~shapely.is_empty(array) & ~shapely.is_missing(array)]
    invalid = ~shapely.is_valid(array)
    if invalid.any():
        array[invalid] = shapely.make_valid(array[invalid])
    return np.asarray(array, dtype=object)
