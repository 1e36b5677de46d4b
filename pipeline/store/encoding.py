"""How probabilities are stored: ``uint8`` holds ``round(p * 255)``; floats as they are (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError

__all__ = ["PROBABILITY_DTYPES", "from_stored", "parse_probabilities", "to_stored"]

#: Stored probability encodings: uint8 holds ``round(p * 255)``.
PROBABILITY_DTYPES = ("uint8", "float16", "float32")


def parse_probabilities(name: str) -> str:
    """Validate a probability encoding name."""
    if name not in PROBABILITY_DTYPES:
        raise ConfigError(f"probabilities {name!r} is not one of {', '.join(PROBABILITY_DTYPES)}")
    return name


def to_stored(probs: npt.NDArray[np.float32], dtype: str) -> npt.NDArray[Any]:
    """Encode probabilities in ``[0, 1]`` as ``dtype`` (uint8: ``round(p * 255)``).

    Examples
    --------
    >>> to_stored(np.array([0.0, 0.5, 1.0], np.float32), "uint8").tolist()
    [0, 128, 255]
    """
    if dtype == "uint8":
        encoded: npt.NDArray[Any] = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
        return encoded
    return np.asarray(probs, dtype=dtype)


def from_stored(values: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Decode stored probabilities to float32 in ``[0, 1]`` (``uint8 / 255``; NaN -> 0).

    Examples
    --------
    >>> from_stored(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255)
    if values.dtype == np.uint16:
        return values.astype(np.float32) / np.float32(65535)
    return np.nan_to_num(values.astype(np.float32), nan=0.0)
