"""The tissue mask a slide run used, as QuPath annotations (level-0 pixel coordinates).

``predict`` records the mask that decided which tiles ran (``--tissue``) in the store's
``tissue`` array, at low resolution (``attrs["tissue"]["scale"]`` store pixels per mask
pixel). :func:`export_tissue` traces it (pixel edges, exactly) and maps it through the store's
georeference to level-0 pixels, so QuPath draws it over the slide where the run looked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from pipeline.errors import InputError
from pipeline.export.atomic import check_output, commit, temporary_path

__all__ = ["TISSUE_COLOR", "export_tissue"]

#: QuPath's colour for the "Tissue" annotation (packed RGB as QuPath writes it: green).
TISSUE_COLOR = [50, 180, 50]


def export_tissue(store: str | Path, out: str | Path, *, overwrite: bool = False) -> int:
    """Write the store's tissue mask as QuPath GeoJSON annotations; return how many.

    Raises
    ------
    InputError
        The store records no tissue mask (a GeoTIFF run, or ``--tissue off``).
    """
    from rasterio.features import shapes

    from pipeline.read.georef import Georef
    from pipeline.store import TISSUE, read_attrs, read_mask

    path = Path(store)
    target = check_output(out, overwrite=overwrite)
    attrs = read_attrs(path)
    record = attrs.get("tissue") or {}
    mask = read_mask(path, TISSUE) if record.get("scale") else None
    if mask is None:
        if record.get("reason"):  # a slide run that used no mask, and said why
            raise InputError(
                f"{path} records no tissue mask: the run used none ({record['reason']}); "
                "predict again with --tissue FILE to give one"
            )
        raise InputError(
            f"{path} records no tissue mask (a GeoTIFF run, or a slide run with --tissue off); "
            "predict the slide with --tissue auto|brightfield|fluorescence|FILE first"
        )
    rows, cols = (float(v) for v in record["scale"])
    level0 = Georef.from_attrs(attrs).transform @ Affine.scale(cols, rows)
    features: list[dict[str, Any]] = []
    kept = mask.astype(np.uint8)
    for geometry, _ in shapes(kept, mask=kept > 0, connectivity=4, transform=level0):
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tissue", "color": TISSUE_COLOR},
                    "isLocked": True,
                    "tissue": {k: record.get(k) for k in ("mode", "polarity", "reason", "file")},
                },
            }
        )
    tmp = temporary_path(target)
    try:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        commit(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return len(features)
