"""Test-time augmentation: average the model over flips and rotations, in probability space.

``with_tta(forward, n)`` wraps a model call: each window of the batch is transformed with
each of the first ``n`` dihedral transforms (1: identity; 2: + left-right flip; 4: + up-down
flip and both; 8: + the transposes, i.e. the 90 degree rotations), run, transformed back and
averaged.

Why the tiled result still equals TTA on the whole image: the transform is applied to the
whole window (core + halo + the alignment padding), never to the core alone. A window's
offset and size are multiples of the model's alignment, and so is the padded whole image,
so the flipped (or transposed) window sits at an aligned offset of the flipped whole image;
the core keeps at least ``halo`` pixels of context on every side, flipped or not. The network
therefore computes the same core pixels in both, for every transform, and the average is
taken in the same order. At the image edge the window's halo is not symmetric (the alignment
padding is at the bottom/right only); that does not matter, because the context comes from
the same mirror in both and is only ever needed up to ``halo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError

__all__ = ["TRANSFORMS", "TTA_COUNTS", "parse_tta", "with_tta"]

#: Transform counts ``--tta`` accepts.
TTA_COUNTS = (1, 2, 4, 8)

#: The dihedral transforms in the order they are added: (transpose, flip rows, flip cols).
TRANSFORMS: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False),  # identity
    (False, False, True),  # left-right flip
    (False, True, False),  # up-down flip
    (False, True, True),  # 180 degree rotation
    (True, False, False),  # transpose
    (True, False, True),  # 90 degree rotation
    (True, True, False),  # 270 degree rotation
    (True, True, True),  # anti-transpose
)


def parse_tta(value: Any) -> int:
    """Return a transform count of :data:`TTA_COUNTS`.

    Examples
    --------
    >>> parse_tta("4")
    4
    """
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count not in TTA_COUNTS or isinstance(value, bool):
        raise ConfigError(
            f"tta must be one of {', '.join(map(str, TTA_COUNTS))} (transforms averaged), "
            f"got {value!r}"
        )
    return count


def _apply(batch: npt.NDArray[Any], transform: tuple[bool, bool, bool]) -> npt.NDArray[Any]:
    """Transform ``(N, C, h, w)`` windows: transpose first, then the flips."""
    transpose, flip_rows, flip_cols = transform
    out = np.swapaxes(batch, -1, -2) if transpose else batch
    if flip_rows:
        out = out[..., ::-1, :]
    if flip_cols:
        out = out[..., :, ::-1]
    return out


def _invert(batch: npt.NDArray[Any], transform: tuple[bool, bool, bool]) -> npt.NDArray[Any]:
    """Undo :func:`_apply`: the flips first, then the transpose."""
    transpose, flip_rows, flip_cols = transform
    out = batch
    if flip_cols:
        out = out[..., :, ::-1]
    if flip_rows:
        out = out[..., ::-1, :]
    return np.swapaxes(out, -1, -2) if transpose else out


def with_tta(
    forward: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]], count: int
) -> Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]]:
    """Wrap a model call so it averages the first ``count`` dihedral transforms.

    Parameters
    ----------
    forward
        Raw ``(N, C, h, w)`` windows -> ``(N, K, h', w')`` probabilities.
    count
        1, 2, 4 or 8 (1 returns ``forward`` itself).

    Returns
    -------
    callable
        The same signature; ``count`` model calls per call.

    Examples
    --------
    >>> running_sum = lambda x: np.cumsum(x, axis=-1).astype(np.float32)  # not flip-invariant
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    >>> with_tta(running_sum, 2)(x)  # mean of [0, 1, 3, 6] and the flipped run [6, 6, 5, 3]
    array([[[[3. , 3.5, 4. , 4.5]]]], dtype=float32)
    """
    count = parse_tta(count)
    if count == 1:
        return forward
    transforms = TRANSFORMS[:count]

    def run(batch: npt.NDArray[Any], transform: tuple[bool, bool, bool]) -> npt.NDArray[Any]:
        return _invert(forward(np.ascontiguousarray(_apply(batch, transform))), transform)

    def averaged(batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        total = run(batch, transforms[0]).astype(np.float32)
        for transform in transforms[1:]:
            total = total + run(batch, transform)
        return np.ascontiguousarray(total / np.float32(count))

    return averaged
