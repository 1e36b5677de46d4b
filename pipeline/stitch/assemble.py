"""Turn a core's float32 probabilities into class ids (pure)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["to_labels"]


def to_labels(
    probs: npt.NDArray[np.float32], activation: str, threshold: float
) -> npt.NDArray[np.uint8]:
    """Class ids: ``p >= threshold`` for one sigmoid channel, else the argmax (0 = background)."""
    if activation == "sigmoid" and probs.shape[0] == 1:
        return np.asarray(probs[0] >= threshold, dtype=np.uint8)
    return np.asarray(np.argmax(probs, axis=0), dtype=np.uint8)
