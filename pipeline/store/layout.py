"""What a gigaseg store holds: array names, ledger states and status values (no I/O).

Layout (one Zarr v3 group per input)::

    scene.zarr/  attrs: source, model, tile, halo, precision, classes, crs + transform | mpp,
                        run_id, status, software
      probabilities  (class, y, x) chunks (K, tile, tile)  uint8 p*255 | float16 | float32
      labels         (y, x)        chunks (tile, tile)     uint8 class ids, 0 = background
      tiles          (row, col)    chunks (1, 1)           0 pending, 1 done, 2 skipped
      tissue         (y, x)        one chunk               slides: the low-resolution tissue
                                                           mask used (1 = tissue); attrs:
                                                           scale (store px per mask px), how

A chunk never spans two tiles, so tasks write without locks and rewriting a tile is
idempotent. The ledger is read by value: zarr does not write chunks equal to the fill value,
so a missing chunk says nothing about whether a tile was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "COMPLETE",
    "DONE",
    "LABELS",
    "LEDGER_STATES",
    "PENDING",
    "PROBABILITIES",
    "RUNNING",
    "SKIPPED",
    "TILES",
    "TISSUE",
    "card_colors",
    "class_channel",
    "class_names",
]

#: Array names inside the group.
PROBABILITIES, LABELS, TILES = "probabilities", "labels", "tiles"
#: The tissue mask a slide run used (low resolution, written once by the client).
TISSUE = "tissue"

#: Ledger states of one tile in ``tiles``.
PENDING, DONE, SKIPPED = 0, 1, 2
LEDGER_STATES = {"pending": PENDING, "done": DONE, "skipped": SKIPPED}

#: ``status`` attribute values: ``complete`` only once every tile is done or skipped.
RUNNING, COMPLETE = "running", "complete"

_BACKGROUND_NAMES = {"background", "bg", "none", "_background_", "void"}


def class_names(classes: Sequence[Any] | None, channels: int) -> dict[int, str]:
    """Map the label ids a store holds to class names (id 0, background, is left out).

    A sigmoid model (one channel) writes id 1 for its class; a softmax model writes the
    argmax, so id ``i`` is channel ``i`` when there is one name per channel. A first name
    that says "background" is id 0 either way.

    Examples
    --------
    >>> class_names(["building"], 1)
    {1: 'building'}
    >>> class_names(["background", "building", "road"], 3)
    {1: 'building', 2: 'road'}
    """
    if not classes:
        return {}
    names = [str(c) for c in classes]
    if names[0].lower() in _BACKGROUND_NAMES or (channels > 1 and len(names) == channels):
        return {i: n for i, n in enumerate(names) if i > 0}
    return {i + 1: n for i, n in enumerate(names)}


def class_channel(class_id: int, channels: int) -> int:
    """Return the probability channel of a label id (the inverse of :func:`class_names`).

    Examples
    --------
    >>> class_channel(1, 1), class_channel(2, 3), class_channel(2, 2)
    (0, 2, 1)
    """
    if channels <= 1:
        return 0
    return class_id if class_id < channels else class_id - 1


def card_colors(
    classes: Sequence[Any] | None, colors: Sequence[Any] | None, channels: int
) -> dict[int, tuple[int, int, int]]:
    """Map label ids to the model card's colours (a store's ``class_colors``), where given.

    ``colors`` is one entry per class name (``None`` or ``[r, g, b]``), so the ids follow
    :func:`class_names`; a background colour (one more colour than ids) is left out.

    Examples
    --------
    >>> card_colors(["background", "nucleus"], [[0, 0, 0], [220, 50, 47]], 2)
    {1: (220, 50, 47)}
    >>> card_colors(["building"], None, 1)
    {}
    """
    ids = list(class_names(classes, channels))
    given = list(colors or [])
    offset = len(given) - len(ids)  # 1 when channel 0 (background) has no class id
    if offset < 0:
        return {}
    return {
        cid: (int(c[0]), int(c[1]), int(c[2]))
        for cid, c in zip(ids, given[offset:], strict=False)
        if c is not None and len(c) == 3
    }
