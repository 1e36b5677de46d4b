"""Outputs appear under their final name only when complete: temp name, then rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipeline.errors import ConfigError, OutputExistsError

__all__ = ["check_output", "commit", "temporary_path"]


def check_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate an output path before any work starts.

    Raises
    ------
    OutputExistsError
        The file exists and ``overwrite`` is false.
    ConfigError
        The directory is missing or not writable.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path()
    if not parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {out}: directory {parent} is not writable")
    return out


def temporary_path(path: Path) -> Path:
    """Return a hidden sibling of ``path`` (same file system, so the final rename is atomic)."""
    suffix = "".join(path.suffixes[-1:])  # keep the extension: GDAL drivers check it
    stem = path.name[: len(path.name) - len(suffix)]
    return path.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def commit(tmp: Path, path: Path) -> None:
    """Rename the finished temporary file to its final name (replacing an old one)."""
    tmp.replace(path)
