"""Which blocks of a raster hold data, exactly: the validity a tile skip may trust.

Skipping a tile that holds one valid pixel silently drops a result, so the validity used for
skipping must never miss data. A mask decimated to ~1000 pixels a side samples one pixel in
``size / 1000``: on a 200000-pixel scene a 60 x 60 valid block falls between samples, and
GDAL's overviews (built by averaging or nearest sampling) can lose it too. So the validity
here is computed at the resolution of the file's own blocks:

- a block absent from a sparse GeoTIFF (offset 0: never written) holds only nodata, which
  GDAL's ``BLOCK_OFFSET_x_y`` metadata says without reading anything;
- every other block's full-resolution mask is read (a strip of blocks per call) and reduced
  with ``any`` over cells of :data:`CELL` pixels.

The cost is one pass over the mask of the blocks present -- far less than the inference it
saves, and nothing at all for the empty blocks of a sparse file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ReadError

__all__ = ["CELL", "block_validity", "present_blocks"]


def present_blocks(dataset: Any, bands: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Blocks written in the file, as a ``(block rows, block cols)`` grid.

    Only a GeoTIFF whose invalid pixels are marked by nodata alone can vouch for an absent
    block (GDAL reads it as nodata); for any other file every block counts as present.
    """
    from rasterio.enums import MaskFlags

    block_rows, block_cols = dataset.block_shapes[bands[0] - 1]
    grid = (-(-dataset.height // block_rows), -(-dataset.width // block_cols))
    present = np.ones(grid, dtype=bool)
    nodata_only = all(dataset.mask_flag_enums[b - 1] == [MaskFlags.nodata] for b in bands)
    if dataset.driver != "GTiff" or not nodata_only:
        return present
    for row in range(grid[0]):
        for col in range(grid[1]):
            present[row, col] = any(
                dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                not in (None, "", "0")
                for band in bands
            )
    return present


#: Side of the validity cells: finer than a 256-pixel block, so a tile next to data is not
#: computed for nothing, and still only 39 MB of mask for a 200000² scene.
CELL = 32


def _reason(exc: BaseException) -> str:
    from pipeline.read.geotiff import gdal_reason

    return gdal_reason(exc)


def block_validity(
    dataset: Any, bands: tuple[int, ...], name: str | None = None
) -> tuple[npt.NDArray[np.bool_], tuple[int, int]]:
    """Return ``(mask, (CELL, CELL))``: ``mask`` is True for cells holding a valid pixel.

    A cell counts as valid when any of its pixels is valid in GDAL's dataset mask (nodata,
    alpha band or internal mask) -- exact, never sampled. Reads follow the file's blocks (a
    strip of them per call, widened to whole cells); absent blocks are not read.

    Raises
    ------
    ReadError
        A block that cannot be decoded: one line naming the file (``name``, without
        credentials), the window and GDAL's message.
    """
    from rasterio.windows import Window

    block_rows, block_cols = dataset.block_shapes[bands[0] - 1]
    present = present_blocks(dataset, bands)
    group = max(1, 256 // block_rows)  # block rows per read: strips of 1-row blocks too
    shape = (-(-dataset.height // CELL), -(-dataset.width // CELL))
    valid = np.zeros(shape, dtype=bool)
    for first in range(0, present.shape[0], group):
        cols = np.flatnonzero(present[first : first + group].any(axis=0))
        if not len(cols):
            continue
        r0 = first * block_rows // CELL * CELL
        r1 = min((first + group) * block_rows, dataset.height)
        # Runs of consecutive columns with present blocks: one read per run.
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
            c0 = int(run[0]) * block_cols // CELL * CELL
            c1 = min((int(run[-1]) + 1) * block_cols, dataset.width)
            reason: str | None = None
            try:
                mask = dataset.dataset_mask(window=Window(c0, r0, c1 - c0, r1 - r0)) > 0
            except Exception as exc:
                reason = _reason(exc)
            if reason is not None:  # raised outside the handler: see read_window
                raise ReadError(
                    f"{name or dataset.name}: cannot read window rows {r0}:{r1}, cols {c0}:{c1} "
                    f"to find its valid pixels ({reason})"
                )
            mask = np.pad(mask, ((0, -(r1 - r0) % CELL), (0, -(c1 - c0) % CELL)))
            cells = mask.reshape(mask.shape[0] // CELL, CELL, mask.shape[1] // CELL, CELL)
            row, col = r0 // CELL, c0 // CELL
            valid[row : row + cells.shape[0], col : col + cells.shape[2]] |= cells.any(axis=(1, 3))
    return valid, (CELL, CELL)
