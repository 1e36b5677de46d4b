"""The whole-image reference every tiled run must equal.

``model(reflect_pad(image, halo))`` cropped to the image: the image is mirrored by ``halo`` on
each side and further at the bottom/right up to a size the model accepts (for "same" models
a multiple of the alignment). A tile's window starts at ``core - halo``, the same offset modulo
the alignment, and reads through the same mirror, so its core matches this exactly when the
halo covers the receptive field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.tile.grid import InputSizes
from pipeline.tile.overlap import reflect_pad

__all__ = ["reference_predict"]


def reference_predict(
    forward: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]],
    image: npt.NDArray[Any],
    *,
    halo: int,
    sizes: InputSizes,
    padding: str = "same",
) -> npt.NDArray[np.float32]:
    """Run ``forward`` once on the whole mirror-padded image and crop to the image.

    Parameters
    ----------
    forward
        Maps a raw ``(1, C, H, W)`` batch to ``(1, K, H', W')`` (e.g. a :class:`Predictor`).
    image
        ``(C, H, W)`` raw pixels.
    halo
        Context mirrored on each side.
    sizes
        Input sizes the model accepts.
    padding
        ``"same"`` (output = input size) or ``"valid"`` (output shrinks by ``2 * halo``).

    Returns
    -------
    numpy.ndarray
        ``(K, H, W)`` probabilities.
    """
    _, height, width = image.shape
    size_rows = sizes.at_least(height + 2 * halo)
    size_cols = sizes.at_least(width + 2 * halo)
    padded = reflect_pad(image, (halo, halo), (size_rows - height - halo, size_cols - width - halo))
    out = forward(padded[None])[0]
    off = halo if padding == "same" else 0
    return np.asarray(out[:, off : off + height, off : off + width], dtype=np.float32)
