"""Run a planned tile: cut the read box into patches, batch same-sized ones, keep the cores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.tile.grid import TilePlan

__all__ = ["predict_tile"]


def predict_tile(
    forward: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
    box: npt.NDArray[Any],
    plan: TilePlan,
    *,
    batch: int = 4,
    outputs: int,
) -> npt.NDArray[np.float32]:
    """Return the ``(K, rows, cols)`` probabilities of ``plan.core``.

    Parameters
    ----------
    forward
        Raw ``(N, C, h, w)`` windows -> ``(N, K, h', w')`` probabilities.
    box
        The pixels of ``plan.read`` as ``(C, rows, cols)``.
    plan
        The tile plan (its patches index into ``box``).
    batch
        Patches per model call (only patches of equal window size share a call).
    outputs
        Number of probability channels ``K``.
    """
    core = plan.core
    result = np.empty((outputs, core.height, core.width), np.float32)
    groups: dict[tuple[int, int], list[Any]] = {}
    for patch in plan.patches:
        groups.setdefault((patch.window.height, patch.window.width), []).append(patch)
    for patches in groups.values():
        for start in range(0, len(patches), max(1, batch)):
            chunk = patches[start : start + max(1, batch)]
            windows = []
            for patch in chunk:
                r = patch.window.row_off - plan.read.row_off
                c = patch.window.col_off - plan.read.col_off
                windows.append(box[:, r : r + patch.window.height, c : c + patch.window.width])
            probs = forward(np.stack(windows))
            for patch, out in zip(chunk, probs, strict=True):
                rows, cols = patch.output_slices()
                r = patch.core.row_off - core.row_off
                c = patch.core.col_off - core.col_off
                result[:, r : r + patch.core.height, c : c + patch.core.width] = out[:, rows, cols]
    return result
