"""The core-tile grid and the windows each tile reads (plans only; reads no pixels).

A tile task owns a ``tile`` x ``tile`` core, whose origin is a multiple of ``tile`` and so of
the model's ``alignment``. Inside a task the core is cut into model patches (``patch`` pixels,
also a multiple of ``alignment``); each patch reads its own window
``[core - halo, core + halo)`` grown to a size the model accepts. Every window therefore starts
at ``-halo`` modulo ``alignment``, exactly like the whole-image reference, which is why the
stitched output equals it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import ConfigError

__all__ = ["InputSizes", "Patch", "TileGrid", "TilePlan", "Window"]


@dataclass(frozen=True)
class Window:
    """A rectangle in pixels: ``row_off``/``col_off``, ``height``/``width``; may leave the image."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row_off + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col_off + self.width

    def to_slices(self) -> tuple[slice, slice]:
        """Return ``(rows, cols)`` slices."""
        return slice(self.row_off, self.row_stop), slice(self.col_off, self.col_stop)

    def union(self, other: Window) -> Window:
        """Return the bounding window of ``self`` and ``other``."""
        row_off = min(self.row_off, other.row_off)
        col_off = min(self.col_off, other.col_off)
        return Window(
            row_off,
            col_off,
            max(self.row_stop, other.row_stop) - row_off,
            max(self.col_stop, other.col_stop) - col_off,
        )


@dataclass(frozen=True)
class InputSizes:
    """The input sizes a model accepts: ``first``, ``first + step``, ``first + 2 step``...

    A "same" U-Net accepts multiples of its alignment (``first = step = alignment``); a
    "valid" one accepts an arithmetic series too, starting at its smallest input.
    """

    first: int
    step: int

    def at_least(self, size: int) -> int:
        """Return the smallest accepted input size ``>= size``."""
        if size <= self.first:
            return self.first
        return self.first + -(-(size - self.first) // self.step) * self.step


@dataclass(frozen=True)
class Patch:
    """One model call: the ``window`` it reads and the ``core`` it produces (image pixels)."""

    window: Window
    core: Window
    out_offset: int

    def output_slices(self) -> tuple[slice, slice]:
        """Slices of the model output that hold the core."""
        off = self.out_offset
        return slice(off, off + self.core.height), slice(off, off + self.core.width)


@dataclass(frozen=True)
class TilePlan:
    """Everything one task needs: its grid index, core, the box to read and its patches."""

    index: tuple[int, int]
    core: Window
    read: Window
    patches: tuple[Patch, ...]


@dataclass(frozen=True)
class TileGrid:
    """Core tiles over an image, with the halo and the model geometry.

    Parameters
    ----------
    height, width
        Image size in pixels.
    tile
        Core tile size (a multiple of ``alignment``).
    halo
        Context read on each side of a core.
    alignment
        The model's size/offset granularity (``2**depth``).
    sizes
        The input sizes the model accepts.
    padding
        ``"same"`` (output as large as the input: the core sits at ``halo``) or ``"valid"``
        (output shrinks by ``2 * halo``: the core sits at 0).

    Examples
    --------
    >>> grid = TileGrid(100, 130, 64, 16, 16, InputSizes(16, 16), "same")
    >>> grid.shape
    (2, 3)
    >>> grid.core(1, 2)
    Window(row_off=64, col_off=128, height=36, width=2)
    """

    height: int
    width: int
    tile: int
    halo: int
    alignment: int
    sizes: InputSizes
    padding: str = "same"

    def __post_init__(self) -> None:
        if self.tile <= 0 or self.tile % self.alignment:
            nearest = max(1, round(self.tile / self.alignment)) * self.alignment
            raise ConfigError(
                f"tile {self.tile} is not a positive multiple of the model's alignment "
                f"{self.alignment}; use e.g. --tile {nearest}"
            )
        if self.halo < 0 or self.halo > self.tile:
            raise ConfigError(
                f"halo {self.halo} is larger than the tile {self.tile}; use a larger --tile "
                f"(at least {self.halo}) or a smaller --halo"
            )
        if self.padding not in ("same", "valid"):
            raise ConfigError(f"padding {self.padding!r} is not 'same' or 'valid'")

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles as ``(rows, cols)``."""
        return -(-self.height // self.tile), -(-self.width // self.tile)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def indices(self) -> Iterator[tuple[int, int]]:
        """Yield every ``(row, col)`` tile index in row-major order."""
        rows, cols = self.shape
        for row in range(rows):
            for col in range(cols):
                yield row, col

    def core(self, row: int, col: int) -> Window:
        """Return the core window of tile ``(row, col)``, clipped to the image."""
        row_off, col_off = row * self.tile, col * self.tile
        return Window(
            row_off,
            col_off,
            min(self.tile, self.height - row_off),
            min(self.tile, self.width - col_off),
        )

    def window(self, core: Window) -> Window:
        """Return the window a model call needs to produce ``core`` exactly."""
        return Window(
            core.row_off - self.halo,
            core.col_off - self.halo,
            self.sizes.at_least(core.height + 2 * self.halo),
            self.sizes.at_least(core.width + 2 * self.halo),
        )

    def plan(self, row: int, col: int, patch: int | None = None) -> TilePlan:
        """Plan tile ``(row, col)``: its patches (``patch`` pixels each) and the box to read."""
        core = self.core(row, col)
        step = self.tile if patch is None else patch
        if step <= 0 or step % self.alignment:
            raise ConfigError(
                f"patch {step} is not a positive multiple of the model's alignment {self.alignment}"
            )
        out_offset = self.halo if self.padding == "same" else 0
        patches = []
        for r in range(core.row_off, core.row_stop, step):
            for c in range(core.col_off, core.col_stop, step):
                sub = Window(r, c, min(step, core.row_stop - r), min(step, core.col_stop - c))
                patches.append(Patch(self.window(sub), sub, out_offset))
        read = patches[0].window
        for item in patches[1:]:
            read = read.union(item.window)
        return TilePlan((row, col), core, read, tuple(patches))
