"""The gigaseg exception tree.

Every error the pipeline raises on purpose derives from :class:`GigasegError`, and each
subclass also inherits the matching built-in (``ValueError``, ``OSError``...), as
``rasterio.errors`` does, so callers can catch either. Messages give the cause, the values
involved and what to do, on one line: the CLI prints ``str(error)`` as is. Values quoted in
a message go through :func:`short_repr`, so a message stays short whatever the input.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "ApproximateWarning",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "GigasegError",
    "GigasegWarning",
    "InputError",
    "ModelOutputError",
    "ModelRunError",
    "OutputBusyError",
    "OutputExistsError",
    "ReadError",
    "StaleLockWarning",
    "StoreError",
    "short_repr",
]


class GigasegError(Exception):
    """Root of every error gigaseg raises on purpose."""


class ConfigError(GigasegError, ValueError):
    """A setting, option or workflow key has an invalid value."""


class InputError(GigasegError, ValueError):
    """An input file or array cannot be used (missing, unreadable, wrong bands...)."""


class ReadError(InputError):
    """Pixels of a source could not be read; the message names the file and the window."""


class CheckpointError(GigasegError, ValueError):
    """A model file is missing, unsafe (pickle) or inconsistent."""


class ModelOutputError(GigasegError, ArithmeticError):
    """A model returned non-finite values (NaN/Inf weights, or an overflow at low precision)."""


class ModelRunError(GigasegError, RuntimeError):
    """The model's runtime (onnxruntime, TorchScript) rejected an input or failed on it."""


class ClusterError(GigasegError, RuntimeError):
    """A cluster cannot run the work: a job refused or dead, no worker, a bad scheduler."""


class StoreError(GigasegError, OSError):
    """A Zarr store cannot be created, reused or resumed."""


class OutputExistsError(GigasegError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""


class OutputBusyError(StoreError):
    """Another live run is writing the same output (it holds the output's lock)."""


class GigasegWarning(UserWarning):
    """Root of the warnings gigaseg gives on purpose (the CLI prints them on one line)."""


class StaleLockWarning(GigasegWarning):
    """The lock of a run that died (killed, out of memory) was taken over."""


class ApproximateWarning(GigasegWarning):
    """The result will differ from the whole-image reference (e.g. a halo below the model's)."""


#: Most characters of a value that an error message quotes.
MAX_REPR = 200

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxstring = _REPR.maxother = MAX_REPR


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to about ``limit`` characters without walking all of ``value``.

    Nested containers are shown to three levels and six items each (``reprlib``), so the cost
    is bounded even for a structure whose full repr would not fit in memory (a YAML alias
    bomb quoted in a "got ..." message).

    >>> short_repr(list(range(10**6)))
    '[0, 1, 2, 3, 4, 5, ...]'
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
