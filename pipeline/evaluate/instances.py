"""Instance metrics on label rasters: object F1 at IoU >= 0.5 and AJI (pure computation).

An instance raster holds one id per object (0 = background). Every statistic comes from
one contingency table of (predicted id, true id) pixel counts, built with ``np.unique`` on
the overlapping pixels, so the cost is one pass over the pixels whatever the object count.

- Object F1: pairs are accepted one-to-one at ``IoU >= 0.5``, best first
  (:func:`~pipeline.evaluate.objects.greedy_pairs`, the rule of the polygon metrics).
- AJI (aggregated Jaccard index, Kumar et al. 2017, as computed by HoVer-Net's
  ``get_fast_aji``): each true object is paired with the prediction of highest IoU among
  those it overlaps; ``C`` sums their intersections and ``U`` their unions; true objects
  with no overlap and predictions never chosen add their whole area to ``U``;
  ``AJI = C / U``. A split object pairs with one piece and the other pieces add to ``U``;
  a merged prediction is chosen by several true objects and counted in each union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.evaluate.objects import ObjectMetrics, greedy_pairs

__all__ = ["InstanceMetrics", "components", "instance_metrics", "looks_like_instances"]


@dataclass(frozen=True)
class InstanceMetrics:
    """Object matching scores plus the aggregated Jaccard index of two instance rasters."""

    objects: ObjectMetrics
    aji: float
    predicted: int
    true: int

    def to_dict(self) -> dict[str, Any]:
        """Return the scores as a JSON-able dict."""
        return {**self.objects.to_dict(), "aji": self.aji, "predicted": self.predicted,
                "true": self.true}  # fmt: skip


def components(mask: npt.NDArray[Any], connectivity: int = 4) -> npt.NDArray[np.int32]:
    """Label the connected regions of a boolean mask 1..N (4- or 8-connectivity)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, _ = ndimage.label(np.asarray(mask, bool), structure=structure)
    return np.asarray(labels, np.int32)


def looks_like_instances(labels: npt.NDArray[Any], classes: int = 1) -> bool:
    """Whether a label raster's values look like instance ids rather than class ids.

    True when it has more distinct non-zero values than ``classes`` and either at least 3
    of them, or each value forms a single connected region (objects, not classes).

    Examples
    --------
    >>> cells = np.zeros((6, 6), int); cells[0, 0] = 1; cells[3, 3] = 2; cells[5, 0] = 3
    >>> looks_like_instances(cells), looks_like_instances((cells > 0).astype(int))
    (True, False)
    """
    values = np.unique(labels)
    values = values[values != 0]
    if len(values) <= classes:
        return False
    if len(values) >= 3:
        return True
    return all(components(labels == v, 8).max() == 1 for v in values)


def instance_metrics(
    predicted: npt.NDArray[Any], truth: npt.NDArray[Any], *, iou_threshold: float = 0.5
) -> InstanceMetrics:
    """Score a predicted instance raster against a true one (0 = background in both).

    Parameters
    ----------
    predicted, truth
        Same-shaped integer rasters of object ids (any ids; only equality matters).
    iou_threshold
        Object-matching threshold for F1.

    Returns
    -------
    InstanceMetrics
        Object F1/precision/recall with the matched pairs, and AJI (NaN without objects).

    Examples
    --------
    >>> truth = np.zeros((4, 8), int); truth[:, :4] = 1
    >>> split = np.zeros((4, 8), int); split[:2, :4] = 1; split[2:, :4] = 2
    >>> result = instance_metrics(split, truth)
    >>> result.objects.tp, result.aji  # one half matches at IoU 0.5; U = 16 + 8
    (1, 0.3333333333333333)
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred_ids, pred_inv = np.unique(predicted.ravel(), return_inverse=True)
    true_ids, true_inv = np.unique(truth.ravel(), return_inverse=True)
    # compact indices: 0 = background, objects 1..n
    p = np.where(pred_ids[pred_inv] == 0, 0, pred_inv + (pred_ids[0] != 0))
    t = np.where(true_ids[true_inv] == 0, 0, true_inv + (true_ids[0] != 0))
    n_pred = int(len(pred_ids) - (pred_ids[0] == 0))
    n_true = int(len(true_ids) - (true_ids[0] == 0))
    pred_area = np.bincount(p, minlength=n_pred + 1)[1:].astype(np.int64)
    true_area = np.bincount(t, minlength=n_true + 1)[1:].astype(np.int64)
    both = (p > 0) & (t > 0)
    codes, inter = np.unique(p[both].astype(np.int64) * (n_true + 1) + t[both], return_counts=True)
    pi, ti = codes // (n_true + 1) - 1, codes % (n_true + 1) - 1
    union = pred_area[pi] + true_area[ti] - inter
    iou = inter / union
    matches, ious = greedy_pairs(pi, ti, iou, iou_threshold, n_pred, n_true)
    objects = ObjectMetrics.from_matches(matches, ious, n_pred, n_true, iou_threshold)
    return InstanceMetrics(objects, _aji(pi, ti, inter, union, iou, pred_area, true_area),
                           n_pred, n_true)  # fmt: skip


def _aji(
    pi: np.ndarray,
    ti: np.ndarray,
    inter: np.ndarray,
    union: np.ndarray,
    iou: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
) -> float:
    if not len(true_area) and not len(pred_area):
        return float("nan")
    # for each true object, its overlapping prediction of highest IoU (lowest index on ties)
    order = np.lexsort((pi, -iou, ti))
    first = np.ones(len(order), bool)
    first[1:] = ti[order][1:] != ti[order][:-1]
    best = order[first]
    total_inter = int(inter[best].sum())
    total_union = int(union[best].sum())
    paired_true = np.zeros(len(true_area), bool)
    paired_true[ti[best]] = True
    used_pred = np.zeros(len(pred_area), bool)
    used_pred[pi[best]] = True
    total_union += int(true_area[~paired_true].sum()) + int(pred_area[~used_pred].sum())
    return total_inter / total_union if total_union else float("nan")
