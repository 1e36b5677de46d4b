"""Run a planned tile: cut the read box into patches, batch same-sized ones, keep the cores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.tile.grid import Patch, TilePlan

__all__ = ["Submitted", "encode_tile", "predict_tile"]


class Submitted(Protocol):
    """A submitted batch: a :class:`concurrent.futures.Future` or a feed's ``Pending``."""

    def result(self, timeout: float | None = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Return the batch's ``(stored, labels)`` once its model call is done."""
        ...

    def cancel(self) -> bool:
        """Withdraw the batch if it has not started."""
        ...


def _batches(
    box: npt.NDArray[Any], plan: TilePlan, batch: int
) -> Iterator[tuple[list[Patch], npt.NDArray[Any]]]:
    """Yield ``(patches, stacked windows)``; only patches of equal window size share a call."""
    groups: dict[tuple[int, int], list[Patch]] = {}
    for patch in plan.patches:
        groups.setdefault((patch.window.height, patch.window.width), []).append(patch)
    step = max(1, batch)
    for patches in groups.values():
        for start in range(0, len(patches), step):
            chunk = patches[start : start + step]
            windows = []
            for patch in chunk:
                r = patch.window.row_off - plan.read.row_off
                c = patch.window.col_off - plan.read.col_off
                windows.append(box[:, r : r + patch.window.height, c : c + patch.window.width])
            yield chunk, np.stack(windows)


def _place(
    result: npt.NDArray[Any], plan: TilePlan, chunk: list[Patch], outs: npt.NDArray[Any]
) -> None:
    """Copy each patch's core out of its model output into ``result`` (core coordinates)."""
    core = plan.core
    for patch, out in zip(chunk, outs, strict=True):
        rows, cols = patch.output_slices()
        r = patch.core.row_off - core.row_off
        c = patch.core.col_off - core.col_off
        result[..., r : r + patch.core.height, c : c + patch.core.width] = out[..., rows, cols]


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
    result = np.empty((outputs, plan.core.height, plan.core.width), np.float32)
    for chunk, windows in _batches(box, plan, batch):
        _place(result, plan, chunk, forward(windows))
    return result


def encode_tile(
    submit: Callable[[npt.NDArray[Any]], Submitted],
    box: npt.NDArray[Any],
    plan: TilePlan,
    *,
    batch: int = 4,
    outputs: int,
    dtype: str,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
    """Return the stored probabilities ``(K, rows, cols)`` and labels ``(rows, cols)`` of a core.

    Every batch of the tile is submitted first (``submit`` may block while the model's queue
    is full: that is the backpressure), then the results are placed in order. The batches,
    windows and cores are those of :func:`predict_tile`, so the two agree pixel for pixel.

    Parameters
    ----------
    submit
        Raw ``(N, C, h, w)`` windows -> a future of ``(stored (N, K, h', w'), labels (N, h',
        w'))`` (e.g. :meth:`pipeline.infer.feed.Feed.submit` with the encoding bound).
    box, plan, batch, outputs
        As :func:`predict_tile`.
    dtype
        The stored probability dtype.
    """
    shape = (plan.core.height, plan.core.width)
    stored = np.empty((outputs, *shape), dtype)
    labels = np.empty(shape, np.uint8)
    pending = [(chunk, submit(windows)) for chunk, windows in _batches(box, plan, batch)]
    try:
        for chunk, future in pending:
            probs, classes = future.result()
            _place(stored, plan, chunk, probs)
            _place(labels, plan, chunk, classes)
    finally:
        for _, future in pending:
            future.cancel()
    return stored, labels
