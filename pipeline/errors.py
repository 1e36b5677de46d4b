"""The gigaseg exception tree.

Every error the pipeline raises on purpose derives from :class:`GigasegError`, and each
subclass also inherits the matching built-in (``ValueError``, ``OSError``...), as
``rasterio.errors`` does, so callers can catch either. Messages give the cause, the values
involved and what to do, on one line: the CLI prints ``str(error)`` as is.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GigasegError",
    "InputError",
    "OutputExistsError",
    "ReadError",
    "StoreError",
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


class StoreError(GigasegError, OSError):
    """A Zarr store cannot be created, reused or resumed."""


class OutputExistsError(GigasegError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""
