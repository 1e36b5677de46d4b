"""Checking that a store's done tiles still hold their chunks, and reading them loudly.

A store marked complete can still be damaged afterwards: a chunk file deleted (zarr reads a
missing chunk as the fill value, so a deleted tile silently becomes background) or corrupted
(the codec raises a 90-line traceback from deep inside zarr). Stores written with
``chunks_always_written`` (every done tile writes its chunks, even all-background ones), so
for them a missing chunk of a done tile is damage, not an empty tile.

- :func:`damaged_tiles` checks every done tile: its chunk files exist and decode.
  ``gigaseg status --verify`` reports them; ``gigaseg predict --resume --verify`` marks them
  pending and recomputes them.
- :func:`read_region` is how stages read a store region: a codec error becomes one line
  naming the chunk and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import StoreError
from pipeline.store.layout import DONE, LABELS, PROBABILITIES, TILES

__all__ = [
    "ALWAYS_WRITTEN",
    "DamagedTile",
    "chunk_key",
    "damaged_tiles",
    "describe_damage",
    "read_region",
]

#: Store attribute: every done tile wrote its chunks (so a missing one is damage).
ALWAYS_WRITTEN = "chunks_always_written"


@dataclass(frozen=True)
class DamagedTile:
    """A done tile whose chunk is missing or cannot be decoded."""

    index: tuple[int, int]
    chunk: str
    problem: str


def chunk_key(array: Any, index: tuple[int, ...]) -> str:
    """Return the store-relative path of one chunk of ``array`` (its key encoding)."""
    encoded = array.metadata.chunk_key_encoding.encode_chunk_key(tuple(int(i) for i in index))
    return f"{array.path}/{encoded}"


def _tile_chunks(group: Any, name: str, row: int, col: int) -> tuple[Any, tuple[int, ...]]:
    array = group[name]
    return array, ((0, row, col) if array.ndim == 3 else (row, col))


def damaged_tiles(
    path: str | Path, *, decode: bool = True, ledger: npt.NDArray[np.uint8] | None = None
) -> list[DamagedTile]:
    """Every done tile whose labels or probabilities chunk is missing or does not decode.

    A missing chunk counts only in stores marked :data:`ALWAYS_WRITTEN` (older stores skip
    all-background chunks). ``decode=False`` only checks that the files exist (a stat per
    chunk, cheap enough before every vectorize); ``True`` also reads every chunk.
    """
    import zarr

    from pipeline.store.zarr_store import read_ledger

    group = zarr.open_group(str(path), mode="r")
    if ledger is None and TILES not in set(group.array_keys()):
        return []  # no ledger (a label store built by hand): nothing says which tiles are done
    always = bool(dict(group.attrs).get(ALWAYS_WRITTEN))
    states = read_ledger(path) if ledger is None else ledger
    damaged: list[DamagedTile] = []
    for row, col in zip(*np.nonzero(states == DONE), strict=True):
        index = (int(row), int(col))
        for name in (LABELS, PROBABILITIES):
            array, chunk = _tile_chunks(group, name, *index)
            key = chunk_key(array, chunk)
            if always and not (Path(path) / key).is_file():
                damaged.append(DamagedTile(index, key, "missing"))
                break
            if not decode:
                continue
            try:
                region = tuple(
                    slice(i * size, (i + 1) * size)
                    for i, size in zip(chunk, array.chunks, strict=True)
                )
                array[region]
            except Exception as exc:  # any codec failure: zstd, blosc, crc32c...
                reason = " ".join(str(exc).split())[:120] or type(exc).__name__
                damaged.append(DamagedTile(index, key, f"cannot be decoded ({reason})"))
                break
    return damaged


def describe_damage(path: str | Path, damaged: list[DamagedTile]) -> str:
    """One line: how many done tiles are damaged, the first few chunks, and the fix."""
    shown = ", ".join(f"{d.chunk} {d.problem}" for d in damaged[:3])
    more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return (
        f"store {path}: {len(damaged)} done tile(s) have damaged chunks ({shown}{more}); "
        "recompute them with gigaseg predict SOURCE --model MODEL --out "
        f"{path} --resume --verify"
    )


def read_region(path: str | Path, array: Any, selection: tuple[slice, ...]) -> npt.NDArray[Any]:
    """Read ``array[selection]`` from a store, turning codec errors into one line.

    Raises
    ------
    StoreError
        Naming the store, the array and the region, and how to repair it.
    """
    try:
        return np.asarray(array[selection])
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise StoreError(
            f"store {path}: chunk {_bad_chunk(array, selection)} cannot be decoded ({reason}); "
            f"check the store with gigaseg status {path} --verify and recompute its damaged "
            "tiles with gigaseg predict ... --resume --verify"
        ) from None


def _bad_chunk(array: Any, selection: tuple[slice, ...]) -> str:
    """Return the key of the first chunk in ``selection`` that fails to decode."""
    import itertools

    ranges = []
    for part, size, length in zip(selection, array.chunks, array.shape, strict=True):
        start, stop, _ = part.indices(length)
        ranges.append(range(start // size, -(-stop // size)))
    for index in itertools.product(*ranges):
        region = tuple(
            slice(i * size, (i + 1) * size) for i, size in zip(index, array.chunks, strict=True)
        )
        try:
            array[region]
        except Exception:
            return chunk_key(array, index)
    return f"{array.path} (region {selection})"
