"""Outputs appear under their final name only when complete: temp name, then rename."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from pipeline.errors import ConfigError, OutputExistsError

__all__ = [
    "check_not_input",
    "check_output",
    "commit",
    "holds",
    "remove_stale_temporaries",
    "temporary_path",
    "write_text",
]


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


def holds(output: str | Path, path: str | Path) -> bool:
    """Whether writing ``output`` would replace ``path``: it is ``path`` or a folder above it.

    Paths are compared resolved (``..`` and symlinks followed), so spelling does not matter.
    """
    out, inside = Path(output).resolve(), Path(path).resolve()
    return out == inside or out in inside.parents


def check_not_input(output: str | Path, *inputs: str | Path) -> None:
    """Refuse an output that is (or holds) one of the inputs, before anything is deleted.

    Raises
    ------
    ConfigError
        Naming the output, the input and the fix.
    """
    for path in inputs:
        if holds(output, path):
            what = "is" if Path(output).resolve() == Path(path).resolve() else "holds"
            raise ConfigError(
                f"output {output} {what} the input {path}: writing it would destroy the input; "
                "choose another output path"
            )


def temporary_path(path: Path) -> Path:
    """Return a hidden sibling of ``path`` (same file system, so the final rename is atomic)."""
    suffix = "".join(path.suffixes[-1:])  # keep the extension: GDAL drivers check it
    stem = path.name[: len(path.name) - len(suffix)]
    return path.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def commit(tmp: Path, path: Path) -> None:
    """Rename the finished temporary file to its final name (replacing an old one)."""
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write a small text file (a JSON report) under a temporary name, then rename it."""
    out = Path(path)
    tmp = temporary_path(out)
    try:
        tmp.write_text(text)
        commit(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temporaries of ``path`` left by killed processes; return what was removed.

    A run killed while writing (SIGKILL, OOM, walltime) leaves its :func:`temporary_path`
    behind. The process id in the name tells a dead writer from a live one on this machine;
    a live writer's file is left alone.
    """
    out = Path(path)
    suffix = "".join(out.suffixes[-1:])
    stem = out.name[: len(out.name) - len(suffix)]
    pattern = re.compile(rf"\.{re.escape(stem)}\.tmp-(\d+)-[0-9a-f]{{8}}{re.escape(suffix)}")
    parent = out.parent if str(out.parent) else Path()
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
