"""Turn a core's float32 probabilities into what the store holds (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError

__all__ = ["PROBABILITY_DTYPES", "parse_probabilities", "to_labels", "to_stored"]

#: Stored probability encodings: uint8 holds ``round(p * 255)``.
PROBABILITY_DTYPES = ("uint8", "float16", "float32")


def parse_probabilities(name: str) -> str:
    """Validate a probability encoding name."""
    if name not in PROBABILITY_DTYPES:
        raise ConfigError(f"probabilities {name!r} is not one of {', '.join(PROBABILITY_DTYPES)}")
    return name


def to_stored(probs: npt.NDArray[np.float32], dtype: str) -> npt.NDArray[Any]:
    """Encode probabilities in ``[0, 1]`` as ``dtype`` (uint8: ``round(p * 255)``)."""
    if dtype == "uint8":
        encoded: npt.NDArray[Any] = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
        return encoded
    return np.asarray(probs, dtype=dtype)


def to_labels(
    probs: npt.NDArray[np.float32], activation: str, threshold: float
) -> npt.NDArray[np.uint8]:
    """Class ids: ``p >= threshold`` for one sigmoid channel, else the argmax (0 = background)."""
    if activation == "sigmoid" and probs.shape[0] == 1:
        return np.asarray(probs[0] >= threshold, dtype=np.uint8)
    return np.asarray(np.argmax(probs, axis=0), dtype=np.uint8)
