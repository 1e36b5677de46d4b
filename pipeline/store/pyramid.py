"""Slide labels as an OME-Zarr (NGFF 0.5) multiscale label image: ``labels_pyramid/``.

Level 0 is a copy of ``labels``; each next level keeps every second row and column
(nearest, so class ids are never blended), down to :data:`SMALLEST` pixels. Scales are
micrometres per axis (the stored level's ``mpp_xy`` times the pyramid downsample), so a
viewer (napari with ``napari-ome-zarr`` / ``ome-zarr``) places the labels over the slide.
Built block by block: memory stays at a few chunks whatever the slide size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.store.cf import slide_mpp_yx
from pipeline.store.layout import LABELS, class_names

__all__ = ["NGFF_VERSION", "PYRAMID", "SMALLEST", "build_labels_pyramid", "ngff_attrs"]

PYRAMID = "labels_pyramid"
NGFF_VERSION = "0.5"
#: Levels are added until the largest side is at most this many pixels.
SMALLEST = 256


def ngff_attrs(
    levels: int,
    mpp_yx: tuple[float, float],
    classes: Any,
    channels: int,
    name: str = "labels",
    colors: Any = None,
) -> dict[str, Any]:
    """Return the ``ome`` attributes of a label pyramid with ``levels`` levels.

    ``colors`` are the store's ``class_colors`` (the model card's, one per class name);
    classes without one get :func:`~pipeline.export.features.class_color`'s.

    Examples
    --------
    >>> ome = ngff_attrs(2, (0.5, 0.5), ["tumour"], 1)["ome"]
    >>> [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    [[0.5, 0.5], [1.0, 1.0]]
    """
    from pipeline.export.features import class_color
    from pipeline.store.layout import card_colors

    axes = [{"name": axis, "type": "space", "unit": "micrometer"} for axis in ("y", "x")]
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [mpp_yx[0] * 2**level, mpp_yx[1] * 2**level]}
            ],
        }
        for level in range(levels)
    ]
    names = class_names(classes, channels)
    card = card_colors(classes, colors, channels)
    return {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [{"name": name, "axes": axes, "datasets": datasets}],
            "image-label": {
                "colors": [
                    {"label-value": i, "rgba": [*class_color(i, card), 255]} for i in sorted(names)
                ],
                "properties": [{"label-value": i, "class": n} for i, n in sorted(names.items())],
            },
        }
    }


def _level_count(shape: tuple[int, int]) -> int:
    count, size = 1, max(shape)
    while size > SMALLEST:
        size = (size + 1) // 2
        count += 1
    return count


def build_labels_pyramid(path: str | Path) -> int:
    """Write ``labels_pyramid`` from the store's ``labels``; return the number of levels.

    The store must record ``mpp``; the pyramid replaces any earlier one.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    group: Any = zarr.open_group(str(path), mode="r+")
    attrs: dict[str, Any] = dict(group.attrs)
    source = group[LABELS]
    shape = (int(source.shape[0]), int(source.shape[1]))
    levels = _level_count(shape)
    channels = int(group["probabilities"].shape[0]) if "probabilities" in group else 1
    ome = ngff_attrs(
        levels, slide_mpp_yx(attrs), attrs.get("classes"), channels,
        colors=attrs.get("class_colors"),
    )  # fmt: skip
    pyramid = group.create_group(PYRAMID, overwrite=True, attributes=ome)
    chunk = int(source.chunks[0])
    previous: Any = source
    for level in range(levels):
        level_shape = shape if level == 0 else ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
        target = pyramid.create_array(
            str(level),
            shape=level_shape,
            chunks=(min(chunk, level_shape[0]), min(chunk, level_shape[1])),
            dtype="uint8",
            fill_value=0,
            compressors=[ZstdCodec(level=3)],
            dimension_names=("y", "x"),
        )
        step = 1 if level == 0 else 2
        for r0 in range(0, level_shape[0], chunk):
            r1 = min(r0 + chunk, level_shape[0])
            for c0 in range(0, level_shape[1], chunk):
                c1 = min(c0 + chunk, level_shape[1])
                block = np.asarray(previous[r0 * step : r1 * step, c0 * step : c1 * step])
                target[r0:r1, c0:c1] = block[::step, ::step]
        previous, shape = target, level_shape
    return levels
