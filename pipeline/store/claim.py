"""Claim a store for one run: lock it, choose where to write, swap in only when complete.

:func:`claim_store` is how a run gets its store (:func:`pipeline.predict` uses it):

- it holds the store's lock (:mod:`pipeline.store.lock`) for the whole run, so two runs into
  one path cannot both write it: the second fails at once naming the first;
- a fresh or resumed run writes the store in place; ``overwrite`` writes a new store aside,
  ``.<name>.tmp-<run id>`` beside the old one, and :meth:`Claim.commit` swaps it in only
  once it is complete. A failed or interrupted overwrite leaves the old store as it was
  (its aside is removed; a killed run's aside is removed by the next run that claims the
  store, e.g. ``--resume``);
- the swap is two renames (old store aside as ``.<name>.old-<run id>``, new store in);
  a run killed between them is finished by the next claim: the complete new store is moved
  in, or else the old one is moved back.

An overwrite needs the room of both stores until the swap.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import GigasegWarning, OutputBusyError, OutputExistsError, StoreError
from pipeline.store.layout import COMPLETE
from pipeline.store.lock import OutputLock, acquire

__all__ = ["AsideWarning", "Claim", "aside_path", "claim_store", "recover_asides"]


def aside_path(store: str | Path, run_id: str, kind: str = "tmp") -> Path:
    """Return where an overwrite of ``store`` by ``run_id`` writes (``kind="tmp"``).

    ``kind="old"`` names the old store while it is swapped out.

    >>> aside_path("/out/scene.zarr", "ab12").name
    '.scene.zarr.tmp-ab12'
    """
    path = Path(store)
    return path.with_name(f".{path.name}.{kind}-{run_id}")


def _asides(store: Path, kind: str) -> dict[str, Path]:
    """Asides of ``store`` of one kind on disk, by run id."""
    pattern = re.compile(rf"\.{re.escape(store.name)}\.{kind}-([0-9A-Za-z_-]+)")
    parent = store.parent
    if not parent.is_dir():
        return {}
    found: dict[str, Path] = {}
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            found[match.group(1)] = entry
    return found


def _status(path: Path) -> str | None:
    from pipeline.store.zarr_store import read_attrs

    try:
        return read_attrs(path).get("status")
    except OSError:
        return None


def recover_asides(store: str | Path) -> list[str]:
    """Tidy what killed runs left beside ``store``; call only while holding its lock.

    A swap cut between its two renames is finished (the new store is complete) or undone
    (the old store is moved back); every other aside store is removed. Returns one line
    per action, for a warning.
    """
    path = Path(store)
    done: list[str] = []
    news, olds = _asides(path, "tmp"), _asides(path, "old")
    for run_id, old in olds.items():
        new = news.get(run_id)
        if not path.exists():
            if new is not None and _status(new) == COMPLETE:
                new.rename(path)
                done.append(f"finished the swap of run {run_id} (moved {new.name} in)")
            else:
                old.rename(path)
                done.append(f"restored the old store from {old.name} (run {run_id} was killed)")
                continue
        shutil.rmtree(old, ignore_errors=True)
    for run_id, new in _asides(path, "tmp").items():
        shutil.rmtree(new, ignore_errors=True)
        done.append(f"removed {new.name}, left by run {run_id} (killed while overwriting)")
    return done


@dataclass
class Claim:
    """A store held by one run: ``path`` is where it writes, ``store`` where it ends up."""

    store: Path
    path: Path
    run_id: str
    lock: OutputLock
    committed: bool = False

    @property
    def aside(self) -> bool:
        """Whether this run writes aside (an overwrite of an existing store)."""
        return self.path != self.store

    def commit(self) -> None:
        """Swap the finished aside store in place of the old one (nothing for in-place runs)."""
        if self.aside:
            old = aside_path(self.store, self.run_id, "old")
            with contextlib.suppress(FileNotFoundError):  # removed by the user meanwhile
                self.store.rename(old)
            self.path.rename(self.store)
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True

    def discard(self) -> None:
        """Remove an unfinished aside store; the old store stays as it was."""
        if self.aside and not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


class AsideWarning(GigasegWarning):
    """Aside stores of killed runs were tidied."""


def _exists_error(store: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{store} already exists; use --overwrite to replace it or --resume to finish it"
    )


@contextlib.contextmanager
def claim_store(
    store: str | Path, run_id: str, *, resume: bool = False, overwrite: bool = False
) -> Iterator[Claim]:
    """Lock ``store`` for ``run_id`` and say where to write it (see the module docstring).

    On leaving the block the lock is released; an aside that was not committed is removed.

    Raises
    ------
    OutputBusyError
        Another live run holds the store.
    OutputExistsError
        The store exists and neither ``resume`` nor ``overwrite`` was given, or the path is
        not a Zarr store.
    StoreError
        The lock cannot be created (missing or read-only folder).
    """
    from pipeline.store.zarr_store import is_store

    path = Path(store)
    try:  # first, so a second run is told who writes the store, whatever it finds on disk
        lock = acquire(path, run_id)
    except OutputBusyError:
        raise
    except StoreError:  # no lock file possible (read-only folder): say what matters most
        if path.exists() and not (resume or overwrite):
            raise _exists_error(path) from None
        raise
    try:
        tidied = recover_asides(path)
        if tidied:
            warnings.warn(f"{path}: " + "; ".join(tidied), AsideWarning, stacklevel=3)
        target = path
        if path.exists():
            try:  # a store whose zarr.json is corrupt may be overwritten (or resumed: refused)
                usable = is_store(path)
            except StoreError:
                usable = True
            if not usable:
                raise OutputExistsError(
                    f"{path} exists and is not a Zarr store; choose another --out or remove it"
                )
            if not (resume or overwrite):
                raise _exists_error(path)
            if overwrite:
                target = aside_path(path, run_id)
        claim = Claim(path, target, run_id, lock)
        try:
            yield claim
        finally:
            claim.discard()
    finally:
        lock.release()
